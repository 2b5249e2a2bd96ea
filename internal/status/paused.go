package status

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// Paused is True while the paused annotation is set.
func Paused(o Observed) metav1.Condition {
	if o.Paused {
		return condition(v1alpha1.ConditionPaused, o.Generation, true, ReasonPaused,
			"%s is \"true\": the operator does not change the cluster's children", v1alpha1.AnnotationPaused)
	}
	return condition(v1alpha1.ConditionPaused, o.Generation, false, ReasonNotPaused, "the operator manages the cluster's children")
}
