package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/status"
	"github.com/parley-chat/parley/internal/testenv"
)

func init() {
	register("CreateBuildsChildrenAndReportsStatus", testCreate)
	register("DeploymentWaitsForItsSecrets", testWaitsForSecrets)
	register("ReadyDescribesTheCurrentGeneration", testReadyGeneration)
	register("PodsRollOnlyOnARealChange", testRollOnlyOnRealChange)
	register("OptionalChildrenFollowTheSpec", testOptionalChildren)
	register("OverrideTheDeploymentCannotTakeIsDegraded", testBadOverride)
	register("ServiceTypeChangesBothWays", testServiceType)
}

func testServiceType(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "svc")
	cc.Spec.Service = v1alpha1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Annotations: map[string]string{"lb.example.org/internal": "true"}}
	s.create(t, cc)
	svc := &corev1.Service{}
	eventually(t, "LoadBalancer Service", func() error {
		if err := s.get(t, ns, "svc", svc); err != nil {
			return err
		}
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.Ports[0].NodePort == 0 {
			return fmt.Errorf("spec %+v", svc.Spec)
		}
		return nil
	})
	nodePort := svc.Spec.Ports[0].NodePort

	s.update(t, cc, func() { cc.Spec.Service.Port = ptr[int32](8080) })
	eventually(t, "port change keeps the node port", func() error {
		if err := s.get(t, ns, "svc", svc); err != nil {
			return err
		}
		if p := svc.Spec.Ports[0]; p.Port != 8080 || p.NodePort != nodePort {
			return fmt.Errorf("port %+v, want 8080 on node port %d", p, nodePort)
		}
		return nil
	})

	s.update(t, cc, func() { cc.Spec.Service = v1alpha1.ServiceSpec{Type: corev1.ServiceTypeClusterIP} })
	eventually(t, "back to ClusterIP", func() error {
		if err := s.get(t, ns, "svc", svc); err != nil {
			return err
		}
		if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.Ports[0].NodePort != 0 || svc.Spec.Ports[0].Port != 80 {
			return fmt.Errorf("spec %+v", svc.Spec)
		}
		if _, ok := svc.Annotations["lb.example.org/internal"]; ok {
			return fmt.Errorf("annotation removed from the spec still there: %v", svc.Annotations)
		}
		return nil
	})
	s.condition(t, ns, "svc", v1alpha1.ConditionDegraded, metav1.ConditionFalse)
}

func testCreate(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "team")
	s.create(t, cc)

	d := s.deployment(t, ns, "team")
	cc = s.cluster(t, ns, "team")
	children := map[string]client.Object{
		"team":        &corev1.ServiceAccount{},
		"team-config": &corev1.ConfigMap{},
	}
	for name, obj := range children {
		eventually(t, name, func() error {
			if err := s.get(t, ns, name, obj); err != nil {
				return err
			}
			return ownedBy(obj, cc)
		})
	}
	for _, obj := range []client.Object{&corev1.Service{}, &policyv1.PodDisruptionBudget{}, &unstructured.Unstructured{}} {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			u.SetGroupVersionKind(resource.ServiceMonitorGVK)
		}
		eventually(t, fmt.Sprintf("%T", obj), func() error {
			if err := s.get(t, ns, "team", obj); err != nil {
				return err
			}
			return ownedBy(obj, cc)
		})
	}
	if err := ownedBy(d, cc); err != nil {
		t.Error(err)
	}
	for _, obj := range []client.Object{&autoscalingv2.HorizontalPodAutoscaler{}, &networkingv1.Ingress{}, &networkingv1.NetworkPolicy{}} {
		if err := s.get(t, ns, "team", obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T exists without being asked for (%v)", obj, err)
		}
	}

	cm := children["team-config"].(*corev1.ConfigMap)
	cfg, err := config.Parse([]byte(cm.Data["config.json"]))
	if err != nil {
		t.Fatalf("the chat server would refuse the ConfigMap: %v", err)
	}
	if cfg.Broker.Type != "memory" || cfg.Namespaces[0].Name != "room" {
		t.Errorf("config from a minimal spec: broker %+v, namespaces %+v", cfg.Broker, cfg.Namespaces)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != testImage || *d.Spec.Replicas != 1 {
		t.Errorf("image %s replicas %d, want the operator's default image and 1 replica", c.Image, *d.Spec.Replicas)
	}

	ready := s.condition(t, ns, "team", v1alpha1.ConditionReady, metav1.ConditionFalse)
	if ready.Reason != status.ReasonRollingOut && ready.Reason != status.ReasonReplicasNotReady {
		t.Errorf("Ready before any pod is ready: %s (%s)", ready.Reason, ready.Message)
	}
	s.condition(t, ns, "team", v1alpha1.ConditionProgressing, metav1.ConditionTrue)
	s.condition(t, ns, "team", v1alpha1.ConditionDegraded, metav1.ConditionFalse)
	s.condition(t, ns, "team", v1alpha1.ConditionPaused, metav1.ConditionFalse)

	s.rollOut(t, ns, "team")
	s.condition(t, ns, "team", v1alpha1.ConditionReady, metav1.ConditionTrue)
	s.condition(t, ns, "team", v1alpha1.ConditionProgressing, metav1.ConditionFalse)
	if n := gauge(t, "parley_operator_chatclusters", map[string]string{"condition": "Ready", "status": "True"}); n < 1 {
		t.Errorf("parley_operator_chatclusters{condition=Ready,status=True} = %v with a Ready cluster", n)
	}
	cc = s.cluster(t, ns, "team")
	st := cc.Status
	if st.ObservedGeneration != cc.Generation || st.Replicas != 1 || st.ReadyReplicas != 1 || st.Image != testImage ||
		st.Endpoint != "ws://team."+ns+".svc.cluster.local/connection/websocket" ||
		st.Selector != "app.kubernetes.io/instance=team,app.kubernetes.io/name=parley-chat" {
		t.Errorf("status = %+v", st)
	}

	eventually(t, "Created events", func() error {
		var list eventsv1.EventList
		if err := s.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		created := map[string]bool{}
		for _, e := range list.Items {
			if e.Reason == "Created" && e.Regarding.Name == "team" && e.Related != nil {
				created[e.Related.Kind] = true
			}
		}
		for _, k := range []string{"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"} {
			if !created[k] {
				return fmt.Errorf("no Created event for the %s (have %v)", k, created)
			}
		}
		return nil
	})
}

func testWaitsForSecrets(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := newCluster(ns, "late")
	// The operator generates the key Secrets itself; the broker URI Secret is
	// the user's to create.
	cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "late-rabbit", Key: "uri"}}
	s.create(t, cc)
	ready := s.condition(t, ns, "late", v1alpha1.ConditionReady, metav1.ConditionFalse)
	if ready.Reason != status.ReasonWaitingForSecrets || !strings.Contains(ready.Message, "late-rabbit") {
		t.Errorf("Ready = %s (%s), want it to name the missing Secret", ready.Reason, ready.Message)
	}
	eventually(t, "the ConfigMap", func() error { return s.get(t, ns, "late-config", &corev1.ConfigMap{}) })
	if err := s.get(t, ns, "late", &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a Deployment exists before its Secrets (%v)", err)
	}
	// The Secret carries Parley's label: creating it triggers a pass by itself.
	s.secret(t, ns, "late-rabbit", true, map[string]string{"uri": testenv.AMQPURL()})
	s.deployment(t, ns, "late")
}

func testReadyGeneration(t *testing.T, s *suite) {
	ns := s.namespace(t)
	s.create(t, s.keyedCluster(t, ns, "gen"))
	s.deployment(t, ns, "gen")
	s.rollOut(t, ns, "gen")
	s.condition(t, ns, "gen", v1alpha1.ConditionReady, metav1.ConditionTrue)

	cc := s.cluster(t, ns, "gen")
	s.update(t, cc, func() { cc.Spec.Limits.PublishesPerSecond = ptr[int32](5) })
	// What `kubectl wait --for=condition=Ready` sees for the new generation:
	// not Ready while the Deployment controller has not rolled the new pods out.
	ready := s.condition(t, ns, "gen", v1alpha1.ConditionReady, metav1.ConditionFalse)
	if ready.Reason != status.ReasonRollingOut {
		t.Errorf("Ready after a spec change = %s (%s), want RollingOut", ready.Reason, ready.Message)
	}
	cc = s.cluster(t, ns, "gen")
	if cc.Status.ObservedGeneration != cc.Generation {
		t.Errorf("status.observedGeneration = %d, generation %d", cc.Status.ObservedGeneration, cc.Generation)
	}
	s.rollOut(t, ns, "gen")
	s.condition(t, ns, "gen", v1alpha1.ConditionReady, metav1.ConditionTrue)
}

func testRollOnlyOnRealChange(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "roll")
	s.secret(t, ns, "rabbit", true, map[string]string{"uri": "amqp://guest:guest@127.0.0.1:5672/"})
	cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbit", Key: "uri"}}
	s.create(t, cc)
	d := s.deployment(t, ns, "roll")
	hash := d.Spec.Template.Annotations[resource.AnnotationConfigHash]
	generation := d.Generation

	settled := func(what string) *appsv1.Deployment {
		t.Helper()
		eventually(t, what, func() error {
			cc := s.cluster(t, ns, "roll")
			if cc.Status.ObservedGeneration != cc.Generation {
				return fmt.Errorf("generation %d not processed", cc.Generation)
			}
			return nil
		})
		return s.deployment(t, ns, "roll")
	}

	// A change that does not concern the pods: the Service gets it, the pods do not roll.
	s.update(t, cc, func() { cc.Spec.Service.Annotations = map[string]string{"example.org/lb": "internal"} })
	eventually(t, "Service annotation", func() error {
		svc := &corev1.Service{}
		if err := s.get(t, ns, "roll", svc); err != nil {
			return err
		}
		if svc.Annotations["example.org/lb"] != "internal" {
			return fmt.Errorf("annotations %v", svc.Annotations)
		}
		return nil
	})
	if d := settled("service change"); d.Generation != generation || d.Spec.Template.Annotations[resource.AnnotationConfigHash] != hash {
		t.Errorf("a Service-only change rolled the pods (generation %d→%d)", generation, d.Generation)
	}

	// A change of the chat server's config rolls them.
	s.update(t, cc, func() { cc.Spec.Limits.MaxMessageBytes = 4096 })
	eventually(t, "config change reaches the pods", func() error {
		d := s.deployment(t, ns, "roll")
		if d.Spec.Template.Annotations[resource.AnnotationConfigHash] == hash {
			return fmt.Errorf("config hash unchanged")
		}
		hash, generation = d.Spec.Template.Annotations[resource.AnnotationConfigHash], d.Generation
		return nil
	})
	cm := &corev1.ConfigMap{}
	if err := s.get(t, ns, "roll-config", cm); err != nil || !strings.Contains(cm.Data["config.json"], `"maxMessageBytes": 4096`) {
		t.Errorf("ConfigMap not updated (%v): %s", err, cm.Data["config.json"])
	}

	// Rotating the JWT key: the chat server reloads it, the pods stay.
	jwt := &corev1.Secret{}
	if err := s.get(t, ns, "roll-jwt", jwt); err != nil {
		t.Fatal(err)
	}
	s.update(t, jwt, func() {
		jwt.Data[naming.JWTPreviousKey] = jwt.Data[naming.JWTCurrentKey]
		jwt.Data[naming.JWTCurrentKey] = []byte("new")
	})
	// A new broker URI: read only at start, so the pods roll.
	broker := &corev1.Secret{}
	if err := s.get(t, ns, "rabbit", broker); err != nil {
		t.Fatal(err)
	}
	s.update(t, broker, func() { broker.Data["uri"] = []byte("amqp://guest:guest@localhost:5672/") })
	eventually(t, "broker Secret change reaches the pods", func() error {
		d := s.deployment(t, ns, "roll")
		if d.Spec.Template.Annotations[resource.AnnotationConfigHash] == hash {
			return fmt.Errorf("config hash unchanged")
		}
		if d.Generation != generation+1 {
			return fmt.Errorf("generation %d, want exactly one template change after %d", d.Generation, generation)
		}
		return nil
	})
}

func testOptionalChildren(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "opt")
	s.brokerAndDatabase(t, ns, cc)
	cc.Spec.Replicas = ptr[int32](2)
	cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org",
		StreamAnnotations: map[string]string{"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}}
	cc.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
	cc.Spec.Monitoring.ServiceMonitor.Enabled = ptr(false)
	s.create(t, cc)
	for _, obj := range []client.Object{&networkingv1.Ingress{}, &networkingv1.NetworkPolicy{}} {
		eventually(t, fmt.Sprintf("%T", obj), func() error { return s.get(t, ns, "opt", obj) })
	}
	streams := &networkingv1.Ingress{}
	eventually(t, "the streams Ingress", func() error { return s.get(t, ns, "opt-streams", streams) })
	if p := streams.Spec.Rules[0].HTTP.Paths[0].Path; p != "/connection/" || streams.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] != "3600" {
		t.Errorf("streams Ingress path %q annotations %v", p, streams.Annotations)
	}
	sm := &unstructured.Unstructured{}
	sm.SetGroupVersionKind(resource.ServiceMonitorGVK)
	if err := s.get(t, ns, "opt", sm); !apierrors.IsNotFound(err) {
		t.Errorf("a disabled ServiceMonitor exists (%v)", err)
	}

	s.update(t, cc, func() {
		cc.Spec.Ingress, cc.Spec.NetworkPolicy, cc.Spec.Replicas = nil, nil, nil
		cc.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MaxReplicas: 5}
		cc.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{Enabled: ptr(false)}
	})
	for _, obj := range []client.Object{&networkingv1.Ingress{}, &networkingv1.NetworkPolicy{}, &policyv1.PodDisruptionBudget{}} {
		eventually(t, fmt.Sprintf("%T removed", obj), func() error {
			if err := s.get(t, ns, "opt", obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		})
	}
	eventually(t, "the streams Ingress removed", func() error {
		if err := s.get(t, ns, "opt-streams", &networkingv1.Ingress{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	eventually(t, "HPA", func() error { return s.get(t, ns, "opt", hpa) })
	if *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 5 {
		t.Errorf("HPA bounds %d..%d, want the defaulted 2..5", *hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}

	s.update(t, cc, func() { cc.Spec.Autoscaling, cc.Spec.Replicas = nil, ptr[int32](4) })
	eventually(t, "HPA removed, replicas back to the spec", func() error {
		if err := s.get(t, ns, "opt", &autoscalingv2.HorizontalPodAutoscaler{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("HPA still there (%v)", err)
		}
		if d := s.deployment(t, ns, "opt"); *d.Spec.Replicas != 4 {
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		}
		return nil
	})
}

func testBadOverride(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "ovr")
	// Valid JSON the CRD accepts, but no Deployment has a numeric dnsPolicy.
	o, err := v1alpha1.NewDeploymentOverride([]byte(`{"spec":{"template":{"spec":{"dnsPolicy":5}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	cc.Spec.Override = &v1alpha1.OverrideSpec{Deployment: o}
	s.create(t, cc)
	degraded := s.condition(t, ns, "ovr", v1alpha1.ConditionDegraded, metav1.ConditionTrue)
	if !strings.Contains(degraded.Message, "spec.override.deployment") {
		t.Errorf("Degraded message %q does not name the override", degraded.Message)
	}
	eventually(t, "a ReconcileFailed event", func() error {
		var list eventsv1.EventList
		if err := s.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == "ReconcileFailed" && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, "spec.override.deployment") {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})

	fixed, err := v1alpha1.NewDeploymentOverride([]byte(`{"spec":{"template":{"spec":{"dnsPolicy":"Default"}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	s.update(t, cc, func() { cc.Spec.Override.Deployment = fixed })
	s.condition(t, ns, "ovr", v1alpha1.ConditionDegraded, metav1.ConditionFalse)
	if d := s.deployment(t, ns, "ovr"); d.Spec.Template.Spec.DNSPolicy != corev1.DNSDefault {
		t.Errorf("dnsPolicy = %s, want the override's Default", d.Spec.Template.Spec.DNSPolicy)
	}
}

func ptr[T any](v T) *T { return &v }
