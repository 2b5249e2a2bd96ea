// Package status computes a ChatCluster's conditions: one pure function per
// condition, from what one reconcile pass observed. Every condition carries
// the generation it describes, so `kubectl wait --for=condition=Ready` never
// takes an older generation's Ready for the current one.
package status

import (
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Observed is what one reconcile pass saw.
type Observed struct {
	// Generation of the ChatCluster the conditions describe.
	Generation int64
	// Paused is true while the paused annotation is set.
	Paused bool
	// PendingWhilePaused is true when the spec changed while paused: the
	// children still follow an older generation.
	PendingWhilePaused bool
	// Deployment is the live chat server Deployment, nil when there is none.
	Deployment *appsv1.Deployment
	// MissingSecrets are referenced Secrets that do not exist (yet).
	MissingSecrets []string
	// Err is what went wrong in this pass, nil when nothing did.
	Err error
	// PodSecurity is why the pod template the spec asks for was refused
	// (it breaks the restricted Pod Security Standard or Parley's pod
	// rules), nil when it was accepted. A refused template is never
	// written: the Deployment keeps its last accepted one.
	PodSecurity error
	// Dependencies are the conditions the provisioning steps set this pass
	// (BrokerReady, DatabaseReady), when the cluster has those dependencies.
	Dependencies []metav1.Condition
}

// Reasons used by the conditions.
const (
	ReasonReady             = "Ready"
	ReasonPaused            = "Paused"
	ReasonNotPaused         = "NotPaused"
	ReasonReconcileFailed   = "ReconcileFailed"
	ReasonWaitingForSecrets = "WaitingForSecrets"
	ReasonCreating          = "Creating"
	ReasonRollingOut        = "RollingOut"
	ReasonReplicasNotReady  = "ReplicasNotReady"
	ReasonScaledToZero      = "ScaledToZero"
	ReasonComplete          = "Complete"
	ReasonAsExpected        = "AsExpected"
	ReasonDeadlineExceeded  = "ProgressDeadlineExceeded"
	ReasonReplicaFailure    = "ReplicaFailure"
	// ReasonPodSecurityViolation: the pod template the spec asks for is
	// refused; the message lists every failing check and its field.
	ReasonPodSecurityViolation = "PodSecurityViolation"
)

func condition(typ string, generation int64, ok bool, reason, format string, args ...any) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{
		Type: typ, Status: s, ObservedGeneration: generation,
		Reason: reason, Message: truncate(fmt.Sprintf(format, args...)),
	}
}

// truncate keeps messages within the API's 32768-byte limit.
func truncate(s string) string {
	const limit = 4096
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}

// rollout is where the Deployment stands against its own spec.
type rollout struct {
	desired, updated, ready, available, total int32
	observed                                  bool
}

func rolloutOf(d *appsv1.Deployment) rollout {
	r := rollout{
		desired:   1,
		updated:   d.Status.UpdatedReplicas,
		ready:     d.Status.ReadyReplicas,
		available: d.Status.AvailableReplicas,
		total:     d.Status.Replicas,
		observed:  d.Status.ObservedGeneration >= d.Generation,
	}
	if d.Spec.Replicas != nil {
		r.desired = *d.Spec.Replicas
	}
	return r
}

// done is `kubectl rollout status` finished: the controller saw the current
// template, every pod runs it, no old pod is left and all are available and ready.
func (r rollout) done() bool {
	return r.observed && r.updated >= r.desired && r.total <= r.updated &&
		r.available >= r.desired && r.ready >= r.desired
}

func (r rollout) String() string {
	return fmt.Sprintf("%d of %d replicas ready, %d updated", r.ready, r.desired, r.updated)
}

// notReadyDependency returns the first dependency that is not True.
func notReadyDependency(o Observed) (metav1.Condition, bool) {
	for _, c := range o.Dependencies {
		if c.Status != metav1.ConditionTrue {
			return c, true
		}
	}
	return metav1.Condition{}, false
}

func deploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	i := slices.IndexFunc(d.Status.Conditions, func(c appsv1.DeploymentCondition) bool { return c.Type == t })
	if i < 0 {
		return nil
	}
	return &d.Status.Conditions[i]
}

// progressDeadlineExceeded returns the Deployment's Progressing condition
// when it reports that the rollout missed its progress deadline, else nil.
func progressDeadlineExceeded(d *appsv1.Deployment) *appsv1.DeploymentCondition {
	dc := deploymentCondition(d, appsv1.DeploymentProgressing)
	if dc == nil || dc.Status != corev1.ConditionFalse || dc.Reason != ReasonDeadlineExceeded {
		return nil
	}
	return dc
}
