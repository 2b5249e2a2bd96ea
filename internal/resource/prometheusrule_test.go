package resource

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// The per-cluster PrometheusRule is a new child only where the spec turns it
// on and the kind exists, so enabling the operator's support rolls nothing
// and creates nothing for existing clusters.
func TestPrometheusRuleOnlyWhenAskedAndAvailable(t *testing.T) {
	on := func(cc *v1alpha1.ChatCluster) { cc.Spec.Monitoring.PrometheusRule.Enabled = ptrTo(true) }
	for _, tc := range []struct {
		name      string
		c         Cluster
		available bool
		want      bool
	}{
		{"default", cluster(), true, false},
		{"enabled", cluster(on), true, true},
		{"enabled without the CRD", cluster(on), false, false},
		{"disabled", cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Monitoring.PrometheusRule.Enabled = ptrTo(false) }), true, false},
	} {
		tc.c.PrometheusRuleAvailable = tc.available
		if got := (&PrometheusRuleBuilder{tc.c}).Wanted(); got != tc.want {
			t.Errorf("%s: Wanted() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The rules select the cluster's own series (its namespace and Service) and
// carry the labels a Prometheus selects rules by.
func TestPrometheusRuleSelectsTheClustersSeries(t *testing.T) {
	c := cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Monitoring.PrometheusRule.Enabled = ptrTo(true)
		cc.Spec.Monitoring.PrometheusRule.Labels = map[string]string{"release": "prometheus"}
	})
	c.PrometheusRuleAvailable = true
	b := &PrometheusRuleBuilder{c}
	obj, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(obj); err != nil {
		t.Fatal(err)
	}
	u := obj.(*unstructured.Unstructured)
	if u.GetName() != "team-chat" || u.GetNamespace() != "chat" || u.GetLabels()["release"] != "prometheus" {
		t.Errorf("name %s/%s labels %v", u.GetNamespace(), u.GetName(), u.GetLabels())
	}
	groups, _, _ := unstructured.NestedSlice(u.Object, "spec", "groups")
	if len(groups) != 1 {
		t.Fatalf("groups: %v", groups)
	}
	rules := groups[0].(map[string]any)["rules"].([]any)
	for _, r := range rules {
		rule := r.(map[string]any)
		expr := rule["expr"].(string)
		if !strings.Contains(expr, `namespace="chat",service="team-chat"`) || strings.Contains(expr, "__") {
			t.Errorf("%s: expr does not select the cluster's series: %s", rule["alert"], expr)
		}
	}
	// A second pass over the live object changes nothing (no write).
	before := u.DeepCopy()
	if err := b.Update(u); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(before.Object, u.Object) {
		t.Error("a second Update changed the PrometheusRule")
	}
}
