package nodeagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/parley-chat/parley/test/e2e/cluster/localnet"
)

// podWorker owns one pod on this node from its first sight to its final
// deletion: sandbox, volumes, init containers, containers, status.
type podWorker struct {
	a   *Agent
	uid types.UID

	updated chan struct{} // a newer pod object arrived
	kick    chan struct{} // container state changed: push status
	goneCh  chan struct{} // the pod object was removed (force deletion)
	goneOne sync.Once

	mu         sync.Mutex
	pod        *corev1.Pod
	sb         *sandbox
	waitReason string // shown on containers not yet created
	waitMsg    string
	failReason string // pod-level failure (an image that cannot run)
	failMsg    string
	initDone   bool
	terminal   corev1.PodPhase
	startTime  metav1.Time
	inits      []*ctr
	ctrs       []*ctr
	lastEvent  string
}

func newPodWorker(a *Agent, p *corev1.Pod) *podWorker {
	return &podWorker{
		a: a, uid: p.UID, pod: p.DeepCopy(),
		updated: make(chan struct{}, 1), kick: make(chan struct{}, 1), goneCh: make(chan struct{}),
		waitReason: "ContainerCreating", startTime: metav1.Now(),
	}
}

func (w *podWorker) latest() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func (w *podWorker) update(p *corev1.Pod) {
	w.mu.Lock()
	w.pod = p.DeepCopy()
	w.mu.Unlock()
	select {
	case w.updated <- struct{}{}:
	default:
	}
}

func (w *podWorker) gone()     { w.goneOne.Do(func() { close(w.goneCh) }) }
func (w *podWorker) shutdown() { w.gone() } // the run loop sees ctx done as well
func (w *podWorker) notify() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *podWorker) event(typ, reason, format string, args ...any) {
	if w.a.recorder != nil {
		w.a.recorder.Eventf(w.latest(), typ, reason, format, args...)
	}
}

type outcome int

const (
	untilDone outcome = iota
	deleting
	removed
	stopping
)

// wait serves status pushes and volume refreshes until done is closed or
// the pod is deleted, removed, or the agent stops.
func (w *podWorker) wait(ctx context.Context, done <-chan struct{}) outcome {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if w.latest().DeletionTimestamp != nil {
			return deleting
		}
		select {
		case <-done:
			w.push(ctx)
			return untilDone
		case <-ctx.Done():
			return stopping
		case <-w.goneCh:
			if ctx.Err() != nil {
				return stopping
			}
			return removed
		case <-w.updated:
		case <-w.kick:
			w.push(ctx)
		case <-tick.C:
			w.mu.Lock()
			sb := w.sb
			w.mu.Unlock()
			if sb != nil {
				if err := sb.volumes.SyncAll(ctx); err != nil {
					w.eventOnce(corev1.EventTypeWarning, "FailedMount", err.Error())
				}
			}
			w.push(ctx)
		}
	}
}

func (w *podWorker) eventOnce(typ, reason, msg string) {
	w.mu.Lock()
	dup := w.lastEvent == reason+msg
	w.lastEvent = reason + msg
	w.mu.Unlock()
	if !dup {
		w.event(typ, reason, "%s", msg)
	}
}

func (w *podWorker) run(ctx context.Context) {
	pod := w.latest()
	images := map[string]Image{}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		img, err := w.a.cfg.Images.Resolve(c.Image)
		if err != nil {
			w.mu.Lock()
			w.failReason, w.failMsg, w.terminal = "UnsupportedImage", fmt.Sprintf("container %q: %v", c.Name, err), corev1.PodFailed
			w.mu.Unlock()
			w.event(corev1.EventTypeWarning, "UnsupportedImage", "container %q: %v", c.Name, err)
			w.push(ctx)
			w.finish(ctx, w.wait(ctx, nil))
			return
		}
		images[c.Name] = img
	}

	// Sandbox and volumes, retried until they work (a Secret may appear later).
	for {
		err := w.setup(ctx)
		if err == nil {
			break
		}
		w.mu.Lock()
		w.waitReason, w.waitMsg = "ContainerCreating", err.Error()
		w.mu.Unlock()
		w.eventOnce(corev1.EventTypeWarning, "FailedMount", err.Error())
		w.push(ctx)
		retry := make(chan struct{})
		timer := time.AfterFunc(2*time.Second, func() { close(retry) })
		out := w.wait(ctx, retry)
		timer.Stop()
		if out != untilDone {
			w.finish(ctx, out)
			return
		}
	}
	w.mu.Lock()
	w.waitReason, w.waitMsg = "PodInitializing", ""
	w.mu.Unlock()

	for i := range pod.Spec.InitContainers {
		c := newCtr(w, &pod.Spec.InitContainers[i], images[pod.Spec.InitContainers[i].Name], true)
		w.mu.Lock()
		w.inits = append(w.inits, c)
		w.mu.Unlock()
		go c.run(ctx)
		if out := w.wait(ctx, c.done); out != untilDone {
			w.finish(ctx, out)
			return
		}
		if c.exitCode() != 0 {
			w.mu.Lock()
			w.terminal = corev1.PodFailed
			w.mu.Unlock()
			w.push(ctx)
			w.finish(ctx, w.wait(ctx, nil))
			return
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.waitReason, w.waitMsg = "ContainerCreating", ""
	for i := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, newCtr(w, &pod.Spec.Containers[i], images[pod.Spec.Containers[i].Name], false))
	}
	ctrs := w.ctrs
	w.mu.Unlock()
	all := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range ctrs {
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx) }()
	}
	go func() { wg.Wait(); close(all) }()
	out := w.wait(ctx, all)
	if out == untilDone {
		// Every container ended for good (restartPolicy Never or OnFailure).
		w.mu.Lock()
		w.terminal = corev1.PodSucceeded
		for _, c := range ctrs {
			if c.exitCodeLocked() != 0 {
				w.terminal = corev1.PodFailed
			}
		}
		w.mu.Unlock()
		w.push(ctx)
		out = w.wait(ctx, nil)
	}
	w.finish(ctx, out)
}

// setup creates the sandbox once and writes the volumes.
func (w *podWorker) setup(ctx context.Context) error {
	w.mu.Lock()
	sb := w.sb
	pod := w.pod
	w.mu.Unlock()
	if sb == nil {
		ip, err := w.a.allocateIP()
		if err != nil {
			return err
		}
		dir := filepath.Join(w.a.cfg.StateDir, "pods", string(pod.UID))
		sb, err = newSandbox(dir, hostnameOf(pod), ip)
		if err != nil {
			w.a.releaseIP(ip)
			return fmt.Errorf("create pod sandbox: %w", err)
		}
		for _, e := range w.a.hostEndpoints() {
			if err := sb.netns.ShareHostEndpoint(e); err != nil {
				sb.Close()
				w.a.releaseIP(ip)
				return err
			}
		}
		host, err := localnet.Loopback(ip)
		if err != nil {
			sb.Close()
			w.a.releaseIP(ip)
			return err
		}
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
					continue
				}
				if err := sb.netns.Expose(fmt.Sprintf("%s:%d", host, p.ContainerPort), int(p.ContainerPort)); err != nil {
					sb.Close()
					w.a.releaseIP(ip)
					return err
				}
			}
		}
		// The pod's IP is known from here on: the downward API may refer to it.
		pod = pod.DeepCopy()
		pod.Status.PodIP, pod.Status.HostIP = ip.String(), "127.0.0.1"
		sb.volumes = &volumeWriter{dir: filepath.Join(dir, "volumes"), pod: pod, objs: cachedObjects{w.a}, cs: w.a.cs, node: w.a.node}
		w.mu.Lock()
		w.sb = sb
		w.mu.Unlock()
	}
	return sb.volumes.SyncAll(ctx)
}

func hostnameOf(p *corev1.Pod) string {
	if p.Spec.Hostname != "" {
		return p.Spec.Hostname
	}
	if len(p.Name) > 63 {
		return strings.TrimRight(p.Name[:63], "-.")
	}
	return p.Name
}

func (w *podWorker) shareEndpoint(address string) error {
	w.mu.Lock()
	sb := w.sb
	w.mu.Unlock()
	if sb == nil {
		return nil // setup shares every endpoint known by then
	}
	return sb.netns.ShareHostEndpoint(address)
}

func (w *podWorker) signal(container string, sig os.Signal) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range append(append([]*ctr(nil), w.inits...), w.ctrs...) {
		if c.spec.Name == container && c.proc != nil && !c.proc.exited() {
			s, ok := sig.(syscall.Signal)
			if !ok {
				return fmt.Errorf("signal %v is not a Unix signal", sig)
			}
			return c.proc.Signal(s)
		}
	}
	return fmt.Errorf("container %q of pod %s/%s is not running", container, w.pod.Namespace, w.pod.Name)
}

// finish stops the containers according to how the pod ended and releases
// everything. A deleted pod gets its grace period, a pre-stop hook, its final
// status, and then its object removed, as the kubelet does.
func (w *podWorker) finish(ctx context.Context, out outcome) {
	pod := w.latest()
	grace := 30 * time.Second
	switch out {
	case deleting:
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
	case removed:
		grace = 0
	case stopping:
		grace = 5 * time.Second
	}
	w.stopAll(grace, out == deleting)
	if out == deleting {
		w.mu.Lock()
		if w.terminal == "" {
			w.terminal = corev1.PodSucceeded
			for _, c := range w.ctrs {
				if c.exitCodeLocked() != 0 {
					w.terminal = corev1.PodFailed
				}
			}
		}
		w.mu.Unlock()
		w.push(ctx)
		w.a.finalDelete(pod)
	}
	w.mu.Lock()
	sb := w.sb
	w.sb = nil
	w.mu.Unlock()
	if sb != nil {
		sb.Close()
		w.a.releaseIP(sb.ip)
	}
}

func (w *podWorker) stopAll(grace time.Duration, hooks bool) {
	w.mu.Lock()
	cs := append(append([]*ctr(nil), w.inits...), w.ctrs...)
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(grace, hooks) }()
	}
	wg.Wait()
}

// push writes the pod's status when it differs from what the API server has.
func (w *podWorker) push(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := w.a.cs.CoreV1().Pods(w.latest().Namespace).Get(ctx, w.latest().Name, metav1.GetOptions{})
		if err != nil || cur.UID != w.uid {
			return
		}
		st := w.buildStatus(cur.Status)
		if equality.Semantic.DeepEqual(st, cur.Status) {
			return
		}
		cur.Status = st
		_, err = w.a.cs.CoreV1().Pods(cur.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) {
			if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
				w.a.log.Warn("update pod status", "pod", cur.Namespace+"/"+cur.Name, "err", err)
			}
			return
		}
	}
}

func (w *podWorker) buildStatus(old corev1.PodStatus) corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	pod := w.pod
	st := corev1.PodStatus{
		QOSClass:  old.QOSClass,
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		StartTime: &w.startTime,
	}
	// Keep conditions owned by others (readiness gates, DisruptionTarget).
	ours := map[corev1.PodConditionType]bool{
		corev1.PodScheduled: true, corev1.PodReadyToStartContainers: true, corev1.PodInitialized: true,
		corev1.ContainersReady: true, corev1.PodReady: true,
	}
	for _, c := range old.Conditions {
		if !ours[c.Type] {
			st.Conditions = append(st.Conditions, c)
		}
	}
	cond := func(t corev1.PodConditionType, ok bool, reason string) {
		s := corev1.ConditionFalse
		if ok {
			s, reason = corev1.ConditionTrue, ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: metav1.Now(), ObservedGeneration: pod.Generation}
		for _, o := range old.Conditions {
			if o.Type == t && o.Status == s {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		st.Conditions = append(st.Conditions, c)
	}
	if w.failReason != "" {
		st.Phase, st.Reason, st.Message = corev1.PodFailed, w.failReason, w.failMsg
		cond(corev1.PodScheduled, true, "")
		cond(corev1.PodReady, false, "PodFailed")
		return st
	}
	if w.sb != nil {
		st.PodIP = w.sb.ip.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	st.InitContainerStatuses = w.statuses(pod.Spec.InitContainers, w.inits)
	st.ContainerStatuses = w.statuses(pod.Spec.Containers, w.ctrs)

	allReady := w.initDone && len(w.ctrs) > 0
	running, live := false, false
	for _, cs := range st.ContainerStatuses {
		allReady = allReady && cs.Ready
		if cs.State.Running != nil {
			running = true
		}
		if cs.State.Running != nil || cs.RestartCount > 0 || cs.LastTerminationState.Terminated != nil || cs.State.Terminated != nil {
			live = true
		}
	}
	switch {
	case w.terminal != "":
		st.Phase = w.terminal
		allReady = false
	case !w.initDone:
		st.Phase = corev1.PodPending
	case running || live:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	gatesOK := true
	for _, g := range pod.Spec.ReadinessGates {
		found := false
		for _, c := range old.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				found = true
			}
		}
		gatesOK = gatesOK && found
	}
	cond(corev1.PodScheduled, true, "")
	cond(corev1.PodReadyToStartContainers, w.sb != nil && w.terminal == "", "")
	initReason := "ContainersNotInitialized"
	if w.terminal == corev1.PodSucceeded {
		initReason = "PodCompleted"
	}
	cond(corev1.PodInitialized, w.initDone, initReason)
	notReady := "ContainersNotReady"
	if w.terminal == corev1.PodSucceeded {
		notReady = "PodCompleted"
	}
	cond(corev1.ContainersReady, allReady, notReady)
	if allReady && !gatesOK {
		notReady = "ReadinessGatesNotReady"
	}
	cond(corev1.PodReady, allReady && gatesOK, notReady)
	return st
}

func (w *podWorker) statuses(specs []corev1.Container, ctrs []*ctr) []corev1.ContainerStatus {
	if len(specs) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(specs))
	for i, s := range specs {
		if i < len(ctrs) {
			out[i] = *ctrs[i].status.DeepCopy()
			continue
		}
		out[i] = corev1.ContainerStatus{
			Name: s.Name, Image: s.Image, ImageID: imageID(s.Image), Started: ptr.To(false),
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: w.waitReason, Message: w.waitMsg}},
		}
	}
	return out
}

func imageID(image string) string { return "parley-local://" + image }
