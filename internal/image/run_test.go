package image

import (
	"archive/tar"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// unpackRootfs writes an image's flattened filesystem under dir with its
// modes and owners (which needs root).
func unpackRootfs(t *testing.T, fs map[string]entry, dir string) {
	t.Helper()
	paths := make([]string, 0, len(fs))
	for p := range fs {
		paths = append(paths, p)
	}
	sort.Strings(paths) // parents first
	var dirs []string
	for _, p := range paths {
		e, host := fs[p], filepath.Join(dir, p)
		mode := os.FileMode(e.hdr.Mode & 0o777)
		switch e.hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(host, 0o755); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, p)
		case tar.TypeReg:
			if err := os.WriteFile(host, e.data, mode); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(e.hdr.Linkname, host); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			t.Fatalf("%s: unexpected type %q", p, e.hdr.Typeflag)
		}
		if err := os.Lchown(host, e.hdr.Uid, e.hdr.Gid); err != nil {
			t.Fatal(err)
		}
	}
	// Modes of directories last, so a 0700 one does not stop the writes below it.
	for _, p := range dirs {
		e := fs[p]
		mode := os.FileMode(e.hdr.Mode & 0o777)
		if e.hdr.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		if err := os.Chmod(filepath.Join(dir, p), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// container is an image unpacked for running its programs chrooted.
type container struct {
	root     string
	cfg      v1.Config
	uid, gid uint32
}

// unpackImage needs root: to chroot, and to give the files their owners.
func unpackImage(t *testing.T, img v1.Image) *container {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to chroot and to set the files' owners; the other tests check the image without running it")
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := &container{root: t.TempDir(), cfg: cf.Config}
	if err := os.Chmod(c.root, 0o755); err != nil {
		t.Fatal(err)
	}
	unpackRootfs(t, flatten(t, img), c.root)
	uid, gid, _ := strings.Cut(cf.Config.User, ":")
	u, err1 := strconv.ParseUint(uid, 10, 32)
	g, err2 := strconv.ParseUint(gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("user %q is not numeric uid:gid", cf.Config.User)
	}
	c.uid, c.gid = uint32(u), uint32(g)
	return c
}

// run starts argv (nil: the entrypoint) with args as a container runtime
// would at its simplest: chrooted into the image's filesystem, as its user,
// in its working directory, with its environment.
func (c *container) run(argv []string, args ...string) (string, error) {
	if argv == nil {
		argv = c.cfg.Entrypoint
	}
	argv = append(append([]string{}, argv...), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Path = argv[0] // resolved inside the chroot, not on the host
	cmd.Env = c.cfg.Env
	cmd.Dir = c.cfg.WorkingDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: c.root, Credential: &syscall.Credential{Uid: c.uid, Gid: c.gid}}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestProgramsRunInTheImage runs a probe as the image's entrypoint (in the
// manager's place): it must find the CA roots, its user name and a writable
// /tmp, what a static Go program needs from the base.
func TestProgramsRunInTheImage(t *testing.T) {
	res := buildStubImage(t, map[string]string{"manager": stub(t, "probe"), "chatserver": stub(t, "chatserver")})
	c := unpackImage(t, res.Image)
	got, err := c.run(nil, "--probe-arg")
	if err != nil {
		t.Fatalf("the entrypoint in the image: %v\n%s", err, got)
	}
	t.Logf("in the image: %s", got)
	for _, want := range []string{"user=nonroot home=/home/nonroot wd=/home/nonroot", `args=["--probe-arg"]`, "tmp=<nil>"} {
		if !strings.Contains(got, want) {
			t.Errorf("probe says %q, want %q in it", got, want)
		}
	}
	var roots int
	if i := strings.Index(got, "roots="); i >= 0 {
		roots, _ = strconv.Atoi(strings.Fields(got[i+len("roots="):])[0])
	}
	if roots < 100 {
		t.Errorf("probe found %d CA roots in the image, want the ca-certificates bundle (over 100): %s", roots, got)
	}
}

// TestParleysImage builds the image from the real programs (`make test` runs
// `make build` and sets PARLEY_BIN), compares it with the Dockerfile and
// runs both programs in it.
func TestParleysImage(t *testing.T) {
	bin := os.Getenv("PARLEY_BIN")
	if bin == "" {
		t.Skip("PARLEY_BIN is not set: `make test` sets it to bin/ after `make build`; the stub images are checked without it")
	}
	binaries := map[string]string{}
	programs := map[string][]byte{}
	for _, p := range Parley.Programs {
		binaries[p.Name] = filepath.Join(bin, p.Name)
		programs[p.Name] = readAll(t, binaries[p.Name])
	}
	res, err := Build(Parley, Options{Binaries: binaries, Version: testVersion, Commit: testCommit, Created: testCreated})
	if err != nil {
		t.Fatal(err)
	}
	d, problems := describe(readDockerfile(t), map[string]string{"VERSION": testVersion, "COMMIT": testCommit})
	if d != nil {
		problems = append(problems, d.compare(res.Image, flatten(t, res.Image), programs, runtime.GOARCH)...)
	}
	for _, p := range problems {
		t.Error(p)
	}
	c := unpackImage(t, res.Image)
	if out, err := c.run([]string{"/chatserver"}, "--version"); err != nil || !strings.HasPrefix(out, "chatserver ") {
		t.Errorf("/chatserver --version in the image: %q (%v)", out, err)
	}
	// The Go flag package prints the usage for --help; the exit code does not matter here.
	if out, _ := c.run(nil, "--help"); !strings.Contains(out, "Usage of /manager") {
		t.Errorf("/manager --help in the image: %q", out)
	}
}
