package install

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/alerts"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/testenv"
)

// logCapture records every log line (controller-runtime's and client-go's
// klog) that says a request was forbidden: reflectors and event recorders
// only log those, they do not fail.
type logCapture struct {
	mu        sync.Mutex
	forbidden []string
}

func (c *logCapture) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		line := prefix + " " + args
		if strings.Contains(strings.ToLower(line), "forbidden") {
			c.mu.Lock()
			c.forbidden = append(c.forbidden, line)
			c.mu.Unlock()
		}
	}, funcr.Options{Verbosity: 4})
}

// forbiddenLogs is the capture of the running operator test; waitFor fails
// as soon as it records a forbidden request instead of waiting for a timeout.
var forbiddenLogs *logCapture

func (c *logCapture) peek() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.forbidden)
}

func (c *logCapture) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.forbidden
	c.forbidden = nil
	return out
}

// TestOperatorWorksWithExactlyTheChartRBAC runs the real reconciler as the
// chart's ServiceAccount, bound to exactly the RBAC the chart renders
// (impersonation against a real API server that enforces RBAC), and drives a
// ChatCluster through create, update and the optional children. A permission
// the chart lacks fails the test: an error, a missing child, a missing event
// or a "forbidden" in the logs.
func TestOperatorWorksWithExactlyTheChartRBAC(t *testing.T) {
	_, cfg := startAPIServer(t, filepath.Join(configDir, "crd", "bases"), serviceMonitorCRDDir(t))
	capture := &logCapture{}
	forbiddenLogs = capture
	t.Cleanup(func() { forbiddenLogs = nil })
	klog.SetLogger(capture.logger())
	ctrl.SetLogger(capture.logger())
	t.Cleanup(klog.ClearLogger)
	admin, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}

	// The chat namespaces are unique: the ChatCluster with a broker and a
	// database is provisioned in the machine's shared RabbitMQ and PostgreSQL.
	clusterNS, watchedNS := testenv.UniqueName(t, "chat"), testenv.UniqueName(t, "chat")
	for _, tc := range []struct {
		name, release, operatorNS, chatNS string
		args                              []string
		withDependencies                  bool
	}{
		{name: "cluster-wide", release: "op-cluster", operatorNS: "parley-cluster", chatNS: clusterNS, withDependencies: true},
		{name: "watched namespaces", release: "op-watch", operatorNS: "parley-watch", chatNS: watchedNS,
			args: []string{"--set", "watchNamespaces={" + watchedNS + "}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			capture.take() // lines from an earlier subtest are that subtest's
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for _, ns := range []string{tc.operatorNS, tc.chatNS} {
				if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
					t.Fatal(err)
				}
			}

			// Install exactly the chart's identity and permissions.
			objs := renderChart(t, tc.operatorNS, append([]string{"--set", "crds.install=false", "--set", "fullnameOverride=" + tc.release}, tc.args...)...)
			var sa string
			for _, o := range objs {
				switch o.GetKind() {
				case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
					if o.GetKind() == "ServiceAccount" {
						sa = o.GetName()
					}
					if err := admin.Patch(ctx, o, client.Apply, client.FieldOwner("parley-install-test"), client.ForceOwnership); err != nil {
						t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
					}
				}
			}
			dep := typed[appsv1.Deployment](t, one(t, objs, "Deployment", tc.release))
			args := argMap(t, dep.Spec.Template.Spec.Containers[0].Args)

			// Everything the operator does goes through this identity.
			as := rest.CopyConfig(cfg)
			as.Impersonate = rest.ImpersonationConfig{
				UserName: fmt.Sprintf("system:serviceaccount:%s:%s", tc.operatorNS, sa),
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + tc.operatorNS, "system:authenticated"},
			}
			checkDenied(ctx, t, as, tc.chatNS)

			stop, metricsAddr := startOperator(t, as, args, tc.operatorNS, capture)
			defer stop()

			driveChatCluster(ctx, t, admin, tc.chatNS)
			if tc.withDependencies {
				driveProvisionedChatCluster(ctx, t, admin, tc.chatNS)
			}

			lease := &coordinationv1.Lease{}
			if err := admin.Get(ctx, types.NamespacedName{Namespace: tc.operatorNS, Name: "parley-operator.chat.parley.io"}, lease); err != nil {
				t.Errorf("no leader election Lease in %s: %v", tc.operatorNS, err)
			} else if ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
				t.Errorf("Lease has no holder: %+v", lease.Spec)
			}
			if tc.name == "cluster-wide" {
				checkOperatorMetrics(t)
				checkMetricsAuth(ctx, t, cfg, admin, objs, tc.operatorNS, metricsAddr)
			}
			if lines := capture.take(); len(lines) > 0 {
				t.Errorf("requests were forbidden (the chart's RBAC lacks a permission the operator uses):\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

// checkDenied proves the impersonation is in force: the identity cannot do
// what the chart does not grant.
func checkDenied(ctx context.Context, t *testing.T, as *rest.Config, chatNS string) {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(as)
	for _, a := range []authorizationv1.ResourceAttributes{
		{Namespace: chatNS, Verb: "delete", Group: "apps", Resource: "deployments"},
		{Namespace: chatNS, Verb: "create", Resource: "pods"},
		{Namespace: "kube-system", Verb: "update", Group: "rbac.authorization.k8s.io", Resource: "roles"},
	} {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &a},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("access review: %v", err)
		}
		if r.Status.Allowed {
			t.Errorf("the operator's identity may %s %s in %s: not least privilege", a.Verb, a.Resource, a.Namespace)
		}
	}
}

// startOperator starts the manager and reconciler the way cmd/manager does,
// configured from the chart's Deployment arguments.
func startOperator(t *testing.T, as *rest.Config, args map[string]string, operatorNS string, capture *logCapture) (stop func(), metricsAddr string) {
	t.Helper()
	var namespaces []string
	for _, ns := range strings.Split(args["watch-namespaces"], ",") {
		if ns != "" {
			namespaces = append(namespaces, ns)
		}
	}
	qps, err := strconv.ParseFloat(args["kube-api-qps"], 32)
	if err != nil {
		t.Fatalf("--kube-api-qps: %v", err)
	}
	burst, err := strconv.Atoi(args["kube-api-burst"])
	if err != nil {
		t.Fatalf("--kube-api-burst: %v", err)
	}
	resync, err := time.ParseDuration(args["resync-period"])
	if err != nil {
		t.Fatalf("--resync-period: %v", err)
	}
	workers, err := strconv.Atoi(args["max-concurrent-reconciles"])
	if err != nil {
		t.Fatalf("--max-concurrent-reconciles: %v", err)
	}
	if args["metrics-bind-address"] == "" || args["metrics-bind-address"] == "0" {
		t.Fatalf("the chart turns the metrics endpoint off by default: --metrics-bind-address=%q", args["metrics-bind-address"])
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr = l.Addr().String()
	l.Close()
	var prov controllers.Provisioning
	if prov.BackendConcurrency, err = strconv.Atoi(args["backend-concurrency"]); err != nil {
		t.Fatalf("--backend-concurrency: %v", err)
	}
	for flag, d := range map[string]*time.Duration{
		"cleanup-retry-for": &prov.CleanupRetryFor, "cleanup-backoff": &prov.CleanupBackoff, "cleanup-max-backoff": &prov.CleanupMaxBackoff,
		"external-call-timeout": &prov.CallTimeout, "external-connect-timeout": &prov.ConnectTimeout, "unreachable-backoff": &prov.UnreachableBackoff,
	} {
		if *d, err = time.ParseDuration(args[flag]); err != nil {
			t.Fatalf("--%s: %v", flag, err)
		}
	}
	if v, ok := args["external-check-interval"]; ok {
		if prov.CheckInterval, err = time.ParseDuration(v); err != nil {
			t.Fatalf("--external-check-interval: %v", err)
		}
	}
	if err := prov.ValidateFlags(); err != nil {
		t.Fatalf("the chart's flags: %v", err)
	}
	cfg := rest.CopyConfig(as)
	cfg.QPS, cfg.Burst = float32(qps), burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: controllers.NewScheme(),
		Cache:  controllers.CacheOptions(namespaces),
		// The chart's metrics serving (HTTPS, authn/authz through the API
		// server as the operator's identity), on a free loopback port.
		Metrics:                       controllers.MetricsServing{BindAddress: metricsAddr, Secure: args["metrics-secure"] == "true"}.Options(),
		HealthProbeBindAddress:        "0",
		LeaderElection:                args["leader-elect"] == "true",
		LeaderElectionID:              "parley-operator.chat.parley.io",
		LeaderElectionNamespace:       operatorNS,
		LeaderElectionReleaseOnCancel: true,
		Logger:                        capture.logger(),
		// Both subtests run a "chatcluster" controller in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("create manager: %v", err)
	}
	r := &controllers.ChatClusterReconciler{Options: controllers.Options{
		DefaultImage: args["chat-server-image"], ResyncPeriod: resync, MaxConcurrentReconciles: workers,
	}, Provisioning: prov}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatalf("set up reconciler: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}, metricsAddr
}

// driveChatCluster creates a ChatCluster and changes it, checking the
// operator creates, updates and deletes its children and reports status.
func driveChatCluster(ctx context.Context, t *testing.T, admin client.Client, ns string) {
	t.Helper()
	cc := &v1alpha1.ChatCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "team-chat"}}
	if err := admin.Create(ctx, cc); err != nil {
		t.Fatalf("create ChatCluster: %v", err)
	}
	key := client.ObjectKeyFromObject(cc)

	// Create: the children and a status for this generation.
	sm := &unstructured.Unstructured{}
	sm.SetAPIVersion("monitoring.coreos.com/v1")
	sm.SetKind("ServiceMonitor")
	sm.SetName(cc.Name)
	waitChildren(ctx, t, admin, cc,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: cc.Name}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: naming.ConfigMapName(cc.Name)}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: cc.Name}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: cc.Name}},
		sm)
	waitStatus(ctx, t, admin, key)
	// The operator generates the keys the chat servers mount (nobody else
	// may: it refuses Secrets it did not create), then the Deployment comes.
	waitChildren(ctx, t, admin, cc,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: naming.JWTSecretName(cc.Name)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: naming.APIKeySecretName(cc.Name)}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: cc.Name}})
	waitStatus(ctx, t, admin, key)

	// Update: a new limit reaches the rendered config; a NetworkPolicy appears.
	cm := &corev1.ConfigMap{}
	if err := admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: naming.ConfigMapName(cc.Name)}, cm); err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprint(cm.Data)
	patch := []byte(`{"spec":{"limits":{"maxMessageBytes":4096},"networkPolicy":{"enabled":true}}}`)
	if err := admin.Patch(ctx, cc, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the ConfigMap to carry the new limit", func() (bool, error) {
		err := admin.Get(ctx, client.ObjectKeyFromObject(cm), cm)
		return err == nil && fmt.Sprint(cm.Data) != before && strings.Contains(fmt.Sprint(cm.Data), "4096"), err
	})
	np := &networkingv1.NetworkPolicy{}
	waitFor(ctx, t, "the NetworkPolicy", func() (bool, error) {
		err := admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: cc.Name}, np)
		return err == nil, client.IgnoreNotFound(err)
	})
	waitStatus(ctx, t, admin, key)

	// Delete an optional child: turning the NetworkPolicy off removes it.
	if err := admin.Patch(ctx, cc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"networkPolicy":{"enabled":false}}}`))); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the NetworkPolicy to go", func() (bool, error) {
		err := admin.Get(ctx, client.ObjectKeyFromObject(np), np)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	waitStatus(ctx, t, admin, key)

	// Events were written (a recorder without permission only logs).
	waitFor(ctx, t, "events about the ChatCluster", func() (bool, error) {
		var list eventsv1.EventList
		if err := admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == cc.Name && e.Regarding.Kind == "ChatCluster" && e.Reason == controllers.EventCreated {
				return true, nil
			}
		}
		return false, nil
	})

	deleteAndWaitGone(ctx, t, admin, cc)
}

// driveProvisionedChatCluster runs a ChatCluster with a RabbitMQ and a
// PostgreSQL (the machine's, through Secrets a user would write), so the
// operator's provisioning steps (topology, role and database, generated
// Secrets, the finalizer) run under the chart's RBAC too, then deletes it
// with the Delete policies so nothing is left in the shared services.
func driveProvisionedChatCluster(ctx context.Context, t *testing.T, admin client.Client, ns string) {
	t.Helper()
	for name, uri := range map[string]string{"rabbitmq-admin": testenv.AMQPURL(), "postgres-admin": testenv.PostgresURL()} {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{naming.LabelPartOf: naming.PartOf}},
			StringData: map[string]string{"uri": uri},
		}
		if err := admin.Create(ctx, s); err != nil {
			t.Fatalf("create Secret %s: %v", name, err)
		}
	}
	cc := &v1alpha1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "provisioned"},
		Spec: v1alpha1.ChatClusterSpec{
			Replicas: ptr.To[int32](2),
			Broker: &v1alpha1.BrokerSpec{
				SecretRef:      &v1alpha1.SecretKeyReference{Name: "rabbitmq-admin", Key: "uri"},
				DeletionPolicy: v1alpha1.DeletionPolicyDelete,
			},
			Database: &v1alpha1.DatabaseSpec{
				AdminSecretRef: &v1alpha1.SecretKeyReference{Name: "postgres-admin", Key: "uri"},
				ReclaimPolicy:  v1alpha1.DeletionPolicyDelete,
			},
		},
	}
	if err := admin.Create(ctx, cc); err != nil {
		t.Fatalf("create ChatCluster with broker and database: %v", err)
	}
	key := client.ObjectKeyFromObject(cc)
	waitChildren(ctx, t, admin, cc,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: naming.ConfigMapName(cc.Name)}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: cc.Name}})
	waitStatus(ctx, t, admin, key)
	// The keys and the database credentials are the operator's to write.
	waitChildren(ctx, t, admin, cc,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: naming.JWTSecretName(cc.Name)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: naming.APIKeySecretName(cc.Name)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: naming.DatabaseSecretName(cc.Name)}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: cc.Name}})
	waitStatus(ctx, t, admin, key)
	// The provisioning steps report through these conditions: both must be
	// there and True (the topology and the database exist). An absent one
	// is a step that did not run, not a success.
	waitFor(ctx, t, "BrokerReady and DatabaseReady", func() (bool, error) {
		if err := admin.Get(ctx, key, cc); err != nil {
			return false, err
		}
		for _, ct := range []string{v1alpha1.ConditionBrokerReady, v1alpha1.ConditionDatabaseReady} {
			c := meta.FindStatusCondition(cc.Status.Conditions, ct)
			switch {
			case c == nil:
				return false, nil
			case c.Status != metav1.ConditionTrue:
				return false, fmt.Errorf("%s is %s: %s: %s", ct, c.Status, c.Reason, c.Message)
			}
		}
		return true, nil
	})
	for _, c := range cc.Status.Conditions {
		t.Logf("%s=%s (%s)", c.Type, c.Status, c.Reason)
	}
	deleteAndWaitGone(ctx, t, admin, cc)
}

// deleteAndWaitGone deletes a ChatCluster and waits until the API server has
// removed it: a finalizer the operator cannot remove keeps it forever.
func deleteAndWaitGone(ctx context.Context, t *testing.T, c client.Client, cc *v1alpha1.ChatCluster) {
	t.Helper()
	if err := c.Delete(ctx, cc); err != nil {
		t.Fatalf("delete ChatCluster %s: %v", cc.Name, err)
	}
	waitFor(ctx, t, "ChatCluster "+cc.Name+" to be deleted", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(cc), &v1alpha1.ChatCluster{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// waitChildren waits for children of the ChatCluster, controlled by it.
func waitChildren(ctx context.Context, t *testing.T, c client.Client, cc *v1alpha1.ChatCluster, children ...client.Object) {
	t.Helper()
	for _, child := range children {
		child.SetNamespace(cc.Namespace)
		waitFor(ctx, t, fmt.Sprintf("%T %s", child, child.GetName()), func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(child), child); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			if !metav1.IsControlledBy(child, cc) {
				return false, fmt.Errorf("%s is not controlled by the ChatCluster", child.GetName())
			}
			return true, nil
		})
	}
}

// waitStatus waits for the status of the ChatCluster's current generation.
func waitStatus(ctx context.Context, t *testing.T, c client.Client, key client.ObjectKey) {
	t.Helper()
	waitFor(ctx, t, "the ChatCluster status for its generation", func() (bool, error) {
		cc := &v1alpha1.ChatCluster{}
		if err := c.Get(ctx, key, cc); err != nil {
			return false, err
		}
		if cc.Status.ObservedGeneration != cc.Generation {
			return false, nil
		}
		for _, cond := range cc.Status.Conditions {
			if cond.Type == v1alpha1.ConditionProgressing && cond.ObservedGeneration == cc.Generation {
				return true, nil
			}
		}
		return false, nil
	})
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 45*time.Second, true, func(context.Context) (bool, error) {
		if forbiddenLogs != nil {
			if lines := forbiddenLogs.peek(); len(lines) > 0 {
				return false, fmt.Errorf("requests were forbidden (the chart's RBAC lacks a permission the operator uses):\n%s", strings.Join(lines, "\n"))
			}
		}
		ok, err := cond()
		if err != nil {
			last = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last condition error: %v)", what, err, last)
	}
}

// checkOperatorMetrics reads controller-runtime's registry after the
// reconciles and checks the dashboard's operator queries against it.
func checkOperatorMetrics(t *testing.T) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather operator metrics: %v", err)
	}
	known := chatServerMetrics(t)
	for _, f := range families {
		info := metricInfo{histogram: f.GetType() == dto.MetricType_HISTOGRAM}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				info.labels = append(info.labels, l.GetName())
			}
		}
		known[f.GetName()] = info
	}
	// Queries select the operator's series with the $controller constant.
	queries := dashboardQueries(t)
	for panel, exprs := range queries {
		for i, e := range exprs {
			queries[panel][i] = strings.ReplaceAll(e, "$controller", dashboardConstant(t, "controller"))
		}
	}
	n := checkQueries(t, queries, known, []string{"parley_operator_", "controller_runtime_", "workqueue_"}, nil)
	if n < 8 {
		t.Errorf("the dashboard reads only %d operator series", n)
	}
	// The operator's alerts read what it exports, too (the cleanup series
	// exist only while a cleanup fails: controllers checks their descriptors).
	if n := checkQueries(t, alertQueries(t, alerts.Operator()), known, []string{"parley_operator_", "controller_runtime_"}, []string{"parley_operator_cleanup_"}); n < 3 {
		t.Errorf("the operator's alerts read only %d operator series", n)
	}
	found := false
	for _, f := range families {
		if f.GetName() == "controller_runtime_reconcile_total" {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "controller" && l.GetValue() == "chatcluster" {
						found = true
					}
				}
			}
		}
	}
	if !found {
		t.Error(`no controller_runtime_reconcile_total{controller="chatcluster"}: the operator's controller is not named chatcluster`)
	}
	if c := dashboardConstant(t, "controller"); c != "chatcluster" {
		t.Errorf("the dashboard's $controller is %q, the operator's controller is chatcluster", c)
	}
}

// dashboardConstant returns the value of a constant template variable.
func dashboardConstant(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboards", "parley.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	for _, v := range dash.Templating.List {
		if v.Name == name && v.Type == "constant" {
			s, _ := v.Query.(string)
			return s
		}
	}
	t.Fatalf("the dashboard has no constant variable %q", name)
	return ""
}

// checkMetricsAuth scrapes the running operator's metrics endpoint as the
// chart serves it: refused without a token, served to a ServiceAccount bound
// to the chart's metrics-reader ClusterRole. The operator's identity has only
// the chart's RBAC, so this also proves it may create the TokenReviews and
// SubjectAccessReviews the endpoint needs.
func checkMetricsAuth(ctx context.Context, t *testing.T, cfg *rest.Config, admin client.Client, chart []*unstructured.Unstructured, operatorNS, addr string) {
	t.Helper()
	reader := find(chart, "ClusterRole", "")
	var readerRole string
	for _, r := range reader {
		if strings.HasSuffix(r.GetName(), "-metrics-reader") {
			readerRole = r.GetName()
		}
	}
	if readerRole == "" {
		t.Fatal("the chart renders no metrics-reader ClusterRole")
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: "prometheus"}}
	if err := admin.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: readerRole + "-" + operatorNS},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: operatorNS, Name: sa.Name}},
	}); err != nil {
		t.Fatal(err)
	}
	tr, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().ServiceAccounts(operatorNS).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(token string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("scrape the operator's metrics: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := scrape(""); code != http.StatusUnauthorized {
		t.Errorf("anonymous scrape: %d, want 401", code)
	}
	// The role binding reaches the authorizer's cache within a moment.
	var code int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, body = scrape(tr.Status.Token); code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK || !strings.Contains(body, "parley_operator_chatclusters") {
		t.Errorf("scrape with the metrics-reader's token: %d %.300s", code, body)
	}
}
