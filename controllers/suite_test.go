package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"go.uber.org/zap/zapcore"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/testenv"
)

// testImage is the operator's default chat server image in these tests.
const testImage = "example.org/parley:test"

// suite is one control plane and one running manager, shared by the
// operator's integration tests (each works in its own namespace).
type suite struct {
	env *envtest.Environment
	// c talks to the API server directly (no cache) as an administrator.
	c client.Client
	// requests logs every request the manager makes to the API server.
	requests *requestLog
}

// TestOperator starts a real API server, installs the CRDs, runs the manager
// as a user holding only the ClusterRole generated from the RBAC markers, and
// runs the scenarios against it in parallel.
func TestOperator(t *testing.T) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(false), zap.Level(zapLevel())))
	env, cfg := testenv.StartControlPlane(t)
	scheme := controllers.NewScheme()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("testdata", "servicemonitor-crd.yaml")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install ServiceMonitor CRD: %v", err)
	}

	mgrCfg := rest.CopyConfig(operatorUser(t, env, c))
	// The scenarios run side by side: client-go's default 5 requests per
	// second would queue one scenario's writes (events above all) behind another's.
	mgrCfg.QPS, mgrCfg.Burst = 500, 1000
	s := &suite{env: env, c: c, requests: &requestLog{}}
	mgrCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &recordingTransport{next: rt, log: s.requests} }

	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(nil),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.ChatClusterReconciler{Options: controllers.Options{
		DefaultImage: testImage, ClusterDomain: "cluster.local", MaxConcurrentReconciles: 4,
	}, Provisioning: provisioningForTests()}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	br := &controllers.ChatBackendReconciler{Options: r.Options, CallTimeout: 10 * time.Second, ProbeInterval: 2 * time.Second}
	if err := br.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, s)
		})
	}
}

type scenario struct {
	name string
	run  func(t *testing.T, s *suite)
}

// scenarios are registered by the *_test.go files of this package.
var scenarios []scenario

func register(name string, run func(t *testing.T, s *suite)) {
	scenarios = append(scenarios, scenario{name, run})
}

// zapLevel logs errors only (set PARLEY_TEST_VERBOSE for everything).
func zapLevel() zapcore.Level {
	if os.Getenv("PARLEY_TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// operatorUser returns a rest.Config for a user bound to nothing but the
// ClusterRole `make manifests` generated from the RBAC markers.
func operatorUser(t *testing.T, env *envtest.Environment, c client.Client) *rest.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	role.Name = "parley-manager-under-test"
	if err := c.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	const user = "parley-operator"
	if err := c.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}); err != nil {
		t.Fatal(err)
	}
	u, err := env.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u.Config()
}

// request is one call the manager made.
type request struct {
	method, path string
	at           time.Time
}

func (r request) write() bool {
	return r.method != http.MethodGet && r.method != http.MethodHead && r.method != http.MethodOptions
}

func (r request) String() string { return r.method + " " + r.path }

type requestLog struct {
	mu   sync.Mutex
	reqs []request
}

func (l *requestLog) add(r request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
}

// mark is the position of the next request.
func (l *requestLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

// since returns the requests made after mark that concern namespace ns.
func (l *requestLog) since(mark int, ns string) []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []request
	for _, r := range l.reqs[mark:] {
		if strings.Contains(r.path, "/namespaces/"+ns+"/") {
			out = append(out, r)
		}
	}
	return out
}

type recordingTransport struct {
	next http.RoundTripper
	log  *requestLog
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.log.add(request{method: req.Method, path: req.URL.Path, at: time.Now()})
	return t.next.RoundTrip(req)
}

// Helpers shared by the scenarios.

func (s *suite) namespace(t *testing.T) string {
	t.Helper()
	ns := testenv.UniqueName(t, "chat")
	if len(ns) > 63 {
		ns = ns[len(ns)-63:]
	}
	ns = strings.TrimLeft(ns, "-")
	if err := s.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Delete what the scenario left so the manager has nothing more to do
		// there. The namespace stays: envtest runs no namespace controller,
		// and the control plane goes with the test.
		_ = s.c.DeleteAllOf(context.Background(), &v1alpha1.ChatCluster{}, client.InNamespace(ns))
		// Clusters with a finalizer delete their RabbitMQ topology and
		// PostgreSQL database first: wait, so nothing is left in the shared
		// services once the manager stops.
		deadline := time.Now().Add(patience)
		for time.Now().Before(deadline) {
			var left v1alpha1.ChatClusterList
			if err := s.c.List(context.Background(), &left, client.InNamespace(ns)); err != nil || len(left.Items) == 0 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("ChatClusters of namespace %s still there %s after the scenario", ns, patience)
	})
	return ns
}

// keyedCluster returns a new ChatCluster name in ns, not yet created, after
// creating the Secrets the provisioning steps would generate for it (the JWT
// and API keys), labelled like theirs and handed over to it
// (controllers.AnnotationSecretFor).
func (s *suite) keyedCluster(t *testing.T, ns, name string) *v1alpha1.ChatCluster {
	t.Helper()
	s.secretFor(t, ns, naming.JWTSecretName(name), name, true, map[string]string{naming.JWTCurrentKey: "k-" + name})
	s.secretFor(t, ns, naming.APIKeySecretName(name), name, true, map[string]string{naming.APIKeyKey: "a-" + name})
	return newCluster(ns, name)
}

// secretFor creates a Secret under one of cluster's generated names, handed
// over to the operator by the opt-in annotation.
func (s *suite) secretFor(t *testing.T, ns, name, cluster string, labelled bool, data map[string]string) *corev1.Secret {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
		Annotations: map[string]string{controllers.AnnotationSecretFor: cluster}}, StringData: data}
	if labelled {
		sec.Labels = naming.CacheSelector()
	}
	s.create(t, sec)
	return sec
}

func (s *suite) secret(t *testing.T, ns, name string, labelled bool, data map[string]string) *corev1.Secret {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
	if labelled {
		sec.Labels = naming.CacheSelector()
	}
	if err := s.c.Create(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	return sec
}

// brokerAndDatabase adds a broker and an existing database to the spec, with
// Secrets pointing at the real RabbitMQ and PostgreSQL on this machine.
func (s *suite) brokerAndDatabase(t *testing.T, ns string, cc *v1alpha1.ChatCluster) {
	t.Helper()
	s.secret(t, ns, "rabbitmq", false, map[string]string{"uri": testenv.AMQPURL()})
	s.secret(t, ns, "chat-db", true, map[string]string{"uri": testenv.PostgresURL()})
	cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq", Key: "uri"}}
	cc.Spec.Database = &v1alpha1.DatabaseSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "chat-db", Key: "uri"}}
}

func newCluster(ns, name string) *v1alpha1.ChatCluster {
	return &v1alpha1.ChatCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
}

func (s *suite) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := s.c.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

// update re-reads obj, applies change and writes it, retrying on conflicts.
func (s *suite) update(t *testing.T, obj client.Object, change func()) {
	t.Helper()
	ctx := context.Background()
	for range 10 {
		if err := s.c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatal(err)
		}
		change()
		err := s.c.Update(ctx, obj)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatalf("update %s: conflicts", obj.GetName())
}

func (s *suite) get(t *testing.T, ns, name string, obj client.Object) error {
	t.Helper()
	return s.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj)
}

const patience = 30 * time.Second

// eventually polls check until it returns nil, failing the test with the
// last error after the patience runs out.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster re-reads a ChatCluster.
func (s *suite) cluster(t *testing.T, ns, name string) *v1alpha1.ChatCluster {
	t.Helper()
	cc := &v1alpha1.ChatCluster{}
	if err := s.get(t, ns, name, cc); err != nil {
		t.Fatal(err)
	}
	return cc
}

// condition waits until the cluster's condition typ, describing the
// cluster's current generation, has the given status, and returns it.
func (s *suite) condition(t *testing.T, ns, name, typ string, want metav1.ConditionStatus) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, fmt.Sprintf("%s %s", typ, want), func() error {
		cc := &v1alpha1.ChatCluster{}
		if err := s.get(t, ns, name, cc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cc.Status.Conditions, typ)
		switch {
		case c == nil:
			return fmt.Errorf("no %s condition: %+v", typ, cc.Status.Conditions)
		case c.ObservedGeneration != cc.Generation:
			return fmt.Errorf("%s describes generation %d, the cluster is at %d", typ, c.ObservedGeneration, cc.Generation)
		case c.Status != want:
			return fmt.Errorf("%s is %s (%s: %s)", typ, c.Status, c.Reason, c.Message)
		}
		got = *c
		return nil
	})
	return got
}

// deployment waits for the cluster's Deployment and returns it.
func (s *suite) deployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	eventually(t, "Deployment "+name, func() error { return s.get(t, ns, name, d) })
	return d
}

// rollOut plays the Deployment controller envtest does not run: it reports
// every replica of the current template updated, available and ready.
func (s *suite) rollOut(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	eventually(t, "roll out "+name, func() error {
		d := &appsv1.Deployment{}
		if err := s.get(t, ns, name, d); err != nil {
			return err
		}
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
		}
		return s.c.Status().Update(ctx, d)
	})
}

// reconciledTwice makes the manager process the cluster twice more (by
// touching an annotation, which changes no spec) and returns when the second
// pass has begun, so the first has finished. Each pass of a cluster whose
// broker Secret lacks Parley's label reads that Secret straight from the API
// server: that request is how the test sees a pass happen.
func (s *suite) reconciledTwice(t *testing.T, cc *v1alpha1.ChatCluster, unlabelledSecret string) {
	t.Helper()
	path := "/api/v1/namespaces/" + cc.Namespace + "/secrets/" + unlabelledSecret
	for i := range 2 {
		mark := s.requests.mark()
		s.update(t, cc, func() {
			if cc.Annotations == nil {
				cc.Annotations = map[string]string{}
			}
			cc.Annotations["test.parley.io/poke"] = fmt.Sprint(time.Now().UnixNano(), i)
		})
		eventually(t, "a reconcile pass", func() error {
			if slices.ContainsFunc(s.requests.since(mark, cc.Namespace), func(r request) bool {
				return r.method == http.MethodGet && r.path == path
			}) {
				return nil
			}
			return fmt.Errorf("no pass read %s", path)
		})
	}
}

// quiet waits until the manager has written nothing in namespace ns for d:
// events are written asynchronously, some time after what they report.
func (s *suite) quiet(t *testing.T, ns string, d time.Duration) {
	t.Helper()
	eventually(t, "no writes for "+d.String(), func() error {
		w := writes(s.requests.since(0, ns))
		if len(w) > 0 && time.Since(w[len(w)-1].at) < d {
			return fmt.Errorf("last write %v ago: %v", time.Since(w[len(w)-1].at), w[len(w)-1])
		}
		return nil
	})
}

func writes(reqs []request) []request {
	var out []request
	for _, r := range reqs {
		if r.write() {
			out = append(out, r)
		}
	}
	return out
}

func ownedBy(obj metav1.Object, cc *v1alpha1.ChatCluster) error {
	ref := metav1.GetControllerOf(obj)
	switch {
	case ref == nil:
		return fmt.Errorf("%s has no controller", obj.GetName())
	case ref.UID != cc.UID || ref.Kind != "ChatCluster":
		return fmt.Errorf("%s is controlled by %s %s", obj.GetName(), ref.Kind, ref.Name)
	case ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion:
		return fmt.Errorf("%s does not block its owner's deletion", obj.GetName())
	}
	return nil
}
