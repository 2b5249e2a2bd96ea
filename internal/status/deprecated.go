package status

import (
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonDeprecatedFields is the Deprecated condition's reason.
const ReasonDeprecatedFields = "DeprecatedFields"

// Deprecated reports the deprecated spec fields a cluster still uses, each
// with what to move to; ok is false when it uses none (the condition is then
// removed rather than kept as False, so it only shows when there is
// something to do).
func Deprecated(generation int64, fields map[string]string) (metav1.Condition, bool) {
	if len(fields) == 0 {
		return metav1.Condition{}, false
	}
	var parts []string
	for _, f := range slices.Sorted(maps.Keys(fields)) {
		parts = append(parts, f+" is deprecated: "+fields[f])
	}
	return condition("Deprecated", generation, true, ReasonDeprecatedFields, "%s", strings.Join(parts, "; ")), true
}
