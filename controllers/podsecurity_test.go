package controllers_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/status"
)

func init() {
	register("PodSecurityViolationIsRefusedAndCleared", testPodSecurityViolation)
}

// securityContextBypass deletes the pod's and the chat server container's
// securityContext: the CRD's CEL rules see nothing wrong in the patch itself.
const securityContextBypass = `{"spec":{"template":{"spec":{
	"securityContext":{"$patch":"delete"},
	"containers":[{"name":"chatserver","securityContext":{"$patch":"delete"}}]}}}}`

// The checks that template fails, as the condition and the event name them.
var bypassChecks = []string{"allowPrivilegeEscalation", "capabilities_restricted", "runAsNonRoot",
	"seccompProfile_restricted", resource.CheckReadOnlyRootFilesystem}

func testPodSecurityViolation(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "psa")
	s.create(t, cc)
	s.deployment(t, ns, "psa")
	s.rollOut(t, ns, "psa")
	s.condition(t, ns, "psa", v1alpha1.ConditionReady, metav1.ConditionTrue)
	good := s.deployment(t, ns, "psa")

	bypass, err := v1alpha1.NewDeploymentOverride([]byte(securityContextBypass))
	if err != nil {
		t.Fatal(err)
	}
	s.update(t, cc, func() {
		cc.Spec.Override = &v1alpha1.OverrideSpec{Deployment: bypass}
		// A change beside it, to see the rest of the pass still go through.
		cc.Spec.Service.Annotations = map[string]string{"example.org/psa": "applied"}
	})

	degraded := s.condition(t, ns, "psa", v1alpha1.ConditionDegraded, metav1.ConditionTrue)
	if degraded.Reason != status.ReasonPodSecurityViolation {
		t.Errorf("Degraded reason %s (%s), want %s", degraded.Reason, degraded.Message, status.ReasonPodSecurityViolation)
	}
	for _, check := range bypassChecks {
		if !strings.Contains(degraded.Message, check+": ") {
			t.Errorf("Degraded message does not name check %s: %s", check, degraded.Message)
		}
	}
	if !strings.Contains(degraded.Message, "spec.template.spec.containers[chatserver].securityContext.readOnlyRootFilesystem") {
		t.Errorf("Degraded message does not name the field: %s", degraded.Message)
	}
	if ready := s.condition(t, ns, "psa", v1alpha1.ConditionReady, metav1.ConditionFalse); ready.Reason != status.ReasonPodSecurityViolation {
		t.Errorf("Ready = %s (%s), want %s: the new generation is not running", ready.Reason, ready.Message, status.ReasonPodSecurityViolation)
	}
	if e := s.event(t, ns, controllers.EventPodSecurityViolation, bypassChecks...); e.Type != corev1.EventTypeWarning || e.Regarding.Name != "psa" {
		t.Errorf("event %s about %s %s, want a Warning about the ChatCluster psa", e.Type, e.Regarding.Kind, e.Regarding.Name)
	}
	eventually(t, "the Service change applied beside the refusal", func() error {
		svc := &corev1.Service{}
		if err := s.get(t, ns, "psa", svc); err != nil {
			return err
		}
		if svc.Annotations["example.org/psa"] != "applied" {
			return fmt.Errorf("Service annotations %v", svc.Annotations)
		}
		return nil
	})

	d := s.deployment(t, ns, "psa")
	if d.Generation != good.Generation || d.Annotations[resource.AnnotationTemplateHash] != good.Annotations[resource.AnnotationTemplateHash] {
		t.Errorf("the refused template was written: generation %d→%d", good.Generation, d.Generation)
	}
	assertRestricted(t, d)
	if st := s.cluster(t, ns, "psa").Status; st.Replicas != 1 || st.ReadyReplicas != 1 || st.Image != testImage {
		t.Errorf("status no longer reports the Deployment that still runs: %+v", st)
	}

	fixed, err := v1alpha1.NewDeploymentOverride([]byte(`{"spec":{"template":{"spec":{
		"containers":[{"name":"chatserver","env":[{"name":"GOMEMLIMIT","value":"200MiB"}]}]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	s.update(t, cc, func() { cc.Spec.Override.Deployment = fixed })
	s.condition(t, ns, "psa", v1alpha1.ConditionDegraded, metav1.ConditionFalse)
	eventually(t, "the fixed override applied", func() error {
		d = s.deployment(t, ns, "psa")
		if c := d.Spec.Template.Spec.Containers[0]; !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }) {
			return fmt.Errorf("env %v", c.Env)
		}
		return nil
	})
	assertRestricted(t, d)
	s.event(t, ns, controllers.EventRecovered)

	// Created with the bypass: no Deployment at all, the rest is there.
	fresh := s.keyedCluster(t, ns, "psa-new")
	fresh.Spec.Override = &v1alpha1.OverrideSpec{Deployment: bypass}
	s.create(t, fresh)
	if c := s.condition(t, ns, "psa-new", v1alpha1.ConditionDegraded, metav1.ConditionTrue); c.Reason != status.ReasonPodSecurityViolation {
		t.Errorf("Degraded %s (%s)", c.Reason, c.Message)
	}
	eventually(t, "the new cluster's ConfigMap", func() error { return s.get(t, ns, "psa-new-config", &corev1.ConfigMap{}) })
	if err := s.get(t, ns, "psa-new", &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment exists for a refused template (%v)", err)
	}
}

// assertRestricted checks the fields the bypass would have removed.
func assertRestricted(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil {
		t.Errorf("pod securityContext %+v", psc)
	}
	i := slices.IndexFunc(pod.Containers, func(c corev1.Container) bool { return c.Name == naming.ContainerName })
	if i < 0 {
		t.Fatalf("no chat server container in %+v", pod.Containers)
	}
	sc := pod.Containers[i].SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
		*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("chat server securityContext %+v", sc)
	}
}
