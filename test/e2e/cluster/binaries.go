package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Binaries are the Parley programs a local cluster runs, by name.
var Binaries = []string{"chatserver", "manager"}

// BuildBinaries builds Parley's programs into dir with `go build` (the Go
// build cache makes repeated builds cheap): the chat server module's
// commands and, when it exists, the operator (cmd/manager).
func BuildBinaries(repoRoot, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	build := func(moduleDir, pkg, out string) error {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = moduleDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		return nil
	}
	if err := build(filepath.Join(repoRoot, "chatserver"), "./cmd/chatserver", "chatserver"); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "cmd", "manager")); err == nil {
		if err := build(repoRoot, "./cmd/manager", "manager"); err != nil {
			return err
		}
	}
	return nil
}

// BinDir returns a directory with fresh Parley binaries: PARLEY_BIN when set
// (`make test` builds into bin/ first), else a build into tmp.
func BinDir(repoRoot, tmp string) (string, error) {
	if dir := os.Getenv("PARLEY_BIN"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "chatserver")); err == nil {
			return dir, nil
		}
	}
	return tmp, BuildBinaries(repoRoot, tmp)
}
