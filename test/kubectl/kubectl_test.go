// Package kubectl proves, with the real kubectl v1.37.2 (built by
// `hack/control-plane.sh --with-kubectl`), what the ChatCluster API promises
// its users: `kubectl wait --for=condition=Ready` follows the generation,
// `kubectl scale` works unless autoscaling owns the count, `kubectl get chat`
// prints the status columns, and `kubectl apply -k config/default` installs
// the operator. The API server is envtest's; the operator is the real
// reconciler in a manager; the tests play the Deployment controller.
package kubectl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/testenv"
)

// kubeVersion is the kubectl hack/control-plane.sh builds (K8S_VERSION).
const kubeVersion = "v1.37.2"

// testImage is the operator's default chat server image in these tests.
const testImage = "example.org/parley:kubectl-test"

// env is what every scenario shares: one API server, an administrator's
// client and the kubectl that talks to it.
type env struct {
	cfg *rest.Config
	c   client.Client
	kubectl
}

// TestKubectl starts one API server with the repository's CRDs and runs the
// scenarios against it side by side; each scenario that needs the operator
// runs its own manager, watching only its namespace.
func TestKubectl(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	bin := kubectlBinary(t)
	te, cfg := testenv.StartControlPlane(t)
	c, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cfg: cfg, c: c, kubectl: kubectl{bin: bin, kubeconfig: writeKubeconfig(t, te), home: t.TempDir()}}

	out := e.must(t, "version", "--client", "-o", "json")
	var v struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.ClientVersion.GitVersion != kubeVersion {
		t.Fatalf("kubectl version --client = %s (%v), want %s", out, err, kubeVersion)
	}

	// First and alone: it applies the CRD the other scenarios use (the same
	// one, adding kustomize's labels).
	t.Run("ApplyKustomizeDefault", func(t *testing.T) { testApplyKustomize(t, e) })
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"WaitFollowsTheGeneration", testWait},
		{"ScaleAndGet", testScaleAndGet},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, e)
		})
	}
}

// kubectlBinary is kubectl in KUBEBUILDER_ASSETS, where
// `hack/control-plane.sh --with-kubectl` (run by `make test`) builds it.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(testenv.Assets(t), "kubectl")
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("no kubectl at %s: run `make test`, or build it with hack/control-plane.sh --with-kubectl (%v)", p, err)
	}
	return p
}

// writeKubeconfig writes a kubeconfig for an administrator of the envtest
// API server (group system:masters).
func writeKubeconfig(t *testing.T, te *envtest.Environment) string {
	t.Helper()
	u, err := te.AddUser(envtest.User{Name: "kubectl-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// kubectl runs the real binary with a private kubeconfig and home (its
// discovery cache), so nothing of the machine's user leaks in.
type kubectl struct {
	bin, kubeconfig, home string
}

// result is what one kubectl run printed and how it ended.
type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("exit: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
}

func (k kubectl) command(ctx context.Context, stdin string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + k.home, "KUBECONFIG=" + k.kubeconfig}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// runIn runs kubectl with stdin and returns its result; a kubectl that
// hangs is killed after two minutes.
func (k kubectl) runIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, stdout, stderr := k.command(ctx, stdin, args...)
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

func (k kubectl) run(t *testing.T, args ...string) result {
	t.Helper()
	return k.runIn(t, "", args...)
}

// must runs kubectl and fails the test unless it succeeds; it returns stdout.
func (k kubectl) must(t *testing.T, args ...string) string {
	t.Helper()
	r := k.run(t, args...)
	if r.err != nil {
		t.Fatalf("kubectl %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// apply pipes a manifest to `kubectl apply -f -`.
func (k kubectl) apply(t *testing.T, ns, manifest string) {
	t.Helper()
	if r := k.runIn(t, manifest, "apply", "-n", ns, "-f", "-"); r.err != nil {
		t.Fatalf("kubectl apply:\n%s\n%s", manifest, r)
	}
}

// background is a kubectl still running.
type background struct {
	done   chan struct{}
	result result
}

// start runs kubectl in the background (killed when the test ends).
func (k kubectl) start(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd, stdout, stderr := k.command(ctx, "", args...)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	b := &background{done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		b.result = result{stdout.String(), stderr.String(), err}
		cancel()
		close(b.done)
	}()
	t.Cleanup(func() { cancel(); <-b.done })
	return b
}

func (b *background) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// wait returns the result once kubectl exits, failing after d.
func (b *background) wait(t *testing.T, d time.Duration) result {
	t.Helper()
	select {
	case <-b.done:
		return b.result
	case <-time.After(d):
		t.Fatalf("kubectl still running after %s", d)
		return result{}
	}
}

// timedOut tells whether kubectl wait gave up at its --timeout.
func timedOut(r result) bool {
	var exit *exec.ExitError
	return errors.As(r.err, &exit) && strings.Contains(r.stderr, "timed out waiting for the condition")
}

// namespace creates a namespace for one scenario. It stays until the control
// plane stops (envtest runs no namespace controller).
func (e *env) namespace(t *testing.T) string {
	t.Helper()
	ns := testenv.UniqueName(t, "kubectl")
	e.must(t, "create", "namespace", ns)
	return ns
}

// operator runs the real reconciler in a manager watching namespace ns and
// returns the function that stops it (also called when the test ends).
func (e *env) operator(t *testing.T, ns string) (stop func()) {
	t.Helper()
	cfg := rest.CopyConfig(e.cfg)
	cfg.QPS, cfg.Burst = 200, 400
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 controllers.NewScheme(),
		Cache:                  controllers.CacheOptions([]string{ns}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several scenarios (and restarts) run a "chatcluster" controller in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.ChatClusterReconciler{Options: controllers.Options{
		DefaultImage: testImage, ClusterDomain: "cluster.local", MaxConcurrentReconciles: 2,
	}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
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

func (e *env) cluster(t *testing.T, ns, name string) *v1alpha1.ChatCluster {
	t.Helper()
	cc := &v1alpha1.ChatCluster{}
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, cc); err != nil {
		t.Fatal(err)
	}
	return cc
}

// deployment waits for the cluster's Deployment to satisfy check.
func (e *env) deployment(t *testing.T, ns, name, what string, check func(*appsv1.Deployment) error) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	eventually(t, what, func() error {
		if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
			return err
		}
		return check(d)
	})
	return d
}

// rollOut plays the Deployment controller envtest does not run: it reports
// every replica of the Deployment's current template updated, available and
// ready.
func (e *env) rollOut(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, "roll out "+name, func() error {
		d := &appsv1.Deployment{}
		if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
			return err
		}
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
				LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
		}
		return e.c.Status().Update(context.Background(), d)
	})
}

// ready waits until the operator reports Ready with the given status for the
// cluster's current generation, and returns that condition.
func (e *env) ready(t *testing.T, ns, name string, want metav1.ConditionStatus) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, "Ready="+string(want), func() error {
		cc := &v1alpha1.ChatCluster{}
		if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, cc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionReady)
		switch {
		case c == nil:
			return fmt.Errorf("no Ready condition: %+v", cc.Status.Conditions)
		case c.ObservedGeneration != cc.Generation:
			return fmt.Errorf("Ready describes generation %d, the cluster is at %d", c.ObservedGeneration, cc.Generation)
		case c.Status != want:
			return fmt.Errorf("Ready is %s (%s: %s)", c.Status, c.Reason, c.Message)
		}
		got = *c
		return nil
	})
	return got
}
