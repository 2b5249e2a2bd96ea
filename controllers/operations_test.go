package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/status"
	"github.com/parley-chat/parley/internal/testenv"
)

func init() {
	register("ScaleSubresource", testScale)
	register("HPAOwnedReplicasAreNotFoughtOver", testHPAReplicas)
	register("PauseStopsChangesAndDeletionStillWorks", testPause)
	register("DeletionCascadesThroughOwnerReferences", testDeletion)
	register("NoOpReconcileMakesZeroWrites", testZeroWrites)
	register("SamplesPassValidationAndRun", testSamples)
}

func scaleOf(t *testing.T, s *suite, cc *v1alpha1.ChatCluster) *autoscalingv1.Scale {
	t.Helper()
	sc := &autoscalingv1.Scale{}
	if err := s.c.SubResource("scale").Get(context.Background(), cc, sc); err != nil {
		t.Fatal(err)
	}
	return sc
}

// scaleTo does what `kubectl scale chatcluster --replicas=n` does: a merge
// patch of the scale subresource.
func scaleTo(s *suite, cc *v1alpha1.ChatCluster, n int) error {
	patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)))
	return s.c.SubResource("scale").Patch(context.Background(), cc, patch, client.WithSubResourceBody(&autoscalingv1.Scale{}))
}

func testScale(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "scaled")
	s.brokerAndDatabase(t, ns, cc)
	cc.Spec.Replicas = ptr[int32](2)
	s.create(t, cc)
	s.deployment(t, ns, "scaled")

	if err := scaleTo(s, cc, 5); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Deployment scaled to 5", func() error {
		if d := s.deployment(t, ns, "scaled"); *d.Spec.Replicas != 5 {
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		}
		return nil
	})
	s.rollOut(t, ns, "scaled")
	s.condition(t, ns, "scaled", v1alpha1.ConditionReady, metav1.ConditionTrue)
	sc := scaleOf(t, s, cc)
	if sc.Status.Replicas != 5 || sc.Status.Selector != "app.kubernetes.io/instance=scaled,app.kubernetes.io/name=parley-chat" {
		t.Errorf("scale status = %+v", sc.Status)
	}

	// Without a broker more than one replica is refused, through /scale too.
	solo := newCluster(ns, "solo")
	s.create(t, solo)
	err := scaleTo(s, solo, 3)
	if err == nil || !strings.Contains(err.Error(), "spec.broker is required") {
		t.Errorf("scaling a broker-less cluster to 3: %v", err)
	}

	// With autoscaling the HPA owns the count: kubectl scale is refused.
	auto := newCluster(ns, "auto")
	auto.Spec.Broker, auto.Spec.Database = cc.Spec.Broker, cc.Spec.Database
	auto.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MaxReplicas: 4}
	s.create(t, auto)
	err = scaleTo(s, auto, 3)
	if err == nil || !strings.Contains(err.Error(), "spec.replicas cannot change while spec.autoscaling is set") {
		t.Errorf("scaling an autoscaled cluster: %v", err)
	}
}

func testHPAReplicas(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "hpa")
	s.brokerAndDatabase(t, ns, cc)
	cc.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: ptr[int32](3), MaxReplicas: 10, TargetConnectionsPerPod: ptr[int32](2000)}
	s.create(t, cc)
	d := s.deployment(t, ns, "hpa")
	if *d.Spec.Replicas != 3 {
		t.Errorf("a new autoscaled Deployment starts at %d replicas, want minReplicas 3", *d.Spec.Replicas)
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	eventually(t, "HPA", func() error { return s.get(t, ns, "hpa", hpa) })
	if hpa.Spec.ScaleTargetRef.Name != "hpa" || len(hpa.Spec.Metrics) != 2 {
		t.Errorf("HPA spec = %+v", hpa.Spec)
	}

	// The HPA decides on 7 replicas.
	s.update(t, d, func() { d.Spec.Replicas = ptr[int32](7) })
	generation := d.Generation
	// A spec change that reaches the HPA and the pods, then two more passes.
	s.update(t, cc, func() { cc.Spec.Autoscaling.MaxReplicas = 12; cc.Spec.Limits.ConnectionsPerUser = ptr[int32](3) })
	eventually(t, "HPA max follows the spec", func() error {
		if err := s.get(t, ns, "hpa", hpa); err != nil {
			return err
		}
		if hpa.Spec.MaxReplicas != 12 {
			return fmt.Errorf("max %d", hpa.Spec.MaxReplicas)
		}
		return nil
	})
	s.reconciledTwice(t, cc, "rabbitmq")
	d = s.deployment(t, ns, "hpa")
	if *d.Spec.Replicas != 7 {
		t.Errorf("the operator set replicas to %d over the HPA's 7", *d.Spec.Replicas)
	}
	if d.Generation != generation+1 {
		t.Errorf("Deployment generation %d, want %d (one template change for the new limit)", d.Generation, generation+1)
	}
	s.rollOut(t, ns, "hpa")
	s.condition(t, ns, "hpa", v1alpha1.ConditionReady, metav1.ConditionTrue)
	if cc := s.cluster(t, ns, "hpa"); cc.Status.Replicas != 7 {
		t.Errorf("status.replicas = %d, want the HPA's 7", cc.Status.Replicas)
	}
}

func testPause(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "held")
	s.create(t, cc)
	s.deployment(t, ns, "held")
	s.rollOut(t, ns, "held")
	s.condition(t, ns, "held", v1alpha1.ConditionReady, metav1.ConditionTrue)
	cm := &corev1.ConfigMap{}
	if err := s.get(t, ns, "held-config", cm); err != nil {
		t.Fatal(err)
	}

	s.update(t, cc, func() { cc.Annotations = map[string]string{v1alpha1.AnnotationPaused: "true"} })
	s.condition(t, ns, "held", v1alpha1.ConditionPaused, metav1.ConditionTrue)
	if paused := gauge(t, "parley_operator_chatclusters_paused", nil); paused < 1 {
		t.Errorf("parley_operator_chatclusters_paused = %v while a cluster is paused", paused)
	}
	applied := s.cluster(t, ns, "held").Status.ObservedGeneration

	s.update(t, cc, func() { cc.Spec.Limits.MaxMessageBytes = 2048 })
	ready := s.condition(t, ns, "held", v1alpha1.ConditionReady, metav1.ConditionFalse)
	if ready.Reason != status.ReasonPaused {
		t.Errorf("Ready while a change waits behind the pause = %s (%s)", ready.Reason, ready.Message)
	}
	s.condition(t, ns, "held", v1alpha1.ConditionPaused, metav1.ConditionTrue)
	if got := s.cluster(t, ns, "held").Status.ObservedGeneration; got != applied {
		t.Errorf("status.observedGeneration moved to %d while paused (applied: %d)", got, applied)
	}
	after := &corev1.ConfigMap{}
	if err := s.get(t, ns, "held-config", after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != cm.ResourceVersion {
		t.Error("the ConfigMap changed while paused")
	}

	s.update(t, cc, func() { delete(cc.Annotations, v1alpha1.AnnotationPaused) })
	s.condition(t, ns, "held", v1alpha1.ConditionPaused, metav1.ConditionFalse)
	eventually(t, "the held change applied", func() error {
		if err := s.get(t, ns, "held-config", after); err != nil {
			return err
		}
		if !strings.Contains(after.Data["config.json"], `"maxMessageBytes": 2048`) {
			return fmt.Errorf("not yet")
		}
		return nil
	})

	// Deleting a paused cluster works.
	s.update(t, cc, func() { cc.Annotations = map[string]string{v1alpha1.AnnotationPaused: "true"} })
	s.condition(t, ns, "held", v1alpha1.ConditionPaused, metav1.ConditionTrue)
	if err := s.c.Delete(context.Background(), cc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "paused cluster deleted", func() error {
		if err := s.get(t, ns, "held", &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

// gauge reads a metric of the operator's registry (summing series matching labels).
func gauge(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if matches(m, labels) {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// testDeletion runs the real garbage collector (kube-controller-manager with
// only that controller) against the envtest API server.
func testDeletion(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "gone")
	s.brokerAndDatabase(t, ns, cc)
	cc.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MaxReplicas: 3}
	cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org"}
	cc.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
	s.create(t, cc)
	cc = s.cluster(t, ns, "gone")
	sm := &unstructured.Unstructured{}
	sm.SetGroupVersionKind(resource.ServiceMonitorGVK)
	children := map[string]client.Object{
		"ServiceAccount": &corev1.ServiceAccount{}, "ConfigMap": &corev1.ConfigMap{}, "Service": &corev1.Service{},
		"Deployment": &appsv1.Deployment{}, "HorizontalPodAutoscaler": &autoscalingv2.HorizontalPodAutoscaler{},
		"PodDisruptionBudget": &policyv1.PodDisruptionBudget{}, "Ingress": &networkingv1.Ingress{},
		"NetworkPolicy": &networkingv1.NetworkPolicy{}, "ServiceMonitor": sm,
	}
	name := func(kind string) string {
		if kind == "ConfigMap" {
			return "gone-config"
		}
		return "gone"
	}
	for kind, obj := range children {
		eventually(t, kind, func() error {
			if err := s.get(t, ns, name(kind), obj); err != nil {
				return err
			}
			return ownedBy(obj, cc)
		})
	}

	startGarbageCollector(t, s)
	if err := s.c.Delete(context.Background(), cc, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
		t.Fatal(err)
	}
	for kind, obj := range children {
		eventually(t, kind+" collected", func() error {
			if err := s.get(t, ns, name(kind), obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		})
	}
	eventually(t, "ChatCluster gone", func() error {
		if err := s.get(t, ns, "gone", &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

func startGarbageCollector(t *testing.T, s *suite) {
	t.Helper()
	bin := filepath.Join(testenv.Assets(t), "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the garbage collector runs from %s (built by hack/control-plane.sh): %v", bin, err)
	}
	u, err := s.env.AddUser(envtest.User{Name: "garbage-collector", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--kubeconfig="+path, "--controllers=garbage-collector-controller", "--leader-elect=false",
		"--secure-port=0", "--concurrent-gc-syncs=5", "--v=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("kube-controller-manager output:\n%s", out.String())
		}
	})
}

func testZeroWrites(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "quiet")
	s.secret(t, ns, "chat-tls", true, map[string]string{"tls.crt": "c", "tls.key": "k"})
	s.brokerAndDatabase(t, ns, cc)
	// Every kind of child, and an override adding a sidecar the API server fills with defaults.
	cc.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MaxReplicas: 6, TargetConnectionsPerPod: ptr[int32](1000)}
	cc.Spec.TLS = &v1alpha1.TLSSpec{SecretName: "chat-tls"}
	cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org", TLSSecretName: "chat-tls", Annotations: map[string]string{"a": "b"}}
	cc.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true, AllowedFrom: []networkingv1.NetworkPolicyPeer{{
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "frontend"}},
	}}}
	cc.Spec.Service = v1alpha1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Annotations: map[string]string{"lb": "internal"}}
	maxUnavailable := intstr.FromString("25%")
	cc.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MaxUnavailable: &maxUnavailable}
	cc.Spec.Pod.Tolerations = []corev1.Toleration{{Key: "chat", Operator: corev1.TolerationOpExists}}
	o, err := v1alpha1.NewDeploymentOverride([]byte(`{"spec":{"template":{"spec":{"containers":[
		{"name":"chatserver","env":[{"name":"GODEBUG","value":"x=1"}]},
		{"name":"sidecar","image":"example.org/sidecar:1","ports":[{"containerPort":9000}],
		 "readinessProbe":{"tcpSocket":{"port":9000}},
		 "securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	cc.Spec.Override = &v1alpha1.OverrideSpec{Deployment: o}
	s.create(t, cc)
	s.deployment(t, ns, "quiet")
	s.rollOut(t, ns, "quiet")
	s.condition(t, ns, "quiet", v1alpha1.ConditionReady, metav1.ConditionTrue)
	// Let the pass that saw the roll-out finish, and its events be written.
	s.reconciledTwice(t, cc, "rabbitmq")
	s.quiet(t, ns, 2*time.Second)

	mark := s.requests.mark()
	s.reconciledTwice(t, cc, "rabbitmq")
	s.reconciledTwice(t, cc, "rabbitmq")
	// An event about these passes would be written after them.
	time.Sleep(time.Second)
	reqs := s.requests.since(mark, ns)
	if w := writes(reqs); len(w) > 0 {
		t.Errorf("an unchanged ChatCluster made %d writes:\n%v", len(w), w)
		var list eventsv1.EventList
		_ = s.c.List(context.Background(), &list, client.InNamespace(ns))
		for _, e := range list.Items {
			t.Logf("event %s %s: %s", e.Reason, e.Regarding.Name, e.Note)
		}
		t.Logf("status: %+v", s.cluster(t, ns, "quiet").Status)
	}
	t.Logf("4 no-op passes: %d requests, none a write", len(reqs))
}

func testSamples(t *testing.T, s *suite) {
	ns := s.namespace(t)
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if u.GetKind() != "ChatCluster" {
				continue
			}
			n++
			u.SetNamespace(ns)
			if err := s.c.Create(context.Background(), u); err != nil {
				t.Errorf("%s: sample %s refused: %v", filepath.Base(f), u.GetName(), err)
				continue
			}
			cm := &corev1.ConfigMap{}
			eventually(t, u.GetName()+" config", func() error { return s.get(t, ns, u.GetName()+"-config", cm) })
			if _, err := config.Parse([]byte(cm.Data["config.json"])); err != nil {
				t.Errorf("%s: the chat server refuses the config rendered from sample %s: %v", filepath.Base(f), u.GetName(), err)
			}
		}
	}
	if n < 2 {
		t.Errorf("found %d ChatCluster samples in config/samples, want at least 2", n)
	}
}
