package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var (
	managerFlagsOnce sync.Once
	managerFlagSet   map[string]bool
	managerFlagsErr  string
)

// managerFlags builds cmd/manager and reads the flags its --help lists, so the
// chart and the kustomize bundle are checked against the real binary.
func managerFlags(t testing.TB) map[string]bool {
	t.Helper()
	managerFlagsOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(root, "cmd", "manager")); err != nil {
			managerFlagsErr = "cmd/manager does not exist yet: the install paths pass flags to a binary that is not there"
			return
		}
		dir, err := os.MkdirTemp("", "parley-manager-")
		if err != nil {
			managerFlagsErr = err.Error()
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "manager")
		build := exec.Command("go", "build", "-o", bin, "./cmd/manager")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			managerFlagsErr = "go build ./cmd/manager: " + err.Error() + "\n" + string(out)
			return
		}
		// --help exits non-zero with the Go flag package; the usage text is what counts.
		out, _ := exec.Command(bin, "--help").CombinedOutput()
		managerFlagSet = map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^\s+--?([a-z0-9][a-z0-9.-]*)`).FindAllStringSubmatch(string(out), -1) {
			managerFlagSet[m[1]] = true
		}
		if len(managerFlagSet) == 0 {
			managerFlagsErr = "manager --help listed no flags:\n" + string(out)
		}
	})
	if managerFlagsErr != "" {
		t.Fatal(managerFlagsErr)
	}
	return managerFlagSet
}

// checkFlagsExist fails for every --name=value argument the manager does not define.
func checkFlagsExist(t testing.TB, args []string) {
	t.Helper()
	flags := managerFlags(t)
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !flags[name] {
			t.Errorf("argument %q: cmd/manager has no flag --%s", a, name)
		}
	}
}
