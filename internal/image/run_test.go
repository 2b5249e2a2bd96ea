package image

import (
	"archive/tar"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
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

// TestProgramsRunInTheImage runs the image as a container runtime would at
// its simplest: chrooted into its filesystem, as its user, in its working
// directory, with its environment and entrypoint. The program (a probe in
// the manager's place) must find the CA roots, its user name and a writable
// /tmp: what a static Go program needs from the base.
func TestProgramsRunInTheImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chroot and to set the files' owners; the other tests check the image without running it")
	}
	res := buildStubImage(t, map[string]string{"manager": stub(t, "probe"), "chatserver": stub(t, "chatserver")})
	cf, err := res.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	unpackRootfs(t, flatten(t, res.Image), root)
	uid, gid, _ := strings.Cut(cf.Config.User, ":")
	u, err1 := strconv.Atoi(uid)
	g, err2 := strconv.Atoi(gid)
	if err1 != nil || err2 != nil {
		t.Fatalf("user %q is not numeric uid:gid", cf.Config.User)
	}
	argv := append(append([]string{}, cf.Config.Entrypoint...), "--probe-arg")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Path = argv[0] // resolved inside the chroot, not on the host
	cmd.Env = cf.Config.Env
	cmd.Dir = cf.Config.WorkingDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uint32(u), Gid: uint32(g)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v in the image: %v\n%s", argv, err, out)
	}
	got := strings.TrimSpace(string(out))
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
