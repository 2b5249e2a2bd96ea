package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLdflagsStampTheVariables builds a tiny program the way the Makefile and
// the Dockerfile do and checks the -X flags reach these variables.
func TestLdflagsStampTheVariables(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	main := filepath.Join(dir, "main.go")
	src := "package main\n\nimport (\n\t\"fmt\"\n\n\t\"github.com/parley-chat/parley/chatserver/version\"\n)\n\nfunc main() { fmt.Print(version.String()) }\n"
	if err := os.WriteFile(main, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// Build inside this module so the import resolves.
	pkgDir, err := os.MkdirTemp(".", "stamp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pkgDir) })
	if err := os.Rename(main, filepath.Join(pkgDir, "main.go")); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "stamp")
	ld := "-X github.com/parley-chat/parley/chatserver/version.Version=v9.8.7 -X github.com/parley-chat/parley/chatserver/version.Commit=abc1234"
	cmd := exec.Command("go", "build", "-ldflags", ld, "-o", bin, "./"+filepath.Base(pkgDir))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "v9.8.7 (abc1234)" {
		t.Errorf("stamped binary reports %q, want v9.8.7 (abc1234)", got)
	}
}

func TestUnstampedDefaults(t *testing.T) {
	if Version != "dev" || Commit != "unknown" || String() != "dev (unknown)" {
		t.Errorf("unstamped: %q %q %q", Version, Commit, String())
	}
}
