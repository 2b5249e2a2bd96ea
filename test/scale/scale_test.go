// Package scale measures the operator with many ChatClusters on a real API
// server (envtest): how long until every cluster's children exist, reconcile
// durations from controller-runtime's metrics, API writes during an idle
// resync (the goal is none), and the operator's memory. The operator runs as
// its real binary (cmd/manager) in its own process, as a user holding only
// the generated ClusterRole.
//
// It is a benchmark, not a test: `make bench` runs it (hack/bench.sh), `make
// test` does not. Run it alone with
//
//	KUBEBUILDER_ASSETS=$(hack/control-plane.sh) go test -run '^$' -bench . -benchtime 1x ./test/scale/
//
// PARLEY_SCALE_CLUSTERS (default 1000), PARLEY_SCALE_QPS (the operator's
// --kube-api-qps, default its own default) and PARLEY_SCALE_OUT (a directory
// for operator-scale.json) tune it.
package scale_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/testenv"
)

// Result is what the benchmark measured (also written as operator-scale.json).
type Result struct {
	Clusters   int     `json:"clusters"`
	Namespaces int     `json:"namespaces"`
	QPS        string  `json:"operatorQps"`
	Children   int     `json:"childrenPerCluster"`
	CreateSec  float64 `json:"createSec"`
	// AllChildrenSec is from the first ChatCluster created until every
	// cluster's every child exists.
	AllChildrenSec float64 `json:"allChildrenSec"`
	// Reconcile durations over the creation phase, from
	// controller_runtime_reconcile_time_seconds.
	ReconcileCount float64 `json:"reconcileCount"`
	ReconcileP50Ms float64 `json:"reconcileP50Ms"`
	ReconcileP99Ms float64 `json:"reconcileP99Ms"`
	// The idle resync: reconciles and API writes while nothing changes.
	ResyncSec          float64        `json:"resyncWindowSec"`
	ResyncReconciles   float64        `json:"resyncReconciles"`
	ResyncWrites       float64        `json:"resyncWrites"`
	ResyncWritesByKind map[string]int `json:"resyncWritesByKind,omitempty"`
	// Reads that reached the API server (GET, LIST) in the same window: each
	// waits for the operator's client rate limit as a write does.
	ResyncReads       float64        `json:"resyncReads"`
	ResyncReadsByKind map[string]int `json:"resyncReadsByKind,omitempty"`
	// API requests from the first ChatCluster created until every child
	// existed. GETs only: the benchmark's own polling LISTs.
	CreateWrites       float64        `json:"createWrites"`
	CreateWritesByKind map[string]int `json:"createWritesByKind,omitempty"`
	CreateGets         float64        `json:"createGets"`
	CreateGetsByKind   map[string]int `json:"createGetsByKind,omitempty"`
	ResyncP50Ms        float64        `json:"resyncReconcileP50Ms"`
	ResyncP99Ms        float64        `json:"resyncReconcileP99Ms"`
	OperatorRSSMB      float64        `json:"operatorRssMB"`
	OperatorCPUSec     float64        `json:"operatorCpuSec"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkOperatorAtScale(b *testing.B) {
	n := envInt("PARLEY_SCALE_CLUSTERS", 1000)
	perNS := 100
	namespaces := (n + perNS - 1) / perNS
	const resync = 60 * time.Second
	for i := 0; i < b.N; i++ {
		res := run(b, n, namespaces, resync)
		b.ReportMetric(res.AllChildrenSec, "s-to-all-children")
		b.ReportMetric(res.ReconcileP50Ms, "ms-reconcile-p50")
		b.ReportMetric(res.ReconcileP99Ms, "ms-reconcile-p99")
		b.ReportMetric(res.ResyncWrites, "writes/idle-resync")
		b.ReportMetric(res.OperatorRSSMB, "MB-operator-rss")
		data, _ := json.MarshalIndent(res, "", "  ")
		b.Logf("%s", data)
		if dir := os.Getenv("PARLEY_SCALE_OUT"); dir != "" {
			if err := os.WriteFile(filepath.Join(dir, "operator-scale.json"), append(data, '\n'), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func run(b *testing.B, n, namespaces int, resync time.Duration) Result {
	b.Helper()
	env, cfg := startControlPlane(b)
	cfg.QPS, cfg.Burst = 1000, 2000 // the benchmark's own client must not be the bottleneck
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	kubeconfig := operatorKubeconfig(b, env, c)
	mgr := buildManager(b)

	metricsPort, probePort := freePort(b), freePort(b)
	// Plain HTTP: the benchmark scrapes the operator without a token.
	args := []string{"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(metricsPort), "--metrics-secure=false",
		"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(probePort),
		"--resync-period", resync.String(), "--zap-log-level", "error"}
	qps := os.Getenv("PARLEY_SCALE_QPS")
	if qps != "" {
		args = append(args, "--kube-api-qps", qps, "--kube-api-burst", strconv.Itoa(2*atoiOr(qps, 20)))
	} else {
		qps = "default"
	}
	cmd := exec.Command(mgr, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	logPath := filepath.Join(b.TempDir(), "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
	})
	waitHealthy(b, probePort, logPath)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)

	res := Result{Clusters: n, Namespaces: namespaces, QPS: qps}
	// The Secrets the key provisioning step would generate, so every
	// cluster's Deployment can be created (it waits for the Secrets its
	// pods mount).
	var names []types2
	for i := 0; i < n; i++ {
		names = append(names, types2{ns: fmt.Sprintf("scale-%03d", i/100), name: fmt.Sprintf("chat-%04d", i)})
	}
	for ns := 0; ns < namespaces; ns++ {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%03d", ns)}}); err != nil {
			b.Fatal(err)
		}
	}
	parallel(b, names, func(t types2) error {
		for _, s := range []struct{ name, key string }{
			{naming.JWTSecretName(t.name), naming.JWTCurrentKey}, {naming.APIKeySecretName(t.name), naming.APIKeyKey},
		} {
			// Handed over to the operator, which refuses unmarked Secrets under its names.
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: t.ns, Labels: naming.CacheSelector(),
				Annotations: map[string]string{controllers.AnnotationSecretFor: t.name}},
				StringData: map[string]string{s.key: "k-" + t.name}}
			if err := c.Create(ctx, sec); err != nil {
				return err
			}
		}
		return nil
	})

	// The children an empty-spec ChatCluster should get, from the builders
	// themselves (no ServiceMonitor CRD in envtest).
	probe := &v1alpha1.ChatCluster{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"}}
	var wanted []client.Object
	for _, bld := range resource.Builders(resource.Cluster{ChatCluster: probe, DefaultImage: "x"}) {
		obj, err := bld.Build()
		if err != nil {
			b.Fatal(err)
		}
		if opt, ok := bld.(resource.Optional); ok && !opt.Wanted() {
			continue
		}
		wanted = append(wanted, obj)
	}
	res.Children = len(wanted)

	createWritesBefore, createReadsBefore := apiRequests(b, cfg)
	start := time.Now()
	parallel(b, names, func(t types2) error {
		return c.Create(ctx, &v1alpha1.ChatCluster{ObjectMeta: metav1.ObjectMeta{Name: t.name, Namespace: t.ns}})
	})
	res.CreateSec = time.Since(start).Seconds()
	deadline := start.Add(30 * time.Minute)
	for {
		missing, err := missingChildren(ctx, c, names, wanted)
		if err != nil {
			b.Fatal(err)
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d children still missing after 30 minutes; manager log %s", missing, logPath)
		}
		if errs := reconcileErrors(b, metricsURL); errs > float64(5*n) {
			log, _ := os.ReadFile(logPath)
			b.Fatalf("%d children missing and %.0f reconcile errors; the manager's log ends:\n%s", missing, errs, tail(string(log), 3000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	res.AllChildrenSec = time.Since(start).Seconds()
	createWritesAfter, createReadsAfter := apiRequests(b, cfg)
	res.CreateWrites, res.CreateWritesByKind = delta(createWritesBefore, createWritesAfter, "")
	res.CreateGets, res.CreateGetsByKind = delta(createReadsBefore, createReadsAfter, "GET ")
	created := scrape(b, metricsURL)
	res.ReconcileCount = created.count
	res.ReconcileP50Ms = created.quantile(0.5) * 1000
	res.ReconcileP99Ms = created.quantile(0.99) * 1000
	b.Logf("%d clusters: all %d children each after %.1fs (creates took %.1fs); %.0f reconciles, p50 %.1fms p99 %.1fms",
		n, res.Children, res.AllChildrenSec, res.CreateSec, res.ReconcileCount, res.ReconcileP50Ms, res.ReconcileP99Ms)

	// Let the creation-phase requeues (status updates, owned-object events)
	// settle, then watch one full resync period with nothing changing.
	settleUntilQuiet(b, cfg, 15*time.Second, 5*time.Minute)
	before := scrape(b, metricsURL)
	writesBefore, readsBefore := apiRequests(b, cfg)
	cpuBefore := procCPU(cmd.Process.Pid)
	window := resync + 20*time.Second
	time.Sleep(window)
	after := scrape(b, metricsURL)
	writesAfter, readsAfter := apiRequests(b, cfg)
	res.ResyncSec = window.Seconds()
	res.ResyncReconciles = after.count - before.count
	res.ResyncWrites, res.ResyncWritesByKind = delta(writesBefore, writesAfter, "")
	res.ResyncReads, res.ResyncReadsByKind = delta(readsBefore, readsAfter, "")
	idle := after.minus(before)
	res.ResyncP50Ms, res.ResyncP99Ms = idle.quantile(0.5)*1000, idle.quantile(0.99)*1000
	res.OperatorCPUSec = procCPU(cmd.Process.Pid) - cpuBefore
	res.OperatorRSSMB = float64(procRSS(b, cmd.Process.Pid)) / (1 << 20)
	if res.ResyncReconciles < float64(n) {
		b.Errorf("only %.0f reconciles in the %v resync window for %d clusters", res.ResyncReconciles, window, n)
	}
	return res
}

// delta is after - before per key (only keys with the prefix), and its total.
func delta(before, after map[string]float64, prefix string) (float64, map[string]int) {
	total, by := 0.0, map[string]int{}
	for k, v := range after {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if d := v - before[k]; d > 0 {
			by[k] = int(d)
			total += d
		}
	}
	return total, by
}

// startControlPlane is testenv.StartControlPlane with a Service IP range
// for thousands of Services (envtest's default /24 holds 254).
func startControlPlane(b *testing.B) (*envtest.Environment, *rest.Config) {
	b.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory: testenv.Assets(b),
		CRDDirectoryPaths:     []string{filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		b.Fatalf("start envtest control plane: %v", err)
	}
	b.Cleanup(func() {
		if err := env.Stop(); err != nil {
			b.Errorf("stop envtest: %v", err)
		}
	})
	return env, cfg
}

type types2 struct{ ns, name string }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func atoiOr(s string, def int) int {
	if v, err := strconv.Atoi(s); err == nil {
		return v
	}
	return def
}

// parallel runs f for every item with 16 workers, failing on the first error.
func parallel(b *testing.B, items []types2, f func(types2) error) {
	b.Helper()
	var wg sync.WaitGroup
	var next atomic.Int64
	var firstErr atomic.Value
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) {
					return
				}
				if err := f(items[i]); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// missingChildren lists every wanted kind across the namespaces and counts
// (cluster, child) pairs not yet there.
func missingChildren(ctx context.Context, c client.Client, names []types2, wanted []client.Object) (int, error) {
	have := map[string]bool{}
	for _, w := range wanted {
		list, err := listFor(w)
		if err != nil {
			return 0, err
		}
		if err := c.List(ctx, list); err != nil {
			return 0, err
		}
		items, err := metaItems(list)
		if err != nil {
			return 0, err
		}
		kind := fmt.Sprintf("%T", w)
		for _, it := range items {
			have[kind+"/"+it.GetNamespace()+"/"+it.GetName()] = true
		}
	}
	missing := 0
	for _, t := range names {
		for _, w := range wanted {
			// Child names derive from the cluster name the way the probe's did.
			name := strings.Replace(w.GetName(), "probe", t.name, 1)
			if !have[fmt.Sprintf("%T", w)+"/"+t.ns+"/"+name] {
				missing++
			}
		}
	}
	return missing, nil
}

var scheme = controllers.NewScheme()

// listFor returns an empty list of obj's kind.
func listFor(obj client.Object) (client.ObjectList, error) {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, err
	}
	list, err := scheme.New(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err != nil {
		return nil, fmt.Errorf("no list type for %T: %w", obj, err)
	}
	return list.(client.ObjectList), nil
}

func metaItems(list client.ObjectList) ([]metav1.Object, error) {
	objs, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	out := make([]metav1.Object, 0, len(objs))
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// operatorKubeconfig writes a kubeconfig for a user bound only to the
// ClusterRole generated from the RBAC markers.
func operatorKubeconfig(b *testing.B, env *envtest.Environment, c client.Client) string {
	b.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	role.Name = "parley-manager-scale"
	if err := c.Create(ctx, role); err != nil {
		b.Fatal(err)
	}
	const user = "parley-operator-scale"
	if err := c.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}); err != nil {
		b.Fatal(err)
	}
	u, err := env.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(kubeconfigFor(u.Config()), path); err != nil {
		b.Fatal(err)
	}
	return path
}

func kubeconfigFor(cfg *rest.Config) clientcmdapi.Config {
	return clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{"envtest": {Server: cfg.Host, CertificateAuthorityData: cfg.CAData}},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{"operator": {
			ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
		}},
		Contexts:       map[string]*clientcmdapi.Context{"envtest": {Cluster: "envtest", AuthInfo: "operator"}},
		CurrentContext: "envtest",
	}
}

func buildManager(b *testing.B) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), "manager")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/manager")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the manager: %v\n%s", err, msg)
	}
	return out
}

func freePort(b *testing.B) int {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitHealthy(b *testing.B, port int, logPath string) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(logPath)
	b.Fatalf("manager not ready within 60s:\n%s", log)
}

// settleUntilQuiet waits until no API write happened for quiet (or max
// passes): the event recorder drains its backlog of creation events at the
// client's rate limit well after the children exist. Reconciles never stop
// (with a thousand clusters, resyncs are continuous), so only writes count.
func settleUntilQuiet(b *testing.B, cfg *rest.Config, quiet, maxWait time.Duration) {
	b.Helper()
	deadline := time.Now().Add(maxWait)
	state := func() float64 {
		n := 0.0
		for _, v := range apiWrites(b, cfg) {
			n += v
		}
		return n
	}
	last := state()
	lastChange := time.Now()
	for time.Now().Before(deadline) && time.Since(lastChange) < quiet {
		time.Sleep(time.Second)
		if c := state(); c != last {
			last, lastChange = c, time.Now()
		}
	}
}
