package status

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// Progressing is True while the cluster is moving toward its spec, False once
// it got there (Complete) or cannot get there (see Degraded).
func Progressing(o Observed) metav1.Condition {
	c := func(ok bool, reason, format string, args ...any) metav1.Condition {
		return condition(v1alpha1.ConditionProgressing, o.Generation, ok, reason, format, args...)
	}
	if o.Paused {
		return c(false, ReasonPaused, "the cluster is paused")
	}
	if o.PodSecurity != nil {
		return c(false, ReasonPodSecurityViolation, "the pod template the spec asks for is refused: see the Degraded condition")
	}
	if o.Err != nil {
		return c(false, ReasonReconcileFailed, "the operator cannot apply the spec: see the Degraded condition")
	}
	if len(o.MissingSecrets) > 0 {
		return c(true, ReasonWaitingForSecrets, "waiting for Secret %s", strings.Join(o.MissingSecrets, ", "))
	}
	if dep, ok := notReadyDependency(o); ok {
		return c(true, "WaitingFor"+strings.TrimSuffix(dep.Type, "Ready"), "%s: %s", dep.Type, dep.Message)
	}
	if o.Deployment == nil {
		return c(true, ReasonCreating, "creating the chat server Deployment")
	}
	if dc := progressDeadlineExceeded(o.Deployment); dc != nil {
		return c(false, ReasonDeadlineExceeded, "%s", dc.Message)
	}
	if r := rolloutOf(o.Deployment); !r.done() {
		return c(true, ReasonRollingOut, "%s", r)
	}
	return c(false, ReasonComplete, "the chat servers run the current spec")
}
