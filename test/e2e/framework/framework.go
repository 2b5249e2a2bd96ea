// Package framework puts Parley on a local cluster the way a user would on a
// real one: the CRDs from config/crd/bases, the operator (bin/manager) running
// against the cluster's kubeconfig, admin Secrets for a RabbitMQ and a
// PostgreSQL, a ChatCluster applied and watched until Ready. `make demo` and
// the end-to-end tests both stand on it.
package framework

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	chatv1alpha1 "github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/parleycli"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/test/e2e/cluster"
)

// Options configure Start.
type Options struct {
	RepoRoot string
	// Assets holds etcd, kube-apiserver and kube-controller-manager.
	Assets string
	// BinDir holds manager and chatserver.
	BinDir string
	// StateDir for the cluster (empty: a temporary directory).
	StateDir string
	// AMQPURL and PostgresURL are the services on this machine; their
	// addresses are made reachable from inside the pods.
	AMQPURL, PostgresURL string
	// ExtraHostEndpoints are more host addresses pods may reach (a test's proxy).
	ExtraHostEndpoints []string
	// Log receives the harness's own logs.
	Log *slog.Logger
}

// Env is a local cluster with Parley's operator running.
type Env struct {
	*cluster.Cluster
	// Client reads and writes Parley's and Kubernetes' objects.
	Client client.Client
	opts   Options

	operator     *exec.Cmd
	operatorDone <-chan struct{}
	operatorLog  string
}

// Scheme knows Kubernetes' and Parley's types.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := chatv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Start starts the local cluster, installs the CRDs and runs the operator.
func Start(ctx context.Context, opts Options) (env *Env, err error) {
	var endpoints []string
	for _, u := range []string{opts.AMQPURL, opts.PostgresURL} {
		hp, err := HostPort(u)
		if err != nil {
			return nil, err
		}
		endpoints = append(endpoints, hp)
	}
	endpoints = append(endpoints, opts.ExtraHostEndpoints...)
	lc, err := cluster.Start(ctx, cluster.Options{
		Assets: opts.Assets, BinDir: opts.BinDir, StateDir: opts.StateDir,
		HostEndpoints: endpoints, Log: opts.Log,
	})
	if err != nil {
		if lc != nil {
			lc.Stop()
		}
		return nil, err
	}
	env = &Env{Cluster: lc, opts: opts}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	if env.Client, err = client.New(lc.Config, client.Options{Scheme: Scheme()}); err != nil {
		return env, err
	}
	if _, err := envtest.InstallCRDs(lc.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(opts.RepoRoot, "config", "crd", "bases")}, ErrorIfPathMissing: true, Scheme: Scheme(),
	}); err != nil {
		return env, fmt.Errorf("install CRDs: %w", err)
	}
	if err := env.startOperator(ctx); err != nil {
		return env, err
	}
	return env, nil
}

// HostPort extracts host:port from a service URL, with the scheme's default port.
func HostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("service URL: %w", err)
	}
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "amqp":
			port = "5672"
		case "postgres", "postgresql":
			port = "5432"
		default:
			return "", fmt.Errorf("service URL %s has no port", u.Redacted())
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

func (e *Env) startOperator(ctx context.Context) error {
	probe, err := freePort()
	if err != nil {
		return err
	}
	e.operatorLog = filepath.Join(e.StateDir, "logs", "operator.log")
	log, err := os.OpenFile(e.operatorLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	e.operator = exec.Command(filepath.Join(e.opts.BinDir, "manager"),
		"--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(probe),
		// Quick requeues on a single machine; the default is for real clusters.
		"--resync-period=30s",
	)
	e.operator.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	e.operator.Stdout, e.operator.Stderr = log, log
	// Its own process group: a terminal's Ctrl-C goes to the demo's whole
	// foreground group, and the operator must outlive it long enough to delete
	// the ChatCluster's exchanges and database during the demo's cleanup.
	e.operator.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if e.operatorDone, err = cluster.StartTied(e.operator); err != nil {
		return fmt.Errorf("start the operator (%s): %w", e.operator.Path, err)
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-e.operatorDone:
			return fmt.Errorf("the operator exited; see %s:\n%s", e.operatorLog, tail(e.operatorLog, 2000))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", probe)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the operator is not ready after a minute; see %s", e.operatorLog)
}

// OperatorLog is the operator's output so far.
func (e *Env) OperatorLog() string { return tail(e.operatorLog, 1<<20) }

// Stop stops the operator (SIGTERM), then the cluster.
func (e *Env) Stop() {
	if e.operator != nil && e.operator.Process != nil {
		_ = e.operator.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.operatorDone:
		case <-time.After(15 * time.Second):
			_ = e.operator.Process.Kill()
			<-e.operatorDone
		}
	}
	if e.Cluster != nil {
		e.Cluster.Stop()
	}
}

// PlatformNamespace holds the backends' admin Secrets in the local cluster,
// as a platform team's namespace would: tenants have no access to it.
const PlatformNamespace = "parley-platform"

// Backends creates, as a platform team would, the admin connection Secrets
// in PlatformNamespace and two ChatBackends (RabbitMQ, PostgreSQL) for this
// machine's servers, admitting the namespace tenantNS by its name label. It
// returns their names (derived from tenantNS, so tests do not share them).
func (e *Env) Backends(ctx context.Context, tenantNS, amqpURL, managementURL, postgresURL string) (rabbitmq, postgres string, err error) {
	if err := e.CreateNamespace(ctx, PlatformNamespace); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", "", err
	}
	rabbitmq, postgres = backendName("rabbitmq", tenantNS), backendName("postgres", tenantNS)
	secrets := map[string]map[string]string{
		rabbitmq: {"uri": amqpURL, "managementURI": managementURL},
		postgres: {"uri": postgresURL},
	}
	for name, data := range secrets {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-admin", Namespace: PlatformNamespace}, StringData: data}
		if err := e.Client.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", "", fmt.Errorf("create Secret %s: %w", s.Name, err)
		}
	}
	allowed := chatv1alpha1.AllowedNamespaces{From: chatv1alpha1.NamespacesFromSelector, Selector: &metav1.LabelSelector{
		MatchLabels: map[string]string{corev1.LabelMetadataName: tenantNS}}}
	for _, b := range []*chatv1alpha1.ChatBackend{
		{ObjectMeta: metav1.ObjectMeta{Name: rabbitmq}, Spec: chatv1alpha1.ChatBackendSpec{AllowedNamespaces: allowed,
			RabbitMQ: &chatv1alpha1.RabbitMQBackend{ConnectionSecret: &chatv1alpha1.ObjectReference{Namespace: PlatformNamespace, Name: rabbitmq + "-admin"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: postgres}, Spec: chatv1alpha1.ChatBackendSpec{AllowedNamespaces: allowed,
			PostgreSQL: &chatv1alpha1.PostgreSQLBackend{AdminSecretRef: &chatv1alpha1.NamespacedSecretKeyReference{
				Namespace: PlatformNamespace, Name: postgres + "-admin", Key: "uri"}}}},
	} {
		if err := e.Client.Create(ctx, b); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", "", fmt.Errorf("create ChatBackend %s: %w", b.Name, err)
		}
	}
	return rabbitmq, postgres, nil
}

// DeleteBackends deletes the ChatBackends Backends made for tenantNS (they
// go once no ChatCluster uses them).
func (e *Env) DeleteBackends(ctx context.Context, tenantNS string) {
	for _, kind := range []string{"rabbitmq", "postgres"} {
		_ = e.Client.Delete(ctx, &chatv1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: backendName(kind, tenantNS)}})
	}
}

func backendName(kind, tenantNS string) string {
	n := kind + "-" + tenantNS
	if len(n) > 63 {
		n = strings.TrimRight(n[:63], "-")
	}
	return n
}

// LoadSample reads a ChatCluster from config/samples.
func (e *Env) LoadSample(file string) (*chatv1alpha1.ChatCluster, error) {
	data, err := os.ReadFile(filepath.Join(e.opts.RepoRoot, "config", "samples", file))
	if err != nil {
		return nil, err
	}
	cc := &chatv1alpha1.ChatCluster{}
	if err := yaml.UnmarshalStrict(data, cc); err != nil {
		return nil, fmt.Errorf("sample %s: %w", file, err)
	}
	return cc, nil
}

// WithBackends points a ChatCluster at the ChatBackends Backends created.
func WithBackends(cc *chatv1alpha1.ChatCluster, rabbitmq, postgres string) {
	cc.Spec.Broker = &chatv1alpha1.BrokerSpec{Backend: rabbitmq, DeletionPolicy: "Delete"}
	cc.Spec.Database = &chatv1alpha1.DatabaseSpec{Backend: postgres, ReclaimPolicy: "Delete"}
}

// Progress is one line of what a ChatCluster is doing.
type Progress func(line string)

// WaitReady waits until the ChatCluster's Ready condition is True for its
// current generation, reporting each change of its status and pods.
func (e *Env) WaitReady(ctx context.Context, namespace, name string, progress Progress) (*chatv1alpha1.ChatCluster, error) {
	last := ""
	for {
		cc := &chatv1alpha1.ChatCluster{}
		err := e.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cc)
		line := ""
		if err != nil {
			line = "ChatCluster: " + err.Error()
		} else {
			line = e.describe(ctx, cc)
			ready := meta.FindStatusCondition(cc.Status.Conditions, "Ready")
			if ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == cc.Generation && cc.Status.ObservedGeneration == cc.Generation {
				if progress != nil && line != last {
					progress(line)
				}
				return cc, nil
			}
		}
		if progress != nil && line != last {
			progress(line)
			last = line
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ChatCluster %s/%s not Ready: %s: %w", namespace, name, line, ctx.Err())
		case <-e.operatorDone:
			return nil, fmt.Errorf("the operator exited; see %s", e.operatorLog)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// describe summarises a ChatCluster's conditions and its pods on one line.
func (e *Env) describe(ctx context.Context, cc *chatv1alpha1.ChatCluster) string {
	var conds []string
	for _, c := range cc.Status.Conditions {
		s := c.Type + "=" + string(c.Status)
		if c.Status != metav1.ConditionTrue && c.Reason != "" {
			s += "(" + c.Reason + ")"
		}
		conds = append(conds, s)
	}
	sort.Strings(conds)
	pods, _ := e.Pods(ctx, cc.Namespace, cc.Name)
	var ps []string
	for _, p := range pods {
		ps = append(ps, podState(&p))
	}
	sort.Strings(ps)
	return fmt.Sprintf("ready %d/%d  %s  pods: %s", cc.Status.ReadyReplicas, replicasOf(cc), strings.Join(conds, " "), strings.Join(ps, ", "))
}

func replicasOf(cc *chatv1alpha1.ChatCluster) int32 {
	if cc.Spec.Replicas != nil {
		return *cc.Spec.Replicas
	}
	return 1
}

func podState(p *corev1.Pod) string {
	state := string(p.Status.Phase)
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Waiting != nil:
			state = c.State.Waiting.Reason
		case c.State.Terminated != nil:
			state = c.State.Terminated.Reason
		case c.Ready:
			state = "Ready"
		case c.State.Running != nil:
			state = "Running"
		}
	}
	if p.DeletionTimestamp != nil {
		state = "Terminating"
	}
	name := p.Name
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		name = name[i+1:]
	}
	return name + "=" + state
}

// Pods lists a ChatCluster's chat server pods.
func (e *Env) Pods(ctx context.Context, namespace, name string) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	err := e.Client.List(ctx, list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(naming.SelectorLabels(name))})
	return list.Items, err
}

// ReadyPods lists the pods that are Ready and not terminating.
func (e *Env) ReadyPods(ctx context.Context, namespace, name string) ([]corev1.Pod, error) {
	pods, err := e.Pods(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ChatPort is the chat server's public container port (WebSocket, web page);
// AdminPort its admin one (HTTP API, metrics).
const (
	ChatPort  = resource.ChatPort
	AdminPort = resource.AdminPort
)

// ServiceURL is the ChatCluster's public address through the service proxy,
// e.g. "http://127.a.b.c:80" (its WebSocket is at /connection/websocket).
func (e *Env) ServiceURL(ctx context.Context, namespace, name string) (string, error) {
	addr, err := e.ServiceAddress(ctx, namespace, name, 0)
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// ServiceAdminURL is the ChatCluster's admin address through the service
// proxy (/api/*, /metrics).
func (e *Env) ServiceAdminURL(ctx context.Context, namespace, name string) (string, error) {
	addr, err := e.ServiceAddress(ctx, namespace, name, AdminPort)
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// PodURL is one pod's public address, bypassing the proxy.
func (e *Env) PodURL(p *corev1.Pod) (string, error) {
	return e.podPortURL(p, ChatPort, "http", "https")
}

// PodAdminURL is one pod's admin address (/api/*, /metrics), bypassing the proxy.
func (e *Env) PodAdminURL(p *corev1.Pod) (string, error) {
	return e.podPortURL(p, AdminPort, resource.AdminPortName)
}

// podPortURL finds the container port by one of names (the pod's own spec
// wins over the default, so an override that moves a port is followed).
func (e *Env) podPortURL(p *corev1.Pod, port int32, names ...string) (string, error) {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			for _, n := range names {
				if cp.Name == n {
					port = cp.ContainerPort
				}
			}
		}
	}
	addr, err := e.PodAddress(p, int(port))
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// WebSocketURL turns an http:// address into the chat server's WebSocket endpoint.
func WebSocketURL(httpURL string) string {
	return "ws" + strings.TrimPrefix(httpURL, "http") + "/connection/websocket"
}

// Token mints a connection token for user with the ChatCluster's current
// JWT key, as `parley token --cluster` does.
func (e *Env) Token(ctx context.Context, namespace, name, user string, ttl time.Duration) (string, error) {
	s := &corev1.Secret{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: naming.JWTSecretName(name)}, s); err != nil {
		return "", fmt.Errorf("JWT Secret: %w", err)
	}
	key := strings.TrimSpace(string(s.Data[naming.JWTCurrentKey]))
	if key == "" {
		return "", fmt.Errorf("JWT Secret %s has no %q key", s.Name, naming.JWTCurrentKey)
	}
	return parleycli.Mint([]byte(key), parleycli.TokenRequest{User: user, TTL: ttl}, time.Now())
}

// CreateNamespace creates a namespace and waits for its default ServiceAccount.
func (e *Env) CreateNamespace(ctx context.Context, name string) error {
	return e.EnsureNamespace(ctx, name)
}

// DeleteNamespace deletes a namespace without waiting.
func (e *Env) DeleteNamespace(ctx context.Context, name string) {
	_ = e.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > int64(n) {
		_, _ = f.Seek(st.Size()-int64(n), io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
