// Package cluster is Parley's local Kubernetes cluster for the demo and the
// end-to-end tests: a real single node on this machine. etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, the kubelet and kube-proxy
// (v1.37.2, built from the Go module proxy by hack/control-plane.sh
// --with-node), containerd and runc (Debian), the bridge CNI, CoreDNS and
// metrics-server, all in the node's own network namespace. Pods run from OCI
// images built here by internal/image (Parley's is the one `make image`
// builds), with cgroups, seccomp, probes by the kubelet, and Services by
// kube-proxy. docs/local-cluster.md has the layout and what differs from a
// production cluster.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	_ "embed"
)

// Options configure a local cluster.
type Options struct {
	// Assets is the directory hack/control-plane.sh --with-kcm --with-kubectl
	// --with-node fills (etcd, the Kubernetes binaries, CoreDNS, metrics-server).
	Assets string
	// RepoRoot is Parley's repository (the pause program's source).
	RepoRoot string
	// BinDir holds Parley's binaries (`make build`); they become the Parley
	// image the node runs (ParleyImage). Empty: no Parley image.
	BinDir string
	// StateDir holds everything the cluster writes (certificates, etcd,
	// containerd, the kubelet, logs). Empty: a temporary directory removed by Stop.
	StateDir string
	// LockWait bounds the wait for another local cluster on this machine to
	// stop (default 20 minutes: a parallel test package's whole run).
	LockWait time.Duration
	// Log receives progress (default: discarded).
	Log *slog.Logger
}

// Cluster is a running local cluster.
type Cluster struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is an admin kubeconfig file for kubectl and helm.
	Kubeconfig string
	// Kubectl is the kubectl binary of the same version.
	Kubectl string
	// StateDir is where the cluster keeps its files; component logs are under logs/.
	StateDir string
	// ParleyImage is the image built from BinDir, imported into the node.
	ParleyImage string

	opts       Options
	pki        *pki
	lock       *os.File
	record     *record
	components []*component
	proxies    []*TCPProxy
	extraEnv   map[string][]string
	removeDir  bool
}

// lockHeldByParent is set by a test's child process whose parent holds the
// machine lock for it (leftovers_test.go).
var lockHeldByParent bool

// Start brings up the node and its add-ons and returns when the node is
// Ready, CoreDNS answers and the metrics API is served. What a run that
// died left on the host is cleaned up first.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.LockWait == 0 {
		opts.LockWait = 20 * time.Minute
	}
	if err := checkPrerequisites(opts.Assets); err != nil {
		return nil, err
	}
	c = &Cluster{opts: opts, extraEnv: map[string][]string{}, Kubectl: filepath.Join(opts.Assets, "kubectl")}
	if !lockHeldByParent {
		if c.lock, err = lockMachine(opts.LockWait); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	prev, err := readRecord()
	if err != nil {
		opts.Log.Warn("unreadable record of an earlier local cluster", "err", err)
	}
	if found, err := cleanUp(prev); err != nil {
		return c, fmt.Errorf("clean up what an earlier local cluster left: %w", err)
	} else if len(found) > 0 {
		opts.Log.Warn("cleaned up what an earlier local cluster left", "what", strings.Join(found, ", "))
	}
	if opts.StateDir == "" {
		if opts.StateDir, err = os.MkdirTemp("", "parley-cluster-"); err != nil {
			return c, err
		}
		c.removeDir = true
	} else if err := os.RemoveAll(opts.StateDir); err != nil {
		return c, err
	}
	c.StateDir = opts.StateDir
	for _, d := range []string{"logs", "run", "etcd", "containerd/root", "containerd/state", "cni/ipam", "kubelet", "logs/pods", "images"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return c, err
		}
	}
	if c.record, err = newRecord(c.StateDir); err != nil {
		return c, err
	}
	t0 := time.Now()
	step := func(what string) { opts.Log.Info(what, "after", time.Since(t0).Round(10*time.Millisecond)) }
	if err := c.writePKI(); err != nil {
		return c, fmt.Errorf("certificates: %w", err)
	}
	if err := createNodeNetwork(); err != nil {
		return c, fmt.Errorf("node network: %w", err)
	}
	step("node network namespace")
	if err := c.startControlPlane(ctx); err != nil {
		return c, err
	}
	step("kube-apiserver ready")
	if err := c.startNode(ctx); err != nil {
		return c, err
	}
	step("node Ready")
	if err := c.installAddons(ctx); err != nil {
		return c, err
	}
	step("CoreDNS and metrics-server ready")
	return c, nil
}

// checkPrerequisites names what is missing, and how to get it.
func checkPrerequisites(assets string) error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root (network namespace, containerd, the kubelet)")
	}
	var missing []string
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "coredns", "metrics-server"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s missing in %q: run hack/control-plane.sh --with-kcm --with-kubectl --with-node", strings.Join(missing, ", "), assets)
	}
	missing = nil
	for _, b := range []string{"containerd", "runc", "ctr", "ip", "nsenter", "iptables", "conntrack", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", "/usr/lib/cni/portmap"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s missing: run hack/node-deps.sh (Debian packages containerd, runc, containernetworking-plugins, iptables, conntrack)", strings.Join(missing, ", "))
	}
	return nil
}

func (c *Cluster) writePKI() (err error) {
	if c.pki, err = newPKI(c.path("pki")); err != nil {
		return err
	}
	p := c.pki
	certs := []struct {
		name, cn string
		orgs     []string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain, "localhost", "127.0.0.1", KubernetesServiceIP.String(), NodeIP.String()}},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil},
		{"front-proxy-client", "front-proxy-client", nil, nil},
		{"admin", "parley-admin", []string{"system:masters"}, nil},
		{"kubelet", "system:node:" + NodeName, []string{"system:nodes"}, nil},
		{"kube-proxy", "system:kube-proxy", nil, nil},
		{"kube-controller-manager", "system:kube-controller-manager", nil, nil},
		{"kube-scheduler", "system:kube-scheduler", nil, nil},
	}
	for _, ct := range certs {
		if err := p.cert(ct.name, ct.cn, ct.orgs, ct.hosts...); err != nil {
			return err
		}
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	server := "https://" + net.JoinHostPort(NodeIP.String(), strconv.Itoa(apiServerPort))
	for _, n := range []string{"admin", "kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler"} {
		if err := p.kubeconfig(c.path(n+".kubeconfig"), n, server); err != nil {
			return err
		}
	}
	c.Kubeconfig = c.path("admin.kubeconfig")
	return nil
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	a, p := c.opts.Assets, c.pki
	if _, err := c.startComponent("etcd", filepath.Join(a, "etcd"),
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=default=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
		"--unsafe-no-fsync", // a throw-away cluster; fsync per write costs seconds on a shared disk
	); err != nil {
		return err
	}
	if _, err := c.startComponent("kube-apiserver", filepath.Join(a, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", "--secure-port="+strconv.Itoa(apiServerPort), "--advertise-address="+NodeIP.String(),
		"--cert-dir="+c.path("pki"),
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"), "--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		// Else `kubectl logs/exec` resolve the node's name through DNS and time out.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc."+ClusterDomain,
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--service-cluster-ip-range="+ServiceCIDR.String(),
		"--authorization-mode=Node,RBAC",
		// PodSecurity is on by default; namespaces opt into a level by label.
		"--enable-admission-plugins=NodeRestriction",
		// The aggregation layer (metrics-server's metrics.k8s.io).
		"--requestheader-client-ca-file="+p.path("ca.crt"), "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+p.path("front-proxy-client.crt"), "--proxy-client-key-file="+p.path("front-proxy-client.key"),
		"--enable-aggregator-routing=true",
		"--allow-privileged=false",
		"--profiling=false",
	); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := c.waitFor(ctx, time.Minute, "kube-apiserver /readyz", func(ctx context.Context) (bool, error) {
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, nil
	}); err != nil {
		return err
	}
	if _, err := c.startComponent("kube-controller-manager", filepath.Join(a, "kube-controller-manager"),
		"--kubeconfig="+c.path("kube-controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+c.path("kube-controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+c.path("kube-controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", "--secure-port=10257", "--cert-dir="+c.path("pki", "kcm"),
		"--leader-elect=false",
		// The pod CIDR is the CNI's, not allocated per node.
		"--controllers=*,-nodeipam",
		"--service-account-private-key-file="+p.path("sa.key"), "--root-ca-file="+p.path("ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+p.path("ca.crt"), "--cluster-signing-key-file="+p.path("ca.key"),
		"--service-cluster-ip-range="+ServiceCIDR.String(), "--cluster-name=parley-local",
		// One node: faster reactions keep tests short; the HPA checks often.
		"--concurrent-deployment-syncs=5", "--concurrent-replicaset-syncs=5",
		"--horizontal-pod-autoscaler-sync-period=5s",
		"--horizontal-pod-autoscaler-downscale-stabilization=30s",
	); err != nil {
		return err
	}
	_, err = c.startComponent("kube-scheduler", filepath.Join(a, "kube-scheduler"),
		"--kubeconfig="+c.path("kube-scheduler.kubeconfig"),
		"--authentication-kubeconfig="+c.path("kube-scheduler.kubeconfig"),
		"--authorization-kubeconfig="+c.path("kube-scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false",
	)
	return err
}

func (c *Cluster) startNode(ctx context.Context) error {
	a := c.opts.Assets
	cfg, err := c.writeContainerdConfig()
	if err != nil {
		return err
	}
	if err := c.writeCNIConfig(); err != nil {
		return err
	}
	if _, err := c.startComponent("containerd", "containerd", "--config", cfg); err != nil {
		return err
	}
	if err := c.waitFor(ctx, 30*time.Second, "containerd", func(context.Context) (bool, error) {
		return c.ctr("version") == nil, nil
	}); err != nil {
		return err
	}
	if err := c.importImages(); err != nil {
		return err
	}
	kcfg, err := c.writeKubeletConfig()
	if err != nil {
		return err
	}
	pcfg, err := c.writeKubeProxyConfig()
	if err != nil {
		return err
	}
	if _, err := c.startComponent("kubelet", filepath.Join(a, "kubelet"),
		"--config="+kcfg, "--kubeconfig="+c.path("kubelet.kubeconfig"),
		"--root-dir="+c.path("kubelet"), "--cert-dir="+c.path("kubelet", "pki"),
		"--hostname-override="+NodeName, "--node-ip="+NodeIP.String(), "--v=1",
	); err != nil {
		return err
	}
	if _, err := c.startComponent("kube-proxy", filepath.Join(a, "kube-proxy"), "--config="+pcfg, "--v=1"); err != nil {
		return err
	}
	return c.waitFor(ctx, 90*time.Second, "node Ready and the default ServiceAccount", func(ctx context.Context) (bool, error) {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
				return err == nil, nil
			}
		}
		return false, nil
	})
}

// importImages builds the pause, CoreDNS, metrics-server and Parley images
// and imports them.
func (c *Cluster) importImages() error {
	pause, err := buildPause(c.opts.RepoRoot, c.path("images"))
	if err != nil {
		return err
	}
	a := c.opts.Assets
	builds := []imageBuild{
		staticImage(pauseImage, "pause", pause),
		staticImage(CoreDNSImage, "coredns", filepath.Join(a, "coredns")),
		staticImage(MetricsServerImage, "metrics-server", filepath.Join(a, "metrics-server")),
	}
	if c.opts.BinDir != "" {
		bins := map[string]string{}
		for _, p := range parleySpec().Programs {
			bins[p.Name] = filepath.Join(c.opts.BinDir, p.Name)
		}
		builds = append(builds, imageBuild{spec: parleySpec(), binaries: bins})
	}
	digests, err := c.buildAndImport(c.path("images"), builds)
	if err != nil {
		return err
	}
	for ref := range digests {
		if strings.HasPrefix(ref, "ghcr.io/parley-chat/parley:") {
			c.ParleyImage = ref
		}
	}
	return nil
}

//go:embed addons/coredns.yaml
var coreDNSManifest string

//go:embed addons/metrics-server.yaml
var metricsServerManifest string

func (c *Cluster) installAddons(ctx context.Context) error {
	vars := strings.NewReplacer(
		"${COREDNS_IMAGE}", CoreDNSImage, "${METRICS_SERVER_IMAGE}", MetricsServerImage,
		"${DNS_SERVICE_IP}", DNSServiceIP.String(), "${CLUSTER_DOMAIN}", ClusterDomain,
	)
	for _, m := range []string{coreDNSManifest, metricsServerManifest} {
		if err := c.Apply(ctx, vars.Replace(m)); err != nil {
			return err
		}
	}
	if err := c.waitFor(ctx, 90*time.Second, "CoreDNS ready", func(ctx context.Context) (bool, error) {
		d, err := c.Client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas >= 1, nil
	}); err != nil {
		return err
	}
	return c.waitFor(ctx, 2*time.Minute, "the metrics API (metrics-server)", func(ctx context.Context) (bool, error) {
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/nodes").DoRaw(ctx)
		return err == nil, nil
	})
}

// Apply applies YAML with kubectl (server-side), as a user would.
func (c *Cluster) Apply(ctx context.Context, yaml string) error {
	cmd := exec.CommandContext(ctx, c.Kubectl, "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-")
	cmd.Stdin = strings.NewReader(yaml)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl apply: %v: %s", err, out.String())
	}
	return nil
}

// Kubectl runs kubectl with the admin kubeconfig and returns its output.
func (c *Cluster) RunKubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// waitFor polls cond every 200ms until it holds, a component exits, or
// limit passes.
func (c *Cluster) waitFor(ctx context.Context, limit time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		for _, p := range c.components {
			if p.exited() {
				return fmt.Errorf("waiting for %s: %s exited; its log %s ends:\n%s", what, p.name, p.log, tail(p.log, 3000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops the node's pods and components and undoes every change to the
// host (leftovers.go); it removes the state directory when Start made it.
func (c *Cluster) Stop() {
	for _, p := range c.proxies {
		p.Close()
	}
	// The kubelet and kube-proxy first, so nothing restarts the containers
	// cleanUp kills; the control plane last.
	order := []string{"kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager", "containerd", "kube-apiserver", "etcd"}
	for _, name := range order {
		for _, p := range c.components {
			if p.name == name {
				p.stop(10 * time.Second)
			}
		}
	}
	if c.record != nil {
		if _, err := cleanUp(c.record); err != nil {
			c.opts.Log.Error("local cluster: cleanup", "err", err)
		}
	}
	if c.lock != nil {
		_ = c.lock.Close()
	}
	if c.removeDir && c.StateDir != "" {
		_ = os.RemoveAll(c.StateDir)
	}
}

// ServiceAddress is where a Service's port is reachable from this machine:
// its cluster IP (the host routes the Service range to the node).
func (c *Cluster) ServiceAddress(ctx context.Context, namespace, name string, port int32) (string, error) {
	svc, err := c.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if port == 0 && len(svc.Spec.Ports) > 0 {
		port = svc.Spec.Ports[0].Port
	}
	if _, err := netip.ParseAddr(svc.Spec.ClusterIP); err != nil {
		return "", fmt.Errorf("Service %s/%s has no cluster IP (%q)", namespace, name, svc.Spec.ClusterIP)
	}
	return net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(port))), nil
}

// PodAddress is where a pod's port is reachable from this machine (its pod IP).
func (c *Cluster) PodAddress(p *corev1.Pod, port int) (string, error) {
	if p.Status.PodIP == "" {
		return "", fmt.Errorf("pod %s/%s has no IP yet", p.Namespace, p.Name)
	}
	return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)), nil
}

// PodLog returns a container's output: the previous run's (when it
// restarted) followed by the current one's, as the kubelet keeps them.
func (c *Cluster) PodLog(ctx context.Context, namespace, pod, container string) (string, error) {
	var out strings.Builder
	prev, err := c.Client.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, Previous: true}).DoRaw(ctx)
	if err == nil {
		out.Write(prev)
	}
	cur, err := c.Client.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	out.Write(cur)
	return out.String(), err
}

// KillContainer sends sig to a container's main process through containerd,
// as the kernel's OOM killer or a crash would end it: the kubelet sees it
// exit and restarts it per the pod's policy.
func (c *Cluster) KillContainer(ctx context.Context, namespace, pod, container, signal string) error {
	p, err := c.Client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			id := strings.TrimPrefix(s.ContainerID, "containerd://")
			if id == "" || s.State.Running == nil {
				return fmt.Errorf("container %s of %s/%s is not running", container, namespace, pod)
			}
			return c.ctr("tasks", "kill", "--signal", signal, id)
		}
	}
	return fmt.Errorf("pod %s/%s has no container %s", namespace, pod, container)
}

// EnsureNamespace creates a namespace (with labels) if it does not exist and
// waits for its default ServiceAccount (admission refuses pods until the
// controller manager has created it).
func (c *Cluster) EnsureNamespace(ctx context.Context, name string, labels ...map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for _, l := range labels {
		for k, v := range l {
			ns.Labels[k] = v
		}
	}
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return c.waitFor(ctx, 30*time.Second, "namespace "+name+"'s default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// RestrictedLabels enforce Pod Security "restricted" on a namespace, as a
// platform team does for tenants.
var RestrictedLabels = map[string]string{
	"pod-security.kubernetes.io/enforce":         "restricted",
	"pod-security.kubernetes.io/enforce-version": "latest",
	"pod-security.kubernetes.io/warn":            "restricted",
}

// DefaultAssets returns the directory hack/control-plane.sh fills, building
// what is missing (once per machine): KUBEBUILDER_ASSETS when it already has
// everything the node needs.
func DefaultAssets(repoRoot string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" && checkAssets(dir) == nil {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "control-plane.sh"), "--with-kcm", "--with-kubectl", "--with-node")
	cmd.Dir = repoRoot
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/control-plane.sh --with-kcm --with-kubectl --with-node: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func checkAssets(dir string) error {
	for _, b := range []string{"kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "coredns", "metrics-server"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return err
		}
	}
	return nil
}

// DumpLogs prints the last tailBytes of every log under dir/logs to stderr, so
// a failed test run shows what the control plane, operator and pods said.
func DumpLogs(dir string, tailBytes int) {
	_ = filepath.Walk(filepath.Join(dir, "logs"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		fmt.Fprintf(os.Stderr, "==== %s (tail)\n%s\n", p, tail(p, tailBytes))
		return nil
	})
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

func intOrPort(p int) intstr.IntOrString { return intstr.FromInt32(int32(p)) }
