// Package cluster is Parley's local Kubernetes cluster for development, demos
// and end-to-end tests on a machine without a container runtime: the real
// control plane (etcd, kube-apiserver and kube-controller-manager v1.37.2,
// built by hack/control-plane.sh), one node run by nodeagent, which executes
// Parley images as local processes of the binaries built from this
// repository, and serviceproxy in place of kube-proxy. Production runs on real
// Kubernetes; docs/local-cluster.md says what this harness does not emulate.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/parley-chat/parley/test/e2e/cluster/localnet"
	"github.com/parley-chat/parley/test/e2e/cluster/nodeagent"
	"github.com/parley-chat/parley/test/e2e/cluster/serviceproxy"
)

// Options configure a local cluster.
type Options struct {
	// Assets is the directory with etcd, kube-apiserver and
	// kube-controller-manager (`hack/control-plane.sh --with-kcm`).
	Assets string
	// BinDir holds Parley's binaries (`make build`), run for Parley images.
	BinDir string
	// StateDir holds everything the cluster writes (etcd data, certificates,
	// pods, logs). Empty: a temporary directory removed by Stop.
	StateDir string
	// HostEndpoints are host addresses reachable from inside pods at the
	// same address, e.g. "127.0.0.1:5672" for the machine's RabbitMQ.
	HostEndpoints []string
	// Images overrides which images the node runs (default: Parley's, from BinDir).
	Images nodeagent.Images
	// Log receives the node agent's and proxy's logs (default: discarded).
	Log *slog.Logger
}

// Cluster is a running local cluster.
type Cluster struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is the path of an admin kubeconfig file for other programs.
	Kubeconfig string
	// Plan is the cluster's address plan.
	Plan  localnet.Plan
	Agent *nodeagent.Agent
	Proxy *serviceproxy.Proxy
	// StateDir is where the cluster keeps its files; pod logs are under logs/.
	StateDir string

	env       *envtest.Environment
	kcm       *exec.Cmd
	kcmDone   <-chan struct{}
	cancel    context.CancelFunc
	done      chan struct{}
	removeDir bool
	logFiles  []*os.File
	reaper    *reaper
}

// Start brings up the control plane, the controller manager, the node and
// the service proxy, and returns when the node is Ready and the controllers
// are working.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Assets == "" {
		return nil, errors.New("cluster: Options.Assets is required (run hack/control-plane.sh --with-kcm)")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(opts.Assets, b)); err != nil {
			return nil, fmt.Errorf("cluster: %s missing in %s (run hack/control-plane.sh --with-kcm): %w", b, opts.Assets, err)
		}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c = &Cluster{Plan: localnet.NewPlan(), done: make(chan struct{})}
	if opts.StateDir == "" {
		dir, err := os.MkdirTemp("", "parley-cluster-")
		if err != nil {
			return nil, err
		}
		opts.StateDir, c.removeDir = dir, true
	}
	c.StateDir = opts.StateDir
	if c.reaper, err = startReaper(); err != nil {
		return nil, fmt.Errorf("start process reaper: %w", err)
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for _, d := range []string{"etcd", "apiserver", "logs"} {
		if err := os.MkdirAll(filepath.Join(opts.StateDir, d), 0o755); err != nil {
			return c, err
		}
	}
	apiLog, err := c.logFile("apiserver.log")
	if err != nil {
		return c, err
	}
	etcdLog, err := c.logFile("etcd.log")
	if err != nil {
		return c, err
	}

	api := &envtest.APIServer{CertDir: filepath.Join(opts.StateDir, "apiserver"), Out: apiLog, Err: apiLog}
	api.Configure().
		Set("service-cluster-ip-range", c.Plan.Services.String()).
		// envtest disables the ServiceAccount admission plugin because it runs
		// no controllers; this cluster runs them, so pods get their
		// ServiceAccount as on any cluster.
		Disable("disable-admission-plugins")
	c.env = &envtest.Environment{
		BinaryAssetsDirectory: opts.Assets,
		ControlPlane: envtest.ControlPlane{
			APIServer: api,
			Etcd:      &envtest.Etcd{DataDir: filepath.Join(opts.StateDir, "etcd"), Out: etcdLog, Err: etcdLog},
		},
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	cfg, err := c.env.Start()
	c.reaper.watchChildren(opts.StateDir)
	if err != nil {
		return c, fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return c, err
	}
	admin, err := c.env.ControlPlane.AddUser(envtest.User{Name: "parley-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return c, err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return c, err
	}
	c.Kubeconfig = filepath.Join(opts.StateDir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		return c, err
	}
	if err := c.startControllerManager(opts); err != nil {
		return c, err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	images := opts.Images
	if images == nil {
		images = nodeagent.ParleyImages{Repositories: nodeagent.DefaultRepositories, BinDir: opts.BinDir}
	}
	c.Agent, err = nodeagent.New(nodeagent.Config{
		Client: c.Client, PodCIDR: c.Plan.Pods, StateDir: opts.StateDir, Images: images,
		HostEndpoints: opts.HostEndpoints, Log: opts.Log,
	})
	if err != nil {
		return c, err
	}
	c.Proxy = serviceproxy.New(c.Client, opts.Log)
	errc := make(chan error, 2)
	go func() { errc <- c.Agent.Run(runCtx) }()
	go func() { errc <- c.Proxy.Run(runCtx) }()
	go func() {
		var errs []error
		for range 2 {
			if err := <-errc; err != nil {
				errs = append(errs, err)
				opts.Log.Error("local cluster component stopped", "err", err)
			}
		}
		close(c.done)
	}()
	if err := c.waitReady(ctx); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(c.StateDir, "logs", name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		c.logFiles = append(c.logFiles, f)
	}
	return f, err
}

func (c *Cluster) startControllerManager(opts Options) error {
	dir := filepath.Join(opts.StateDir, "controller-manager")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	user, err := c.env.ControlPlane.AddUser(envtest.User{Name: "system:kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, c.Config.CAData, 0o644); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	log, err := c.logFile("kube-controller-manager.log")
	if err != nil {
		return err
	}
	c.kcm = exec.Command(filepath.Join(opts.Assets, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+dir,
		"--root-ca-file="+ca,
		"--use-service-account-credentials=false",
		"--cluster-name=parley-local",
		"--controllers=*",
		// One node: there is nothing to balance, and faster reactions keep tests short.
		"--concurrent-deployment-syncs=5", "--concurrent-replicaset-syncs=5",
		"--v=1",
	)
	c.kcm.Stdout, c.kcm.Stderr = log, log
	c.kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if c.kcmDone, err = StartTied(c.kcm); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	// Healthy when its secure port answers /healthz.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed serving cert of a local process
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-c.kcmDone:
			return fmt.Errorf("kube-controller-manager exited; see %s", log.Name())
		default:
		}
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-controller-manager not healthy after a minute; see %s", log.Name())
}

// waitReady waits for the node to be Ready and the service account
// controller to have created the default ServiceAccount (pods need it).
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, c.Agent.NodeName(), metav1.GetOptions{})
		ready := false
		if err == nil {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready = true
				}
			}
		}
		_, saErr := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if ready && saErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("local cluster not ready (node ready=%v, default service account: %v): %w", ready, saErr, ctx.Err())
		case <-c.done:
			return errors.New("local cluster: node agent or service proxy stopped during start")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops the node (every container gets SIGTERM, then SIGKILL after
// 5s), the controller manager and the control plane, and removes the state
// directory when Start created it.
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel()
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
		}
	}
	if c.kcm != nil && c.kcm.Process != nil {
		_ = c.kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.kcmDone:
		case <-time.After(10 * time.Second):
			_ = c.kcm.Process.Kill()
			<-c.kcmDone
		}
	}
	if c.env != nil {
		_ = c.env.Stop()
	}
	c.reaper.release()
	for _, f := range c.logFiles {
		_ = f.Close()
	}
	if c.removeDir {
		_ = os.RemoveAll(c.StateDir)
	}
}

// ServiceAddress is where a Service's port is reachable on this machine
// (through the service proxy).
func (c *Cluster) ServiceAddress(ctx context.Context, namespace, name string, port int32) (string, error) {
	svc, err := c.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if port == 0 && len(svc.Spec.Ports) > 0 {
		port = svc.Spec.Ports[0].Port
	}
	return serviceproxy.Address(svc, port)
}

// PodAddress is where a pod's port is reachable on this machine.
func (c *Cluster) PodAddress(p *corev1.Pod, port int) (string, error) {
	return nodeagent.PodAddress(p, port)
}

// PodLog returns the output of a pod's container (all its runs).
func (c *Cluster) PodLog(namespace, pod, container string) (string, error) {
	data, err := os.ReadFile(c.Agent.LogPath(namespace, pod, container))
	return string(data), err
}

// EnsureNamespace creates a namespace if it does not exist and waits for
// its default ServiceAccount (admission refuses pods until the controller
// manager has created it).
func (c *Cluster) EnsureNamespace(ctx context.Context, name string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s: default service account: %w", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StartTied starts cmd so that it gets SIGKILL if this process dies. Linux
// delivers the parent-death signal when the thread that forked the child
// exits, and the Go runtime discards threads (the node agent's namespace
// work does), so the fork happens on a thread locked for the child's life.
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DefaultAssets returns the control-plane directory: KUBEBUILDER_ASSETS when
// it has kube-controller-manager, else the cache hack/control-plane.sh
// fills, building kube-controller-manager there when it is missing.
func DefaultAssets(repoRoot string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "kube-controller-manager")); err == nil {
			return dir, nil
		}
	}
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "control-plane.sh"), "--with-kcm")
	cmd.Dir = repoRoot
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/control-plane.sh --with-kcm: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// DumpLogs prints the last tailBytes of every log under dir/logs to stderr, so
// a failed test run shows what the control plane, operator and pods said.
func DumpLogs(dir string, tailBytes int) {
	_ = filepath.Walk(filepath.Join(dir, "logs"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(p)
		if len(data) > tailBytes {
			data = data[len(data)-tailBytes:]
		}
		fmt.Fprintf(os.Stderr, "==== %s (tail)\n%s\n", p, data)
		return nil
	})
}
