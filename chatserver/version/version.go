// Package version holds the build's version and commit, stamped by `make build`
// and the Dockerfile with -ldflags -X; both binaries report them at start and in
// their metrics, so an operator can tell which build a pod runs.
package version

// Version and Commit are set at link time.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is "version (commit)".
func String() string { return Version + " (" + Commit + ")" }
