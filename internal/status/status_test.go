package status

import (
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

func deployment(generation, observed int64, desired, updated, ready, available, total int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: generation},
		Spec:       appsv1.DeploymentSpec{Replicas: &desired},
		Status: appsv1.DeploymentStatus{
			ObservedGeneration: observed, UpdatedReplicas: updated, ReadyReplicas: ready,
			AvailableReplicas: available, Replicas: total,
		},
	}
}

func TestReady(t *testing.T) {
	healthy := deployment(2, 2, 3, 3, 3, 3, 3)
	for _, tc := range []struct {
		name   string
		o      Observed
		status metav1.ConditionStatus
		reason string
	}{
		{"all replicas ready", Observed{Generation: 4, Deployment: healthy}, metav1.ConditionTrue, ReasonReady},
		{"no Deployment yet", Observed{Generation: 1}, metav1.ConditionFalse, ReasonCreating},
		{"no ready pod yet", Observed{Generation: 1, Deployment: deployment(1, 1, 3, 3, 0, 0, 3)}, metav1.ConditionFalse, ReasonReplicasNotReady},
		{"two of three ready", Observed{Generation: 1, Deployment: deployment(1, 1, 3, 3, 2, 2, 3)}, metav1.ConditionFalse, ReasonReplicasNotReady},
		{"template not observed by the Deployment controller", Observed{Generation: 2, Deployment: deployment(3, 2, 3, 3, 3, 3, 3)}, metav1.ConditionFalse, ReasonRollingOut},
		{"old pods still running", Observed{Generation: 2, Deployment: deployment(3, 3, 3, 3, 3, 3, 4)}, metav1.ConditionFalse, ReasonRollingOut},
		{"scaled to zero", Observed{Generation: 2, Deployment: deployment(1, 1, 0, 0, 0, 0, 0)}, metav1.ConditionFalse, ReasonScaledToZero},
		{"missing Secret", Observed{Generation: 1, Deployment: healthy, MissingSecrets: []string{"c-jwt"}}, metav1.ConditionFalse, ReasonWaitingForSecrets},
		{"reconcile error", Observed{Generation: 1, Deployment: healthy, Err: errors.New("boom")}, metav1.ConditionFalse, ReasonReconcileFailed},
		{"spec changed while paused", Observed{Generation: 5, Paused: true, PendingWhilePaused: true, Deployment: healthy}, metav1.ConditionFalse, ReasonPaused},
		{"paused without a change", Observed{Generation: 5, Paused: true, Deployment: healthy}, metav1.ConditionTrue, ReasonReady},
		{"pod template refused, the old pods all ready", Observed{Generation: 3, Deployment: healthy, PodSecurity: errors.New("runAsNonRoot")}, metav1.ConditionFalse, ReasonPodSecurityViolation},
		{"broker down", Observed{Generation: 1, Deployment: healthy, Dependencies: []metav1.Condition{
			BrokerReady(1, WithReason("Unreachable", errors.New("dial tcp: refused")), ""),
		}}, metav1.ConditionFalse, "BrokerNotReady"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Ready(tc.o)
			if c.Type != v1alpha1.ConditionReady || c.Status != tc.status || c.Reason != tc.reason {
				t.Errorf("Ready = %s/%s (%s), want %s/%s", c.Status, c.Reason, c.Message, tc.status, tc.reason)
			}
			if c.ObservedGeneration != tc.o.Generation {
				t.Errorf("observedGeneration = %d, want the ChatCluster's %d", c.ObservedGeneration, tc.o.Generation)
			}
		})
	}
}

func TestProgressingAndDegraded(t *testing.T) {
	stuck := deployment(1, 1, 3, 1, 1, 1, 3)
	stuck.Status.Conditions = []appsv1.DeploymentCondition{{
		Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
		Message: `ReplicaSet "c-1" has timed out progressing.`,
	}}
	failing := deployment(1, 1, 3, 0, 0, 0, 0)
	failing.Status.Conditions = []appsv1.DeploymentCondition{{
		Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue, Reason: "FailedCreate", Message: "pods are forbidden",
	}}
	for _, tc := range []struct {
		name                 string
		o                    Observed
		progressing, degrade metav1.ConditionStatus
		reason               string
	}{
		{"rolling out", Observed{Deployment: deployment(2, 1, 3, 1, 3, 3, 4)}, metav1.ConditionTrue, metav1.ConditionFalse, ReasonRollingOut},
		{"complete", Observed{Deployment: deployment(2, 2, 3, 3, 3, 3, 3)}, metav1.ConditionFalse, metav1.ConditionFalse, ReasonComplete},
		{"deadline exceeded", Observed{Deployment: stuck}, metav1.ConditionFalse, metav1.ConditionTrue, ReasonDeadlineExceeded},
		{"pods cannot be created", Observed{Deployment: failing}, metav1.ConditionTrue, metav1.ConditionTrue, ReasonRollingOut},
		{"waiting for Secrets", Observed{MissingSecrets: []string{"x"}}, metav1.ConditionTrue, metav1.ConditionFalse, ReasonWaitingForSecrets},
		{"operator error", Observed{Err: errors.New("update Deployment: forbidden")}, metav1.ConditionFalse, metav1.ConditionTrue, ReasonReconcileFailed},
		{"paused", Observed{Paused: true, Deployment: deployment(1, 1, 1, 1, 1, 1, 1)}, metav1.ConditionFalse, metav1.ConditionFalse, ReasonPaused},
		{"pod template refused", Observed{Deployment: deployment(2, 2, 3, 3, 3, 3, 3), PodSecurity: errors.New("privileged")}, metav1.ConditionFalse, metav1.ConditionTrue, ReasonPodSecurityViolation},
		{"pod template refused, no Deployment yet", Observed{PodSecurity: errors.New("privileged")}, metav1.ConditionFalse, metav1.ConditionTrue, ReasonPodSecurityViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, d := Progressing(tc.o), Degraded(tc.o)
			if p.Status != tc.progressing || p.Reason != tc.reason {
				t.Errorf("Progressing = %s/%s, want %s/%s", p.Status, p.Reason, tc.progressing, tc.reason)
			}
			if d.Status != tc.degrade {
				t.Errorf("Degraded = %s/%s (%s), want %s", d.Status, d.Reason, d.Message, tc.degrade)
			}
		})
	}
}

func TestDegradedPutsARefusedPodTemplateFirst(t *testing.T) {
	refused := errors.New("privileged: container \"chatserver\" must not set securityContext.privileged=true")
	d := Degraded(Observed{Generation: 4, PodSecurity: refused})
	if d.Status != metav1.ConditionTrue || d.Reason != ReasonPodSecurityViolation || d.Message != refused.Error() || d.ObservedGeneration != 4 {
		t.Errorf("Degraded = %+v", d)
	}
	// Another failure in the same pass does not hide the refusal, nor is it hidden.
	d = Degraded(Observed{Generation: 4, PodSecurity: refused, Err: errors.New("Service team: conflict")})
	if d.Reason != ReasonPodSecurityViolation || !strings.Contains(d.Message, refused.Error()) || !strings.Contains(d.Message, "Service team: conflict") {
		t.Errorf("Degraded with a second failure = %s (%s)", d.Reason, d.Message)
	}
}

func TestPaused(t *testing.T) {
	if c := Paused(Observed{Paused: true, Generation: 3}); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, v1alpha1.AnnotationPaused) || c.ObservedGeneration != 3 {
		t.Errorf("paused: %+v", c)
	}
	if c := Paused(Observed{}); c.Status != metav1.ConditionFalse {
		t.Errorf("not paused: %+v", c)
	}
}

func TestDependencyConditionsCarryTheReason(t *testing.T) {
	c := DatabaseReady(7, WithReason("CredentialsRefused", errors.New("password authentication failed")), "connect to postgres")
	if c.Type != v1alpha1.ConditionDatabaseReady || c.Status != metav1.ConditionFalse || c.Reason != "CredentialsRefused" ||
		c.Message != "connect to postgres: password authentication failed" || c.ObservedGeneration != 7 {
		t.Errorf("DatabaseReady = %+v", c)
	}
	if c := BrokerReady(7, errors.New("x"), ""); c.Reason != "Failed" {
		t.Errorf("plain error reason = %s", c.Reason)
	}
	if c := BrokerReady(7, nil, "2 exchanges declared"); c.Status != metav1.ConditionTrue || c.Reason != "Declared" {
		t.Errorf("BrokerReady = %+v", c)
	}
}
