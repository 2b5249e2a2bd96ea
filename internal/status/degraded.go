package status

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// Degraded is True when the operator cannot apply the spec, or the
// Deployment reports that its pods cannot be created or did not come up in time.
// A refused pod template comes first: it stays until the spec changes, while
// other failures may be passing.
func Degraded(o Observed) metav1.Condition {
	c := func(ok bool, reason, format string, args ...any) metav1.Condition {
		return condition(v1alpha1.ConditionDegraded, o.Generation, ok, reason, format, args...)
	}
	if o.PodSecurity != nil {
		if o.Err != nil {
			return c(true, ReasonPodSecurityViolation, "%v; besides: %v", o.PodSecurity, o.Err)
		}
		return c(true, ReasonPodSecurityViolation, "%v", o.PodSecurity)
	}
	if o.Err != nil {
		return c(true, ReasonReconcileFailed, "%v", o.Err)
	}
	if d := o.Deployment; d != nil {
		if dc := progressDeadlineExceeded(d); dc != nil {
			return c(true, ReasonDeadlineExceeded, "%s", dc.Message)
		}
		if dc := deploymentCondition(d, appsv1.DeploymentReplicaFailure); dc != nil && dc.Status == corev1.ConditionTrue {
			return c(true, ReasonReplicaFailure, "%s", dc.Message)
		}
	}
	return c(false, ReasonAsExpected, "nothing is wrong")
}
