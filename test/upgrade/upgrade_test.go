// Package upgrade tests an operator upgrade the way a platform team lives it:
// the previous build of the manager runs the sample ChatClusters on a real
// control plane (kube-apiserver, etcd, and kube-controller-manager's
// Deployment and ReplicaSet controllers), then the current build replaces it,
// and the test counts what restarted.
package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/backends"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/testenv"
)

// chatImage is the chat server image both builds are given: the upgrade
// under test changes the operator, not the chat server.
const chatImage = "registry.example.org/parley/parley:upgrade-test"

// TestUpgradeRestartsNoChatPod runs the manager built from the baseline build
// (testdata/baseline, or PARLEY_UPGRADE_FROM, any commit-ish)
// with that commit's CRDs, creates every sample ChatCluster, then upgrades
// the CRDs and the manager to this tree with the same chat server image, and
// requires that no ReplicaSet was created and no pod replaced: nothing
// restarted.
func TestUpgradeRestartsNoChatPod(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two managers and runs a control plane")
	}
	// The control plane's own logging is not what this test reports on.
	logf.SetLogger(logr.Discard())
	root := testenv.RepoRoot()
	from := previousBuild(t, root)
	t.Logf("upgrading from %s", from)

	work := t.TempDir()
	oldTree := filepath.Join(work, "old")
	run(t, root, "sh", "-c", fmt.Sprintf("mkdir -p %s && git archive --format=tar %s | tar -x -C %s", oldTree, from, oldTree))
	oldManager, newManager := filepath.Join(work, "manager-old"), filepath.Join(work, "manager-new")
	run(t, oldTree, "go", "build", "-o", oldManager, "./cmd/manager")
	run(t, root, "go", "build", "-o", newManager, "./cmd/manager")

	env := &envtest.Environment{
		BinaryAssetsDirectory: testenv.Assets(t),
		CRDDirectoryPaths:     []string{filepath.Join(oldTree, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the control plane: %v", err)
		}
	})
	kubeconfig := adminKubeconfig(t, env, work)
	kcm := filepath.Join(testenv.Assets(t), "kube-controller-manager")
	if _, err := os.Stat(kcm); err != nil {
		t.Fatalf("the Deployment and ReplicaSet controllers run from %s: build it with hack/control-plane.sh --with-kcm: %v", kcm, err)
	}
	start(t, "kube-controller-manager", kcm, nil,
		"--kubeconfig="+kubeconfig, "--controllers=deployment-controller,replicaset-controller",
		"--leader-elect=false", "--secure-port=0", "--v=0")

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := namespace(t, c, "tenant")
	platform := namespace(t, c, "platform")
	standInBackends(t, c, platform)
	clusters := createSamples(t, c, root, ns)
	cleanUpExternalState(t, ns, clusters)

	oldRun := startManager(t, "old manager", oldManager, kubeconfig)
	waitSettled(t, c, ns, clusters, oldRun, len(clusters))
	before := snapshot(t, c, ns)
	for name, s := range before {
		t.Logf("before the upgrade: Deployment %s generation %d, ReplicaSets %v, %d pods", name, s.generation, s.replicaSets, len(s.pods))
	}
	oldRun.stop()

	// The chart installs the new CRDs, then rolls the operator.
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(root, "config", "crd", "bases")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install the current CRDs: %v", err)
	}
	// The test reads the reconcile count over plain HTTP: the current build
	// serves metrics over HTTPS with authentication unless told otherwise
	// (the baseline build knows no such flag).
	newRun := startManager(t, "new manager", newManager, kubeconfig, "--metrics-secure=false")
	waitSettled(t, c, ns, clusters, newRun, len(clusters))
	after := snapshot(t, c, ns)

	restarted := 0
	for name, b := range before {
		a, ok := after[name]
		if !ok {
			t.Errorf("Deployment %s is gone after the upgrade", name)
			continue
		}
		t.Logf("after the upgrade: Deployment %s generation %d (was %d), ReplicaSets %v, %d pods",
			name, a.generation, b.generation, a.replicaSets, len(a.pods))
		if !slices.Equal(a.replicaSets, b.replicaSets) {
			restarted++
			t.Errorf("Deployment %s rolled: ReplicaSets %v before the upgrade, %v after", name, b.replicaSets, a.replicaSets)
		}
		for _, uid := range b.pods {
			if !slices.Contains(a.pods, uid) {
				t.Errorf("Deployment %s: pod %s was replaced", name, uid)
			}
		}
	}
	t.Logf("%d of %d Deployments rolled at the upgrade from %s", restarted, len(before), from)
}

// previousBuild is PARLEY_UPGRADE_FROM, or the baseline build named in
// testdata/baseline. A pinned baseline rather than "the parent of the newest
// commit that changed the builders": what users run is a released build, and
// an intermediate commit between two merges is not one of those.
func previousBuild(t *testing.T, root string) string {
	from := os.Getenv("PARLEY_UPGRADE_FROM")
	if from == "" {
		data, err := os.ReadFile(filepath.Join(root, "test", "upgrade", "testdata", "baseline"))
		if err != nil {
			t.Fatalf("no PARLEY_UPGRADE_FROM and no baseline: %v", err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				from = l
				break
			}
		}
	}
	return strings.TrimSpace(run(t, root, "git", "rev-parse", "--verify", from+"^{commit}"))
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, stderr.String())
	}
	return string(out)
}

func adminKubeconfig(t *testing.T, env *envtest.Environment, dir string) string {
	t.Helper()
	u, err := env.AddUser(envtest.User{Name: "upgrade-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// process is a program the test started and stops.
type process struct {
	name    string
	cmd     *exec.Cmd
	out     *lockedBuffer
	stopped bool
}

func start(t *testing.T, name, bin string, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, out: out}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return p
}

// stop ends the process the way the kubelet does: SIGTERM, then wait.
func (p *process) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// manager is a running operator build and the address of its metrics.
type manager struct {
	*process
	metrics string
}

func startManager(t *testing.T, name, bin, kubeconfig string, extra ...string) manager {
	t.Helper()
	metrics := freeAddr(t)
	p := start(t, name, bin, []string{"KUBECONFIG=" + kubeconfig, "POD_NAMESPACE=parley-system"},
		append([]string{"--chat-server-image=" + chatImage, "--metrics-bind-address=" + metrics, "--health-probe-bind-address=0",
			"--leader-elect=false", "--resync-period=1h"}, extra...)...)
	return manager{process: p, metrics: metrics}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// reconciles is the manager's count of finished ChatCluster reconciles,
// whatever their result (a pass that asks to come back later counts).
func (m manager) reconciles() (int, error) {
	resp, err := http.Get("http://" + m.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "controller_runtime_reconcile_total{") ||
			!strings.Contains(line, `controller="chatcluster"`) {
			continue
		}
		n, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, err
		}
		total += int(n)
	}
	return total, sc.Err()
}

func namespace(t *testing.T, c client.Client, prefix string) string {
	t.Helper()
	name := testenv.UniqueName(t, prefix)
	if len(name) > 40 {
		name = prefix + "-" + name[len(name)-8:]
	}
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// standInBackends creates the ChatBackends the production sample names
// (shared-rabbitmq, shared-postgres) on the machine's real RabbitMQ and
// PostgreSQL, through connection Secrets instead of the operators the
// sample's backends point at.
func standInBackends(t *testing.T, c client.Client, platform string) {
	t.Helper()
	ctx := context.Background()
	secret := func(name string, data map[string]string) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: platform, Name: name}, StringData: data}
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	secret("rabbitmq-admin", map[string]string{
		backends.ConnectionURIKey: testenv.AMQPURL(), backends.ConnectionManagementURIKey: testenv.AMQPManagementURL(),
	})
	secret("postgres-admin", map[string]string{"uri": testenv.PostgresURL()})
	all := v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromAll}
	for _, b := range []*v1alpha1.ChatBackend{
		{ObjectMeta: metav1.ObjectMeta{Name: "shared-rabbitmq"}, Spec: v1alpha1.ChatBackendSpec{
			RabbitMQ:          &v1alpha1.RabbitMQBackend{ConnectionSecret: &v1alpha1.ObjectReference{Namespace: platform, Name: "rabbitmq-admin"}},
			AllowedNamespaces: all,
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shared-postgres"}, Spec: v1alpha1.ChatBackendSpec{
			PostgreSQL: &v1alpha1.PostgreSQLBackend{AdminSecretRef: &v1alpha1.NamespacedSecretKeyReference{
				Namespace: platform, Name: "postgres-admin", Key: "uri"}},
			AllowedNamespaces: all,
		}},
	} {
		if err := c.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}

// createSamples creates every ChatCluster of config/samples in ns, as
// written, and returns their names.
func createSamples(t *testing.T, c client.Client, root, ns string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for doc := range strings.SplitSeq(string(data), "\n---") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if u.GetKind() != "ChatCluster" {
				continue
			}
			u.SetNamespace(ns)
			if err := c.Create(context.Background(), u); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			names = append(names, u.GetName())
		}
	}
	if len(names) < 2 {
		t.Fatalf("found %d sample ChatClusters, want at least 2", len(names))
	}
	return names
}

// cleanUpExternalState removes what the operator created on the real
// RabbitMQ and PostgreSQL for the samples (the production sample retains
// its database by policy, and the managers are gone before any deletion).
func cleanUpExternalState(t *testing.T, ns string, clusters []string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		mgmt := managementClient(t)
		conn, err := pgx.Connect(ctx, testenv.PostgresURL())
		if err != nil {
			t.Errorf("clean up PostgreSQL: %v", err)
		}
		for _, name := range clusters {
			if mgmt != nil {
				_, _ = mgmt.DeleteVhost(naming.BrokerVHost(ns, name))
				_, _ = mgmt.DeleteUser(naming.BrokerUser(ns, name))
			}
			if conn != nil {
				db := postgres.DatabaseFor(ns, name)
				for _, stmt := range []string{
					"DROP DATABASE IF EXISTS " + pgx.Identifier{db.Name}.Sanitize() + " WITH (FORCE)",
					"DROP ROLE IF EXISTS " + pgx.Identifier{db.Role}.Sanitize(),
				} {
					if _, err := conn.Exec(ctx, stmt); err != nil {
						t.Errorf("clean up PostgreSQL: %s: %v", stmt, err)
					}
				}
			}
		}
		if conn != nil {
			conn.Close(ctx)
		}
	})
}

func managementClient(t *testing.T) *rabbithole.Client {
	amqp, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Errorf("clean up RabbitMQ: %v", err)
		return nil
	}
	pass, _ := amqp.User.Password()
	c, err := rabbithole.NewClient(testenv.AMQPManagementURL(), amqp.User.Username(), pass)
	if err != nil {
		t.Errorf("clean up RabbitMQ: %v", err)
		return nil
	}
	return c
}

// waitSettled waits until every sample has its Deployment and its
// ReplicaSet, the ChatClusters' status describes their generation, and the
// manager has finished at least one more reconcile of each after that
// (so a write it meant to make has been made).
func waitSettled(t *testing.T, c client.Client, ns string, clusters []string, m manager, min int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	check := func() error {
		for _, name := range clusters {
			cc := &v1alpha1.ChatCluster{}
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, cc); err != nil {
				return err
			}
			if cc.Status.ObservedGeneration != cc.Generation {
				return fmt.Errorf("ChatCluster %s: observedGeneration %d, generation %d", name, cc.Status.ObservedGeneration, cc.Generation)
			}
			d := &appsv1.Deployment{}
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
				return fmt.Errorf("Deployment %s: %w", name, err)
			}
			if d.Status.ObservedGeneration != d.Generation {
				return fmt.Errorf("Deployment %s: the deployment controller has not seen generation %d", name, d.Generation)
			}
		}
		n, err := m.reconciles()
		if err != nil {
			return fmt.Errorf("%s metrics: %w", m.name, err)
		}
		if n < min {
			return fmt.Errorf("%s: %d ChatCluster reconciles so far, want %d", m.name, n, min)
		}
		return nil
	}
	settled := func() {
		for {
			err := check()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the samples did not settle under the %s: %v", m.name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	settled()
	// One more pass of each after the settled state: trigger it and wait
	// for the count to grow, so the snapshot follows this manager's writes.
	n, _ := m.reconciles()
	for _, name := range clusters {
		cc := &v1alpha1.ChatCluster{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, cc); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(cc.DeepCopy())
		metav1.SetMetaDataAnnotation(&cc.ObjectMeta, "test.parley.io/nudge", m.name+"-"+strconv.FormatInt(time.Now().UnixNano(), 10))
		if err := c.Patch(context.Background(), cc, patch); err != nil {
			t.Fatal(err)
		}
	}
	for {
		got, err := m.reconciles()
		if err == nil && got >= n+len(clusters) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d reconciles after the nudge, want %d (%v)", m.name, got, n+len(clusters), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The deployment controller has acted on what the manager wrote (its
	// ReplicaSets follow within the same sync).
	settled()
}

type deploymentState struct {
	generation  int64
	replicaSets []string // pod-template-hash of each ReplicaSet, sorted
	pods        []string // UIDs, sorted
}

func snapshot(t *testing.T, c client.Client, ns string) map[string]deploymentState {
	t.Helper()
	ctx := context.Background()
	out := map[string]deploymentState{}
	ds := &appsv1.DeploymentList{}
	if err := c.List(ctx, ds, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	rss := &appsv1.ReplicaSetList{}
	if err := c.List(ctx, rss, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds.Items {
		s := deploymentState{generation: d.Generation}
		for _, rs := range rss.Items {
			if metav1.IsControlledBy(&rs, &d) {
				s.replicaSets = append(s.replicaSets, rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey])
				for _, p := range pods.Items {
					if metav1.IsControlledBy(&p, &rs) {
						s.pods = append(s.pods, string(p.UID))
					}
				}
			}
		}
		if len(s.replicaSets) == 0 {
			t.Fatalf("Deployment %s has no ReplicaSet: is the deployment controller running?", d.Name)
		}
		slices.Sort(s.replicaSets)
		slices.Sort(s.pods)
		out[d.Name] = s
	}
	return out
}

// lockedBuffer collects a process's output for the failure log.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
