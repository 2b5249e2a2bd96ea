package install

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// The values the image build stamps in tests (the Dockerfile's VERSION and COMMIT build args).
const (
	stampVersion = "v0.0.0-install-test"
	stampCommit  = "c0ffee1"
)

var (
	imageBuildOnce sync.Once
	imageBinaries  map[string]string // program name → path
	imageBuildDir  string            // removed by TestMain
	imageBuildErr  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imageBuildDir != "" {
		os.RemoveAll(imageBuildDir)
	}
	os.Exit(code)
}

// dockerfileBinaries builds the two programs with exactly the Dockerfile's build
// commands (directory, package, CGO_ENABLED=0 and -ldflags with VERSION and
// COMMIT substituted), as the image would hold them. Built once per test run.
func dockerfileBinaries(t testing.TB) map[string]string {
	t.Helper()
	imageBuildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "parley-image-")
		if err != nil {
			imageBuildErr = err.Error()
			return
		}
		imageBuildDir = dir
		imageBinaries = map[string]string{}
		for _, b := range dockerfileBuilds(t) {
			name := filepath.Base(b.pkg)
			if _, err := os.Stat(filepath.Join(root, b.dir, b.pkg)); err != nil {
				imageBuildErr = b.dir + "/" + b.pkg + " does not exist: the image would have no " + name
				return
			}
			ld := strings.NewReplacer("${VERSION}", stampVersion, "${COMMIT}", stampCommit).Replace(b.ldflags)
			out := filepath.Join(dir, name)
			cmd := exec.Command("go", "build", "-ldflags", ld, "-o", out, b.pkg)
			cmd.Dir = filepath.Join(root, b.dir)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if msg, err := cmd.CombinedOutput(); err != nil {
				imageBuildErr = "go build " + b.pkg + ": " + err.Error() + "\n" + string(msg)
				return
			}
			imageBinaries[name] = out
		}
	})
	if imageBuildErr != "" {
		t.Fatal(imageBuildErr)
	}
	return imageBinaries
}

// TestImageBinariesAreStaticAndStamped checks what the Dockerfile's build
// produces: static executables (the runtime image has no libc) that report
// the version and commit they were built for.
func TestImageBinariesAreStaticAndStamped(t *testing.T) {
	bins := dockerfileBinaries(t)
	for _, name := range []string{"manager", "chatserver"} {
		path, ok := bins[name]
		if !ok {
			t.Errorf("the Dockerfile builds no %s", name)
			continue
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%s): it cannot run on distroless static", name, p.Type)
			}
		}
		f.Close()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{stampVersion, stampCommit} {
			if !bytes.Contains(data, []byte(s)) {
				t.Errorf("%s does not carry the stamped %q: -ldflags -X missed its variable", name, s)
			}
		}
	}
	if path, ok := bins["chatserver"]; ok {
		out, err := exec.Command(path, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), stampVersion+" ("+stampCommit+")") {
			t.Errorf("chatserver --version = %q (%v), want %s (%s)", out, err, stampVersion, stampCommit)
		}
	}
}

var (
	managerFlagsOnce sync.Once
	managerFlagSet   map[string]bool
	managerFlagsErr  string
)

// managerFlags reads the flags the image's manager lists in --help, so the
// chart and the kustomize bundle are checked against the real binary.
func managerFlags(t testing.TB) map[string]bool {
	t.Helper()
	bin, ok := dockerfileBinaries(t)["manager"]
	if !ok {
		t.Fatal("the Dockerfile builds no manager")
	}
	managerFlagsOnce.Do(func() {
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
