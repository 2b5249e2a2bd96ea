package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sandbox is what a pod's containers share: a directory, a network namespace
// and the files the runtime provides (/etc/hosts, /etc/resolv.conf).
type sandbox struct {
	dir     string
	ip      netip.Addr // the pod IP (10.x) written in its status
	netns   *netns
	etcDir  string
	volumes *volumeWriter
}

func newSandbox(dir, hostname string, ip netip.Addr) (*sandbox, error) {
	ns, err := newNetns()
	if err != nil {
		return nil, err
	}
	s := &sandbox{dir: dir, ip: ip, netns: ns, etcDir: filepath.Join(dir, "etc")}
	if err := os.MkdirAll(s.etcDir, 0o755); err != nil {
		ns.Close()
		return nil, err
	}
	files := map[string]string{
		"hosts":       fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", ip, hostname),
		"resolv.conf": "# The local cluster has no DNS: names other than localhost do not resolve.\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
		"hostname":    hostname + "\n",
		"passwd":      "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"group":       "root:x:0:\nnonroot:x:65532:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.etcDir, name), []byte(content), 0o644); err != nil {
			ns.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close releases the network namespace and removes the pod's files.
func (s *sandbox) Close() {
	s.netns.Close()
	_ = os.RemoveAll(s.dir)
}

// runSpec is one container start.
type runSpec struct {
	name     string
	hostname string
	image    Image
	argv     []string
	env      []string
	dir      string
	mounts   []mountSpec
	uid, gid uint32
	groups   []uint32
	roRoot   bool
	noNewPrv bool
	log      *os.File
}

// process is a running container.
type process struct {
	pid       int
	startedAt time.Time
	done      chan struct{}
	// set when done is closed
	exitCode   int32
	signal     string
	finishedAt time.Time
}

// Signal sends sig to the container's process group.
func (p *process) Signal(sig syscall.Signal) error {
	return unix.Kill(-p.pid, sig)
}

// start runs the container: the container init (this binary, re-executed)
// is forked from a thread inside the pod's network namespace, so the
// container lives there.
func (s *sandbox) start(r runSpec) (*process, error) {
	rootfs := filepath.Join(s.dir, "containers", r.name, "rootfs")
	_ = os.RemoveAll(rootfs)
	for _, d := range []string{"etc", "tmp", "dev", "home/nonroot", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		return nil, err
	}
	if err := os.Chown(filepath.Join(rootfs, "home/nonroot"), 65532, 65532); err != nil {
		return nil, err
	}
	for _, f := range []string{"passwd", "group"} {
		data, err := os.ReadFile(filepath.Join(s.etcDir, f))
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(rootfs, "etc", f), data, 0o644); err != nil {
			return nil, err
		}
	}
	var mounts []mountSpec
	for target, source := range r.image.Files {
		mounts = append(mounts, mountSpec{Source: source, Target: target, ReadOnly: true})
	}
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		mounts = append(mounts, mountSpec{Source: filepath.Join(s.etcDir, f), Target: "/etc/" + f, ReadOnly: true})
	}
	for _, d := range []string{"null", "zero", "random", "urandom"} {
		mounts = append(mounts, mountSpec{Source: "/dev/" + d, Target: "/dev/" + d})
	}
	mounts = append(mounts, r.mounts...)

	spec := initSpec{
		Rootfs: rootfs, Hostname: r.hostname, Mounts: mounts, ReadOnlyRoot: r.roRoot,
		Argv: r.argv, Env: r.env, Dir: r.dir, UID: r.uid, GID: r.gid, Groups: r.groups,
		NoNewPrivs: r.noNewPrv, ParentPID: os.Getpid(),
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		specR.Close()
		specW.Close()
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"parley-container-init"},
		Env:        []string{initEnv + "=1"},
		Stdin:      nil,
		Stdout:     r.log,
		Stderr:     r.log,
		ExtraFiles: []*os.File{specR, statusW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWUTS,
			Pdeathsig:  syscall.SIGKILL,
			Setpgid:    true,
		},
	}
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Locked and never unlocked: the thread enters the pod's network
		// namespace, forks the container, and lives exactly as long as the
		// container so that the parent-death signal (which Linux ties to the
		// forking thread) fires only if the whole agent dies.
		runtime.LockOSThread()
		s.netns.fdMu.RLock()
		var err error
		if s.netns.fdClosed {
			err = errors.New("pod network namespace closed")
		} else {
			err = unix.Setns(int(s.netns.fd.Fd()), unix.CLONE_NEWNET)
		}
		s.netns.fdMu.RUnlock()
		if err != nil {
			started <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		p.startedAt = time.Now()
		started <- nil
		err = cmd.Wait()
		p.finishedAt = time.Now()
		p.exitCode, p.signal = exitStatus(cmd.ProcessState, err)
		close(p.done)
	}()
	err = <-started
	specR.Close()
	statusW.Close()
	if err != nil {
		specW.Close()
		statusR.Close()
		return nil, fmt.Errorf("start container init: %w", err)
	}
	encErr := json.NewEncoder(specW).Encode(spec)
	specW.Close()
	// The status pipe closes on a successful exec (close-on-exec) or carries
	// the reason the container could not start.
	msg, _ := io.ReadAll(statusR)
	statusR.Close()
	if len(msg) > 0 || encErr != nil {
		<-p.done
		if encErr != nil {
			return nil, fmt.Errorf("send container spec: %w", encErr)
		}
		return nil, startError{string(msg)}
	}
	return p, nil
}

// startError is a container whose program could not be started (Kubernetes: StartError).
type startError struct{ msg string }

func (e startError) Error() string { return e.msg }

func exitStatus(ps *os.ProcessState, err error) (int32, string) {
	if ps == nil {
		return 128, err.Error()
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal()), ws.Signal().String()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) || err == nil {
		return int32(ps.ExitCode()), ""
	}
	return int32(ps.ExitCode()), ""
}
