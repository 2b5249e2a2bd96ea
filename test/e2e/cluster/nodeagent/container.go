package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const (
	backoffInitial = time.Second
	backoffMax     = time.Minute
	// backoffReset: a container that ran this long starts its backoff afresh.
	backoffReset = 10 * time.Minute
)

// ctr runs one container: start, probes, restarts with back-off, stop.
// Its status is guarded by the pod worker's mutex.
type ctr struct {
	w     *podWorker
	spec  *corev1.Container
	image Image
	init  bool

	status   corev1.ContainerStatus
	proc     *process
	stopping bool
	runs     int

	wake     chan struct{} // closed by stop: ends a back-off sleep
	wakeOnce sync.Once
	done     chan struct{} // closed when run returns
}

func newCtr(w *podWorker, spec *corev1.Container, img Image, init bool) *ctr {
	return &ctr{
		w: w, spec: spec, image: img, init: init,
		wake: make(chan struct{}), done: make(chan struct{}),
		status: corev1.ContainerStatus{
			Name: spec.Name, Image: spec.Image, ImageID: imageID(spec.Image), Started: ptr.To(false),
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		},
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (c *ctr) isStopping() bool {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.stopping
}

func (c *ctr) set(f func(s *corev1.ContainerStatus)) {
	c.w.mu.Lock()
	f(&c.status)
	c.w.mu.Unlock()
	c.w.notify()
}

// exitCode is the last run's exit code (-1 when it never ended).
func (c *ctr) exitCode() int32 {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.exitCodeLocked()
}

func (c *ctr) exitCodeLocked() int32 {
	if t := c.status.State.Terminated; t != nil {
		return t.ExitCode
	}
	return -1
}

func (c *ctr) run(ctx context.Context) {
	defer close(c.done)
	backoff := backoffInitial
	for {
		if c.isStopping() || ctx.Err() != nil {
			return
		}
		var exit int32
		var ranFor time.Duration
		p, err := c.start(ctx)
		var cfgErr configError
		switch {
		case errors.As(err, &cfgErr):
			c.set(func(s *corev1.ContainerStatus) {
				s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: cfgErr.msg}}
			})
			c.w.eventOnce(corev1.EventTypeWarning, "Failed", "Error: "+cfgErr.msg)
			if !c.sleep(2 * time.Second) {
				return
			}
			continue
		case err != nil:
			exit = exitStartError
			now := metav1.Now()
			c.set(func(s *corev1.ContainerStatus) {
				if s.State.Terminated != nil {
					s.LastTerminationState = s.State
				}
				s.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: exitStartError, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now,
				}}
				s.Ready, s.Started = false, ptr.To(false)
			})
			c.w.event(corev1.EventTypeWarning, "Failed", "Error: %v", err)
		default:
			c.w.event(corev1.EventTypeNormal, "Started", "Started container %s", c.spec.Name)
			c.watch(ctx, p)
			exit = p.exitCode
			ranFor = p.finishedAt.Sub(p.startedAt)
			reason := "Completed"
			if exit != 0 {
				reason = "Error"
			}
			msg := ""
			if p.signal != "" {
				msg = "killed by signal " + p.signal
			}
			c.set(func(s *corev1.ContainerStatus) {
				s.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: exit, Reason: reason, Message: msg, StartedAt: metav1.NewTime(p.startedAt), FinishedAt: metav1.NewTime(p.finishedAt),
					ContainerID: s.ContainerID,
				}}
				s.Ready, s.Started = false, ptr.To(false)
			})
		}
		if c.isStopping() || ctx.Err() != nil || !c.restarts(exit) {
			return
		}
		if ranFor >= backoffReset {
			backoff = backoffInitial
		}
		pod := c.w.latest()
		msg := fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", backoff, c.spec.Name, pod.Name, pod.Namespace, c.w.uid)
		c.set(func(s *corev1.ContainerStatus) {
			s.LastTerminationState = s.State
			s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: msg}}
		})
		c.w.event(corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s", c.spec.Name, c.w.latest().Name)
		if !c.sleep(backoff) {
			return
		}
		backoff = min(backoff*2, backoffMax)
	}
}

func (c *ctr) restarts(exit int32) bool {
	switch c.w.latest().Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exit != 0
	}
	// Always: init containers still run to completion, once.
	return !c.init || exit != 0
}

// sleep waits d unless the container is being stopped; false means stop.
func (c *ctr) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return !c.isStopping()
	case <-c.wake:
		return false
	}
}

// start resolves the container's configuration and starts its process.
func (c *ctr) start(ctx context.Context) (*process, error) {
	pod := c.w.latest().DeepCopy()
	c.w.mu.Lock()
	sb := c.w.sb
	c.w.mu.Unlock()
	pod.Status.PodIP, pod.Status.HostIP = sb.ip.String(), "127.0.0.1"
	uid, gid, groups, err := c.identity(pod)
	if err != nil {
		return nil, err
	}
	env, err := containerEnv(pod, c.spec, cachedObjects{c.w.a}, c.w.a.node)
	if err != nil {
		return nil, err
	}
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	lookup := func(n string) (string, bool) { v, ok := vals[n]; return v, ok }
	argv := c.spec.Command
	if len(argv) == 0 {
		argv = c.image.Entrypoint
	}
	argv = append(append([]string(nil), argv...), c.spec.Args...)
	if len(argv) == 0 {
		return nil, configError{"no command specified"}
	}
	for i := range argv {
		argv[i] = expand(argv[i], lookup)
	}
	// What a container runtime adds: PATH from the image, HOSTNAME, HOME.
	base := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + hostnameOf(pod)}
	home := "/"
	switch uid {
	case 0:
		home = "/root"
	case 65532:
		home = "/home/nonroot"
	}
	if _, ok := vals["HOME"]; !ok {
		base = append(base, "HOME="+home)
	}
	var full []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			full = append(full, kv)
		}
	}
	full = append(full, env...)

	mounts, err := c.mounts(pod, sb, lookup)
	if err != nil {
		return nil, err
	}
	sc := c.spec.SecurityContext
	roRoot := sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	noNewPrivs := sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation

	logFile, err := openLog(c.w.a.cfg.StateDir, pod.Namespace, pod.Name, c.spec.Name)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "---- node agent: starting container %s (run %d) at %s\n", c.spec.Name, c.runs+1, time.Now().UTC().Format(time.RFC3339Nano))

	p, err := sb.start(runSpec{
		name: c.spec.Name, hostname: hostnameOf(pod), image: c.image, argv: argv, env: full, dir: c.spec.WorkingDir,
		mounts: mounts, uid: uid, gid: gid, groups: groups, roRoot: roRoot, noNewPrv: noNewPrivs, log: logFile,
	})
	if err != nil {
		return nil, err
	}
	c.w.mu.Lock()
	if c.runs > 0 {
		c.status.RestartCount++
	}
	c.runs++
	if c.status.State.Terminated != nil {
		c.status.LastTerminationState = c.status.State
	}
	c.status.ContainerID = fmt.Sprintf("parley-local://%s-%s-%d", c.w.uid, c.spec.Name, c.runs)
	c.status.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(p.startedAt)}}
	c.status.Ready = false
	c.status.Started = ptr.To(c.spec.StartupProbe == nil)
	c.proc = p
	stopping := c.stopping
	c.w.mu.Unlock()
	c.w.notify()
	if stopping { // stop arrived while starting: it is waiting on this process
		_ = p.Signal(syscall.SIGTERM)
	}
	return p, nil
}

// identity is the user the container runs as: the security context, else
// the image's user; runAsNonRoot is enforced as the kubelet does.
func (c *ctr) identity(pod *corev1.Pod) (uid, gid uint32, groups []uint32, err error) {
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := c.spec.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	u, g := c.image.UID, c.image.GID
	var runAsUser *int64
	switch {
	case sc.RunAsUser != nil:
		runAsUser = sc.RunAsUser
	case psc.RunAsUser != nil:
		runAsUser = psc.RunAsUser
	}
	if runAsUser != nil {
		u = *runAsUser
		g = 0 // a numeric user without a group gets the image's /etc/passwd group, else 0
		if u == 65532 {
			g = 65532
		}
	}
	switch {
	case sc.RunAsGroup != nil:
		g = *sc.RunAsGroup
	case psc.RunAsGroup != nil:
		g = *psc.RunAsGroup
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	if nonRoot && u == 0 {
		return 0, 0, nil, configError{"container has runAsNonRoot and image will run as root"}
	}
	for _, sg := range psc.SupplementalGroups {
		groups = append(groups, uint32(sg))
	}
	if psc.FSGroup != nil {
		groups = append(groups, uint32(*psc.FSGroup))
	}
	return uint32(u), uint32(g), groups, nil
}

// mounts turns the container's volume mounts into bind mounts of the pod's
// volume directories.
func (c *ctr) mounts(pod *corev1.Pod, sb *sandbox, lookup func(string) (string, bool)) ([]mountSpec, error) {
	vols := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	var out []mountSpec
	for _, vm := range c.spec.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return nil, configError{fmt.Sprintf("volume mount %q refers to no volume", vm.Name)}
		}
		src := sb.volumes.HostPath(vm.Name)
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr, lookup)
		}
		if sub != "" {
			if err := validRelative(sub); err != nil {
				return nil, configError{err.Error()}
			}
			resolved, err := filepath.EvalSymlinks(filepath.Join(src, sub))
			if err != nil {
				if v.EmptyDir == nil || !os.IsNotExist(err) {
					return nil, configError{fmt.Sprintf("subPath %q of volume %q: %v", sub, vm.Name, err)}
				}
				resolved = filepath.Join(src, sub)
				if err := os.MkdirAll(resolved, 0o777); err != nil {
					return nil, err
				}
			}
			if resolved != src && !strings.HasPrefix(resolved, src+"/") {
				return nil, configError{fmt.Sprintf("subPath %q of volume %q leaves the volume", sub, vm.Name)}
			}
			src = resolved
		}
		ro := vm.ReadOnly || v.Secret != nil || v.ConfigMap != nil || v.Projected != nil || v.DownwardAPI != nil
		out = append(out, mountSpec{Source: src, Target: vm.MountPath, ReadOnly: ro})
	}
	return out, nil
}

// watch runs the probes while the process lives.
func (c *ctr) watch(ctx context.Context, p *process) {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.w.mu.Lock()
	sb := c.w.sb
	c.w.mu.Unlock()
	dial := func(ctx context.Context, port int) (net.Conn, error) {
		return sb.netns.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", port))
	}
	started := make(chan struct{})
	var startOnce sync.Once
	markStarted := func() {
		startOnce.Do(func() {
			c.set(func(s *corev1.ContainerStatus) { s.Started = ptr.To(true) })
			close(started)
		})
	}
	kill := func(why string) {
		c.w.event(corev1.EventTypeNormal, "Killing", "Container %s %s, will be restarted", c.spec.Name, why)
		c.terminate(p, c.killGrace(), false)
	}
	if sp := c.spec.StartupProbe; sp != nil && !c.init {
		go probeLoop(pctx, sp, c.spec, dial, func(ok bool, msg string, crossed bool) {
			select {
			case <-started:
				return
			default:
			}
			if ok {
				markStarted()
				return
			}
			c.w.event(corev1.EventTypeWarning, "Unhealthy", "Startup probe failed: %s", msg)
			if crossed {
				go kill("failed startup probe")
			}
		})
	} else {
		markStarted()
	}
	if c.init {
		<-p.done
		return
	}
	go func() {
		select {
		case <-started:
		case <-pctx.Done():
			return
		}
		rp := c.spec.ReadinessProbe
		if rp == nil {
			c.set(func(s *corev1.ContainerStatus) { s.Ready = true })
			return
		}
		probeLoop(pctx, rp, c.spec, dial, func(ok bool, msg string, crossed bool) {
			if !ok {
				c.w.event(corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: %s", msg)
			}
			if crossed {
				c.set(func(s *corev1.ContainerStatus) { s.Ready = ok })
			}
		})
	}()
	if lp := c.spec.LivenessProbe; lp != nil {
		go func() {
			select {
			case <-started:
			case <-pctx.Done():
				return
			}
			probeLoop(pctx, lp, c.spec, dial, func(ok bool, msg string, crossed bool) {
				if ok {
					return
				}
				c.w.event(corev1.EventTypeWarning, "Unhealthy", "Liveness probe failed: %s", msg)
				if crossed {
					go kill("failed liveness probe")
				}
			})
		}()
	}
	<-p.done
}

func (c *ctr) killGrace() time.Duration {
	pod := c.w.latest()
	if lp := c.spec.LivenessProbe; lp != nil && lp.TerminationGracePeriodSeconds != nil {
		return time.Duration(*lp.TerminationGracePeriodSeconds) * time.Second
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// stop ends the container for good: pre-stop hook, SIGTERM, SIGKILL when the
// grace period is over. It returns when the run loop has ended.
func (c *ctr) stop(grace time.Duration, hooks bool) {
	c.w.mu.Lock()
	c.stopping = true
	p := c.proc
	c.w.mu.Unlock()
	c.wakeOnce.Do(func() { close(c.wake) })
	if p != nil && !p.exited() {
		c.terminate(p, grace, hooks)
	}
	// A start in flight when stop began signals its process itself.
	select {
	case <-c.done:
	case <-time.After(grace + 5*time.Second):
		c.w.mu.Lock()
		p = c.proc
		c.w.mu.Unlock()
		if p != nil {
			_ = p.Signal(syscall.SIGKILL)
		}
		<-c.done
	}
}

// terminate runs the pre-stop hook (when asked), sends SIGTERM and, after
// the grace period, SIGKILL.
func (c *ctr) terminate(p *process, grace time.Duration, hooks bool) {
	deadline := time.Now().Add(grace)
	if hooks && grace > 0 {
		c.preStop(deadline)
	}
	if grace > 0 {
		if err := p.Signal(syscall.SIGTERM); err == nil {
			select {
			case <-p.done:
				return
			case <-time.After(time.Until(deadline)):
			}
		}
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

func (c *ctr) preStop(deadline time.Time) {
	lc := c.spec.Lifecycle
	if lc == nil || lc.PreStop == nil {
		return
	}
	h := lc.PreStop
	switch {
	case h.Sleep != nil:
		d := time.Duration(h.Sleep.Seconds) * time.Second
		if until := time.Until(deadline); d > until {
			d = until
		}
		time.Sleep(d)
	case h.HTTPGet != nil:
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		c.w.mu.Lock()
		sb := c.w.sb
		c.w.mu.Unlock()
		ok, msg := probeOnce(ctx, &corev1.ProbeHandler{HTTPGet: h.HTTPGet}, c.spec, func(ctx context.Context, port int) (net.Conn, error) {
			return sb.netns.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", port))
		})
		if !ok {
			c.w.event(corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %s", msg)
		}
	case h.Exec != nil:
		c.w.event(corev1.EventTypeWarning, "FailedPreStopHook", "exec pre-stop hooks are not supported by the local node agent; sending SIGTERM now")
	}
}

func logPath(stateDir, ns, pod, container string) string {
	return filepath.Join(stateDir, "logs", ns+"_"+pod, container+".log")
}

func openLog(stateDir, ns, pod, container string) (*os.File, error) {
	p := logPath(stateDir, ns, pod, container)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}
