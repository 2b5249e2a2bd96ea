// Package version holds the release version and commit of the Parley binaries,
// stamped at build time by `make build` and the Dockerfile:
//
//	-ldflags "-X github.com/parley-chat/parley/chatserver/version.Version=v1.2.3 -X github.com/parley-chat/parley/chatserver/version.Commit=abc1234"
//
// It lives in the chat server module (which imports nothing from Kubernetes)
// so both the chat server and the operator can report it.
package version

// Version is the release, e.g. "v0.1.0"; "dev" for an unstamped build.
var Version = "dev"

// Commit is the short git commit the binary was built from.
var Commit = "unknown"

// String is "<version> (<commit>)", for logs and --version output.
func String() string { return Version + " (" + Commit + ")" }
