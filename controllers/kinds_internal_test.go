package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/parley-chat/parley/internal/resource"
)

// deleteChild asks the API server about an unwanted optional child only
// when its kind exists: absent is true for a tracked kind not found at the
// last check, and never for a kind the tracker does not know.
func TestAbsentOnlyForTrackedKindsNotFound(t *testing.T) {
	other := schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Other"}
	k := newOptionalKinds(nil, 0, resource.ServiceMonitorGVK, resource.PrometheusRuleGVK)
	if !k.absent(resource.ServiceMonitorGVK) || !k.absent(resource.PrometheusRuleGVK) {
		t.Fatal("tracked kinds not found yet must be absent")
	}
	if k.absent(other) {
		t.Fatal("an untracked kind must never be reported absent (its children would never be deleted)")
	}
	k.present[resource.ServiceMonitorGVK] = true
	if k.absent(resource.ServiceMonitorGVK) {
		t.Fatal("a kind found at the last check is not absent")
	}
}
