package status

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// Ready is True when every replica of the current generation is ready.
func Ready(o Observed) metav1.Condition {
	c := func(ok bool, reason, format string, args ...any) metav1.Condition {
		return condition(v1alpha1.ConditionReady, o.Generation, ok, reason, format, args...)
	}
	if o.PendingWhilePaused {
		return c(false, ReasonPaused, "the spec changed while the cluster is paused: generation %d is not applied", o.Generation)
	}
	if o.PodSecurity != nil {
		return c(false, ReasonPodSecurityViolation, "generation %d is not applied: its pod template is refused (see the Degraded condition)", o.Generation)
	}
	if o.Err != nil {
		return c(false, ReasonReconcileFailed, "%v", o.Err)
	}
	if len(o.MissingSecrets) > 0 {
		return c(false, ReasonWaitingForSecrets, "waiting for Secret %s", strings.Join(o.MissingSecrets, ", "))
	}
	if dep, ok := notReadyDependency(o); ok {
		return c(false, strings.TrimSuffix(dep.Type, "Ready")+"NotReady", "%s: %s", dep.Type, dep.Message)
	}
	if o.Deployment == nil {
		return c(false, ReasonCreating, "the chat server Deployment does not exist yet")
	}
	r := rolloutOf(o.Deployment)
	switch {
	case r.desired == 0:
		return c(false, ReasonScaledToZero, "the cluster is scaled to zero replicas")
	case !r.observed, r.updated < r.desired, r.total > r.updated:
		return c(false, ReasonRollingOut, "rolling out: %s", r)
	case !r.done():
		return c(false, ReasonReplicasNotReady, "%s", r)
	}
	return c(true, ReasonReady, "%d of %d replicas ready", r.ready, r.desired)
}
