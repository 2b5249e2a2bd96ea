package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// component is one process of the cluster (etcd, kube-apiserver, ...,
// containerd, kubelet) run in the node's network namespace.
type component struct {
	name string
	cmd  *exec.Cmd
	done <-chan struct{}
	log  string
}

// startComponent starts argv in the node, its output in logs/<name>.log.
// The process gets SIGKILL if this one dies (StartTied); what it leaves
// behind is undone by the next Start (leftovers.go).
func (c *Cluster) startComponent(name string, argv ...string) (*component, error) {
	logPath := filepath.Join(c.StateDir, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	full := inNode(argv...)
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), c.extraEnv[name]...)
	// Its own process group: a terminal's Ctrl-C reaches the demo, which
	// then stops the components in order instead of all at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	done, err := StartTied(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	comp := &component{name: name, cmd: cmd, done: done, log: logPath}
	c.components = append(c.components, comp)
	return comp, nil
}

// exited says whether the component has stopped.
func (p *component) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and, after grace, SIGKILL; it returns when the process is gone.
func (p *component) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	}
}

// StartTied starts cmd so that it gets SIGKILL if this process dies. Linux
// delivers the parent-death signal when the thread that forked the child
// exits, and the Go runtime may discard a thread (one that locked itself
// and exited), so the fork happens on a thread locked for the child's life.
// The returned channel closes when the child has exited.
func StartTied(cmd *exec.Cmd) (<-chan struct{}, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := cmd.Start(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		_ = cmd.Wait()
		close(done)
	}()
	return done, <-errc
}
