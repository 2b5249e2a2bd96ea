package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The node agent starts every container through a re-execution of its own
// binary (the "container init"): the child is cloned into fresh mount and UTS
// namespaces, and before it execs the container's program it assembles the
// container's root filesystem with bind mounts, chroots into it, and drops to
// the container's user. Go cannot run code between fork and exec, so this is
// the usual re-exec pattern; the init runs from a package init function, so
// any binary that links this package (the test binaries, cmd/localcluster)
// can serve as the init.
const (
	initEnv = "PARLEY_NODEAGENT_CONTAINER_INIT"
	// exitStartError is the exit code of a container whose program could not
	// be started; the reason is written to the status pipe.
	exitStartError = 128
)

// initSpec is everything the container init needs, sent as JSON over fd 3.
type initSpec struct {
	Rootfs       string      `json:"rootfs"`
	Hostname     string      `json:"hostname"`
	Mounts       []mountSpec `json:"mounts"`
	ReadOnlyRoot bool        `json:"readOnlyRoot"`
	Argv         []string    `json:"argv"`
	Env          []string    `json:"env"`
	Dir          string      `json:"dir"`
	UID          uint32      `json:"uid"`
	GID          uint32      `json:"gid"`
	Groups       []uint32    `json:"groups"`
	NoNewPrivs   bool        `json:"noNewPrivs"`
	ParentPID    int         `json:"parentPID"`
}

// mountSpec bind-mounts Source (a host path) at Target (a path inside the container).
type mountSpec struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly"`
}

func init() {
	if os.Getenv(initEnv) != "1" {
		return
	}
	// Namespaces and credentials are per thread until exec: stay on this one.
	runtime.LockOSThread()
	// The status pipe must close when the program is exec'd: that is the success signal.
	unix.CloseOnExec(4)
	status := os.NewFile(4, "status")
	err := containerInit()
	// Only reached on failure: report through the status pipe, then exit.
	if status != nil {
		_, _ = io.WriteString(status, err.Error())
	}
	fmt.Fprintln(os.Stderr, "node agent: cannot start container:", err)
	os.Exit(exitStartError)
}

func containerInit() error {
	specFile := os.NewFile(3, "spec")
	if specFile == nil {
		return errors.New("no spec on fd 3")
	}
	var spec initSpec
	if err := json.NewDecoder(specFile).Decode(&spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	_ = specFile.Close()
	// Die with the agent: a crashed test must not leave servers behind.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent death signal: %w", err)
	}
	if os.Getppid() != spec.ParentPID {
		return errors.New("node agent exited before the container started")
	}
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := spec.Rootfs
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind root filesystem: %w", err)
	}
	// Parents before children, so a volume mounted inside another lands on top of it.
	mounts := append([]mountSpec(nil), spec.Mounts...)
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(filepath.Clean(mounts[i].Target), "/") < strings.Count(filepath.Clean(mounts[j].Target), "/")
	})
	for _, m := range mounts {
		target, err := securePath(root, m.Target)
		if err != nil {
			return err
		}
		if err := makeMountPoint(m.Source, target); err != nil {
			return fmt.Errorf("mount point %s: %w", m.Target, err)
		}
		if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.Target, err)
		}
	}
	proc := filepath.Join(root, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	// Read-only remounts last: mount points inside them had to be created first.
	for _, m := range mounts {
		if !m.ReadOnly {
			continue
		}
		target, _ := securePath(root, m.Target)
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", m.Target, err)
		}
	}
	if spec.ReadOnlyRoot {
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount root filesystem read-only: %w", err)
		}
	}
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("working directory %s: %w", dir, err)
	}
	path, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		return err
	}
	groups := make([]int, len(spec.Groups))
	for i, g := range spec.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	// Raw syscalls: this thread is about to exec, and the other threads of
	// this short-lived process are irrelevant once it does.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(spec.GID), uintptr(spec.GID), uintptr(spec.GID)); e != 0 {
		return fmt.Errorf("setgid %d: %w", spec.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(spec.UID), uintptr(spec.UID), uintptr(spec.UID)); e != 0 {
		return fmt.Errorf("setuid %d: %w", spec.UID, e)
	}
	// Changing credentials clears the parent death signal: set it again.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent death signal: %w", err)
	}
	if os.Getppid() != spec.ParentPID {
		return errors.New("node agent exited before the container started")
	}
	if spec.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	err = syscall.Exec(path, spec.Argv, spec.Env)
	return fmt.Errorf("exec %s: %w", spec.Argv[0], err)
}

// securePath joins a container path onto the root; ".." cannot climb out.
func securePath(root, p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("mount path %q must be absolute", p)
	}
	return filepath.Join(root, filepath.Clean(p)), nil
}

// makeMountPoint creates an empty file or directory at target, matching source.
func makeMountPoint(source, target string) error {
	st, err := os.Stat(source)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// lookPath resolves the program the way a container runtime does: an
// absolute or relative path is used as is, a bare name is searched in the
// container's PATH.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("exec: %q: %w", name, err)
		}
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: %w", name, exec.ErrNotFound)
}
