// Package nodeagent is the local cluster's node: a small kubelet for a
// machine without a container runtime. It registers a Node, binds pending
// Pods to it (there is no scheduler), and runs each container of a Parley
// image as a local process of the binary built from this repository, in its
// own network, mount and UTS namespaces with a root filesystem assembled from
// the image's binaries and the Pod's volumes. It resolves env (including
// secretKeyRef, configMapKeyRef and the downward API), runs probes that drive
// the Pod's status, restarts crashed containers, and stops them with SIGTERM
// then SIGKILL after the grace period. docs/local-cluster.md lists what it
// does not emulate.
//
// It needs root (CAP_SYS_ADMIN for namespaces and mounts), as a kubelet does.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/parley-chat/parley/test/e2e/cluster/localnet"
)

// Config configures an Agent.
type Config struct {
	Client kubernetes.Interface
	// NodeName is the Node this agent registers (default "parley-local").
	NodeName string
	// PodCIDR is where pod IPs come from (a 10.x /24, see localnet).
	PodCIDR netip.Prefix
	// StateDir holds one directory per pod (volumes, root filesystems, logs).
	StateDir string
	// Images says which images can run and with which binaries.
	Images Images
	// HostEndpoints are host addresses ("127.0.0.1:5672") made reachable at
	// the same address inside every pod; nothing else outside the pod is.
	HostEndpoints []string
	// Log receives the agent's own log (containers log to files in StateDir).
	Log *slog.Logger
}

// Agent is the node agent.
type Agent struct {
	cfg  Config
	cs   kubernetes.Interface
	log  *slog.Logger
	node nodeFacts

	secrets    corelisters.SecretLister
	configMaps corelisters.ConfigMapLister
	recorder   record.EventRecorder

	mu        sync.Mutex
	workers   map[types.UID]*podWorker
	finished  map[types.UID]time.Time // pods whose worker is done: late events are ignored
	endpoints []string
	ips       map[netip.Addr]bool
	nextIP    netip.Addr
	ctx       context.Context
	wg        sync.WaitGroup
}

// nodeFacts is what pods may learn about the node.
type nodeFacts struct {
	Name        string
	Allocatable corev1.ResourceList
}

// New checks the configuration and returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Client == nil || cfg.Images == nil || cfg.StateDir == "" || !cfg.PodCIDR.IsValid() {
		return nil, errors.New("nodeagent: Client, Images, StateDir and PodCIDR are required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("nodeagent: must run as root (it creates network and mount namespaces for pods, as a kubelet does)")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = "parley-local"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	mem := int64(8 << 30)
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		mem = int64(si.Totalram) * int64(si.Unit)
	}
	a := &Agent{
		cfg: cfg, cs: cfg.Client, log: cfg.Log.With("component", "nodeagent"),
		node: nodeFacts{Name: cfg.NodeName, Allocatable: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
			corev1.ResourcePods:   resource.MustParse("110"),
		}},
		workers:   map[types.UID]*podWorker{},
		finished:  map[types.UID]time.Time{},
		endpoints: append([]string(nil), cfg.HostEndpoints...),
		ips:       map[netip.Addr]bool{},
		nextIP:    cfg.PodCIDR.Addr().Next().Next(),
	}
	return a, nil
}

// NodeName is the registered Node's name.
func (a *Agent) NodeName() string { return a.cfg.NodeName }

// Run registers the node and runs pods until ctx ends; then it stops every
// container (SIGTERM, SIGKILL after 5s) and returns.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	a.ctx = ctx
	a.mu.Unlock()
	if err := os.MkdirAll(a.cfg.StateDir, 0o755); err != nil {
		return err
	}
	if err := a.registerNode(ctx); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	a.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: a.cfg.NodeName})

	factory := informers.NewSharedInformerFactory(a.cs, 0)
	podInf := factory.Core().V1().Pods().Informer()
	a.secrets = factory.Core().V1().Secrets().Lister()
	a.configMaps = factory.Core().V1().ConfigMaps().Lister()
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { a.podChanged(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.podGone(p)
			}
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("nodeagent: %v cache did not sync", typ)
		}
	}
	a.log.Info("node ready", "node", a.cfg.NodeName, "podCIDR", a.cfg.PodCIDR)

	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.heartbeat(ctx) }()
	<-ctx.Done()
	factory.Shutdown()
	a.mu.Lock()
	workers := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		workers = append(workers, w)
	}
	a.mu.Unlock()
	for _, w := range workers {
		w.shutdown()
	}
	a.wg.Wait()
	return nil
}

func (a *Agent) podChanged(p *corev1.Pod) {
	if p.Spec.NodeName == "" {
		if p.DeletionTimestamp == nil && len(p.Spec.SchedulingGates) == 0 {
			go a.bind(p)
		}
		return
	}
	if p.Spec.NodeName != a.cfg.NodeName {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx == nil || a.ctx.Err() != nil {
		return
	}
	w, ok := a.workers[p.UID]
	if !ok {
		if _, done := a.finished[p.UID]; done {
			return
		}
		terminal := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		if terminal || p.DeletionTimestamp != nil {
			// Nothing runs for it here: a pod deleted before it started, or
			// one that ended before this agent saw it, only needs removing.
			if p.DeletionTimestamp != nil {
				go a.finalDelete(p)
			}
			return
		}
		w = newPodWorker(a, p)
		a.workers[p.UID] = w
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			w.run(a.ctx)
			a.mu.Lock()
			delete(a.workers, p.UID)
			now := time.Now()
			for uid, at := range a.finished {
				if now.Sub(at) > 10*time.Minute {
					delete(a.finished, uid)
				}
			}
			a.finished[p.UID] = now
			a.mu.Unlock()
		}()
		return
	}
	w.update(p)
}

func (a *Agent) podGone(p *corev1.Pod) {
	a.mu.Lock()
	w := a.workers[p.UID]
	a.mu.Unlock()
	if w != nil {
		w.gone()
	}
}

// bind places a pending pod on this node, as a scheduler would. Only the
// node selector is honoured; affinity, spread constraints, taints and
// resource requests are not considered (there is one node).
func (a *Agent) bind(p *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node, err := a.cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return
	}
	if !labels.SelectorFromSet(p.Spec.NodeSelector).Matches(labels.Set(node.Labels)) {
		a.recorder.Eventf(p, corev1.EventTypeWarning, "FailedScheduling", "0/1 nodes are available: 1 node(s) didn't match Pod's node selector.")
		return
	}
	err = a.cs.CoreV1().Pods(p.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: a.cfg.NodeName},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		a.log.Warn("bind pod", "pod", p.Namespace+"/"+p.Name, "err", err)
	}
}

// finalDelete removes a terminated pod's object once it is marked for deletion.
func (a *Agent) finalDelete(p *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		a.log.Warn("delete terminated pod", "pod", p.Namespace+"/"+p.Name, "err", err)
	}
}

// allocateIP returns a free pod IP, cycling through the block so that a
// deleted pod's address is not reused at once.
func (a *Agent) allocateIP() (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range 256 {
		ip := a.nextIP
		a.nextIP = ip.Next()
		if !a.cfg.PodCIDR.Contains(a.nextIP) || a.nextIP.As4()[3] == 255 {
			a.nextIP = a.cfg.PodCIDR.Addr().Next().Next()
		}
		if !a.ips[ip] {
			a.ips[ip] = true
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free pod IP in %s", a.cfg.PodCIDR)
}

func (a *Agent) releaseIP(ip netip.Addr) {
	a.mu.Lock()
	delete(a.ips, ip)
	a.mu.Unlock()
}

// ShareHostEndpoint makes a host address reachable at the same address in
// every pod, running or future (e.g. a test's TCP proxy in front of RabbitMQ).
func (a *Agent) ShareHostEndpoint(address string) error {
	a.mu.Lock()
	for _, e := range a.endpoints {
		if e == address {
			a.mu.Unlock()
			return nil
		}
	}
	a.endpoints = append(a.endpoints, address)
	workers := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		workers = append(workers, w)
	}
	a.mu.Unlock()
	var errs []error
	for _, w := range workers {
		if err := w.shareEndpoint(address); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Agent) hostEndpoints() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.endpoints...)
}

// Signal sends sig to a running container of a pod (e.g. SIGKILL to make it
// crash); it fails when the container is not running.
func (a *Agent) Signal(namespace, pod, container string, sig os.Signal) error {
	a.mu.Lock()
	var w *podWorker
	for _, pw := range a.workers {
		if p := pw.latest(); p.Namespace == namespace && p.Name == pod {
			w = pw
		}
	}
	a.mu.Unlock()
	if w == nil {
		return fmt.Errorf("pod %s/%s is not running on this node", namespace, pod)
	}
	return w.signal(container, sig)
}

// LogPath is the file a container's current run writes its output to.
func (a *Agent) LogPath(namespace, pod, container string) string {
	return logPath(a.cfg.StateDir, namespace, pod, container)
}

// PodAddress is where a pod's port is reachable on this machine.
func PodAddress(p *corev1.Pod, port int) (string, error) {
	if p.Status.PodIP == "" {
		return "", fmt.Errorf("pod %s/%s has no IP yet", p.Namespace, p.Name)
	}
	l, err := localnet.LoopbackString(p.Status.PodIP)
	if err != nil {
		return "", err
	}
	return netip.AddrPortFrom(netip.MustParseAddr(l), uint16(port)).String(), nil
}

// registerNode creates (or takes over) the Node and its Lease.
func (a *Agent) registerNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": a.cfg.NodeName, "kubernetes.io/os": runtime.GOOS, "kubernetes.io/arch": runtime.GOARCH,
			"node.parley.io/local": "true",
		}},
		Spec: corev1.NodeSpec{PodCIDR: a.cfg.PodCIDR.String(), PodCIDRs: []string{a.cfg.PodCIDR.String()}},
	}
	if _, err := a.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register node: %w", err)
	}
	// Controllers (TTL, node lifecycle) write to a new Node at once: retry.
	if err := retry.RetryOnConflict(retry.DefaultBackoff, func() error { return a.updateNodeStatus(ctx) }); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

func (a *Agent) updateNodeStatus(ctx context.Context) error {
	node, err := a.cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range node.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	capacity := a.node.Allocatable.DeepCopy()
	node.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: a.node.Allocatable.DeepCopy(),
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "local node agent does not track memory pressure"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "local node agent does not track disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "local node agent does not track PIDs"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "Parley local node agent is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: a.cfg.NodeName}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "v1.37.2", OperatingSystem: runtime.GOOS, Architecture: runtime.GOARCH,
			ContainerRuntimeVersion: "parley-nodeagent://1", OSImage: "Parley local cluster",
		},
	}
	_, err = a.cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node Lease every 10s and the status every minute, so
// the node lifecycle controller keeps the node Ready.
func (a *Agent) heartbeat(ctx context.Context) {
	leases := a.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	renew := func() {
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: corev1.NamespaceNodeLease},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &a.cfg.NodeName, LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now},
			}, metav1.CreateOptions{})
		} else if err == nil {
			l.Spec.RenewTime = &now
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("renew node lease", "err", err)
		}
	}
	renew()
	lease := time.NewTicker(10 * time.Second)
	status := time.NewTicker(time.Minute)
	defer lease.Stop()
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			renew()
		case <-status.C:
			if err := retry.RetryOnConflict(retry.DefaultBackoff, func() error { return a.updateNodeStatus(ctx) }); err != nil && ctx.Err() == nil {
				a.log.Warn("update node status", "err", err)
			}
		}
	}
}

// objects for pods: the informer caches.
type cachedObjects struct{ a *Agent }

func (o cachedObjects) Secret(ns, name string) (*corev1.Secret, error) {
	return o.a.secrets.Secrets(ns).Get(name)
}

func (o cachedObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return o.a.configMaps.ConfigMaps(ns).Get(name)
}
