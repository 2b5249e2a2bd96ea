// Package framework puts Parley on a local cluster the way a user would on a
// real one: the CRDs from config/crd/bases, the operator (bin/manager) running
// against the cluster's kubeconfig, admin Secrets for a RabbitMQ and a
// PostgreSQL, a ChatCluster applied and watched until Ready. `make demo` and
// the end-to-end tests both stand on it.
package framework

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
	// Assets holds the cluster's binaries (hack/control-plane.sh --with-node).
	Assets string
	// BinDir holds manager and chatserver: they become the image the
	// operator and the chat servers run.
	BinDir string
	// Helm is the helm binary (`make helm`).
	Helm string
	// StateDir for the cluster (empty: a temporary directory).
	StateDir string
	// AMQPURL, AMQPManagementURL and PostgresURL are the services on this
	// machine; pods reach them through Services in PlatformNamespace.
	AMQPURL, AMQPManagementURL, PostgresURL string
	// LockWait bounds the wait for another local cluster to stop (cluster.Options).
	LockWait time.Duration
	// OperatorArgs are extra flags for the operator (the chart's operator.extraArgs).
	OperatorArgs []string
	// Log receives the harness's own logs.
	Log *slog.Logger
}

// Env is a local cluster with Parley's operator installed by its Helm chart.
type Env struct {
	*cluster.Cluster
	// Client reads and writes Parley's and Kubernetes' objects.
	Client client.Client
	// RabbitMQ, RabbitMQManagement and PostgreSQL are this machine's servers
	// as pods reach them; RabbitMQ.Proxy.Disable() takes the broker away.
	RabbitMQ, RabbitMQManagement, PostgreSQL *cluster.HostService
	opts                                     Options
}

// OperatorNamespace is where the chart installs the operator.
const OperatorNamespace = "parley-system"

// operatorRelease is the Helm release name.
const operatorRelease = "parley"

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

// Start starts the local cluster, makes this machine's RabbitMQ and
// PostgreSQL reachable from pods, and installs the operator with the Helm
// chart from the image built from BinDir.
func Start(ctx context.Context, opts Options) (env *Env, err error) {
	lc, err := cluster.Start(ctx, cluster.Options{
		Assets: opts.Assets, RepoRoot: opts.RepoRoot, BinDir: opts.BinDir, StateDir: opts.StateDir, Log: opts.Log, LockWait: opts.LockWait,
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
	if err := env.exposeServices(ctx); err != nil {
		return env, err
	}
	if err := env.InstallOperator(ctx); err != nil {
		return env, err
	}
	return env, nil
}

// exposeServices creates, in PlatformNamespace, the Services pods use for
// this machine's RabbitMQ (AMQP and management API) and PostgreSQL.
func (e *Env) exposeServices(ctx context.Context) error {
	if err := e.EnsureNamespace(ctx, PlatformNamespace, cluster.RestrictedLabels); err != nil {
		return err
	}
	for _, s := range []struct {
		target **cluster.HostService
		name   string
		url    string
		port   int32
	}{
		{&e.RabbitMQ, "rabbitmq", e.opts.AMQPURL, 5672},
		{&e.RabbitMQManagement, "rabbitmq-management", e.opts.AMQPManagementURL, 15672},
		{&e.PostgreSQL, "postgresql", e.opts.PostgresURL, 5432},
	} {
		hp, err := HostPort(s.url)
		if err != nil {
			return err
		}
		if *s.target, err = e.ExposeHostService(ctx, PlatformNamespace, s.name, s.port, hp); err != nil {
			return fmt.Errorf("Service %s for %s: %w", s.name, hp, err)
		}
	}
	return nil
}

// InClusterURL is a service URL of this machine (AMQPURL, ...) as pods
// reach it: its host replaced by svc's cluster DNS name.
func InClusterURL(raw string, svc *cluster.HostService) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Host = svc.Address
	return u.String()
}

// InstallOperator installs charts/parley with the image built from BinDir
// into OperatorNamespace (Pod Security restricted) and waits until the
// operator's Deployment is available.
func (e *Env) InstallOperator(ctx context.Context) error {
	if err := e.EnsureNamespace(ctx, OperatorNamespace, cluster.RestrictedLabels); err != nil {
		return err
	}
	repo, tag, _ := strings.Cut(e.ParleyImage, ":")
	args := []string{"upgrade", "--install", operatorRelease, filepath.Join(e.opts.RepoRoot, "charts", "parley"),
		"--kubeconfig", e.Kubeconfig, "--namespace", OperatorNamespace, "--wait", "--timeout", "3m",
		"--set", "image.repository=" + repo, "--set", "image.tag=" + tag, "--set", "image.pullPolicy=IfNotPresent",
		// One replica: leader election on a single node only adds a wait.
		"--set", "replicaCount=1", "--set", "operator.leaderElection.enabled=false",
		// Quick requeues on a single machine; the default is for real clusters.
		"--set", "operator.resyncPeriod=30s",
		"--set", "rbac.backendNamespaces={" + PlatformNamespace + "}",
	}
	for i, a := range e.opts.OperatorArgs {
		args = append(args, "--set", fmt.Sprintf("operator.extraArgs[%d]=%s", i, a))
	}
	cmd := exec.CommandContext(ctx, e.opts.Helm, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm %s: %v\n%s\noperator log:\n%s", strings.Join(args[:3], " "), err, out, e.OperatorLog())
	}
	return nil
}

// UninstallOperator removes the Helm release (the CRDs stay, as the chart
// keeps them) and waits until its pods are gone.
func (e *Env) UninstallOperator(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, e.opts.Helm, "uninstall", operatorRelease, "--kubeconfig", e.Kubeconfig,
		"--namespace", OperatorNamespace, "--wait", "--timeout", "2m").CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm uninstall: %v\n%s", err, out)
	}
	return nil
}

// RepoRoot is Parley's repository.
func (e *Env) RepoRoot() string { return e.opts.RepoRoot }

// OperatorLog is the operator's output so far (every pod of the release).
func (e *Env) OperatorLog() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := &corev1.PodList{}
	if err := e.Client.List(ctx, pods, client.InNamespace(OperatorNamespace)); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			log, err := e.PodLog(ctx, p.Namespace, p.Name, c.Name)
			fmt.Fprintf(&b, "==== %s/%s %s\n%s", p.Name, c.Name, errString(err), log)
		}
	}
	return b.String()
}

func errString(err error) string {
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return ""
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
		case "http":
			port = "80"
		default:
			return "", fmt.Errorf("service URL %s has no port", u.Redacted())
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// Stop saves the operator's log under the state directory, then stops the
// cluster (every pod with it).
func (e *Env) Stop() {
	if e.Cluster == nil {
		return
	}
	if e.Client != nil {
		_ = os.WriteFile(filepath.Join(e.StateDir, "logs", "operator.log"), []byte(e.OperatorLog()), 0o644)
	}
	e.Cluster.Stop()
}

// PlatformNamespace holds the backends' admin Secrets in the local cluster,
// as a platform team's namespace would: tenants have no access to it.
const PlatformNamespace = "parley-platform"

// Backends creates, as a platform team would, the admin connection Secrets
// in PlatformNamespace and two ChatBackends (RabbitMQ, PostgreSQL) for this
// machine's servers (through the Services exposeServices made), admitting the namespace tenantNS by its name label. It
// returns their names (derived from tenantNS, so tests do not share them).
func (e *Env) Backends(ctx context.Context, tenantNS string) (rabbitmq, postgres string, err error) {
	amqpURL := InClusterURL(e.opts.AMQPURL, e.RabbitMQ)
	managementURL := InClusterURL(e.opts.AMQPManagementURL, e.RabbitMQManagement)
	postgresURL := InClusterURL(e.opts.PostgresURL, e.PostgreSQL)
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

// ReadyEndpoints counts the ready endpoints of a Service's first port, from
// its EndpointSlices (what kube-proxy routes to).
func (e *Env) ReadyEndpoints(ctx context.Context, namespace, service string) (int, error) {
	slices := &discoveryv1.EndpointSliceList{}
	if err := e.Client.List(ctx, slices, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range slices.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				n += len(ep.Addresses)
			}
		}
	}
	return n, nil
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

// ServiceURL is the ChatCluster's public address (its Service's cluster IP),
// e.g. "http://127.a.b.c:80" (its WebSocket is at /connection/websocket).
func (e *Env) ServiceURL(ctx context.Context, namespace, name string) (string, error) {
	addr, err := e.ServiceAddress(ctx, namespace, name, 0)
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// ServiceAdminURL is the ChatCluster's admin address (its Service's cluster IP:
// /api/*, /metrics).
func (e *Env) ServiceAdminURL(ctx context.Context, namespace, name string) (string, error) {
	addr, err := e.ServiceAddress(ctx, namespace, name, AdminPort)
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// PodURL is one pod's public address (pod IP), bypassing the Service.
func (e *Env) PodURL(p *corev1.Pod) (string, error) {
	return e.podPortURL(p, ChatPort, "http", "https")
}

// PodAdminURL is one pod's admin address (/api/*, /metrics).
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

// CreateNamespace creates a tenant namespace, Pod Security "restricted"
// enforced, and waits for its default ServiceAccount.
func (e *Env) CreateNamespace(ctx context.Context, name string) error {
	return e.EnsureNamespace(ctx, name, cluster.RestrictedLabels)
}

// DeleteNamespace deletes a namespace without waiting.
func (e *Env) DeleteNamespace(ctx context.Context, name string) {
	_ = e.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// HelmBinary is the helm `make helm` builds (bin/helm-<version>), or HELM.
func HelmBinary(repoRoot string) (string, error) {
	if h := os.Getenv("HELM"); h != "" {
		return h, nil
	}
	matches, _ := filepath.Glob(filepath.Join(repoRoot, "bin", "helm-v*"))
	if len(matches) == 0 {
		return "", fmt.Errorf("no helm in %s/bin: run `make helm`", repoRoot)
	}
	sort.Strings(matches)
	return matches[len(matches)-1], nil
}
