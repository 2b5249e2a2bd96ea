package resource

import (
	"maps"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/parley-chat/parley/internal/alerts"
	"github.com/parley-chat/parley/internal/naming"
)

// PrometheusRuleGVK is the Prometheus Operator's PrometheusRule kind, built
// unstructured like the ServiceMonitor.
var PrometheusRuleGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}

// PrometheusRuleBuilder builds the alerting rules for the cluster's chat
// servers (internal/alerts), which select the series its ServiceMonitor
// scrapes.
type PrometheusRuleBuilder struct{ Cluster }

// Build returns the named, empty PrometheusRule.
func (b *PrometheusRuleBuilder) Build() (Object, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(PrometheusRuleGVK)
	u.SetName(b.Name())
	u.SetNamespace(b.Namespace)
	return u, nil
}

// Wanted is true when the kind exists and the spec turns the rules on (off
// by default: a new child only for clusters that ask for it).
func (b *PrometheusRuleBuilder) Wanted() bool {
	e := b.Spec.Monitoring.PrometheusRule.Enabled
	return b.PrometheusRuleAvailable && e != nil && *e
}

// Update writes the rule groups and the labels a Prometheus selects rules by.
func (b *PrometheusRuleBuilder) Update(obj Object) error {
	u := obj.(*unstructured.Unstructured)
	labels := naming.Labels(b.ChatCluster.Name)
	maps.Copy(labels, b.Spec.Monitoring.PrometheusRule.Labels)
	setLabels(u, labels)

	groups, err := alerts.Groups(alerts.ChatCluster(b.Namespace, b.ChatCluster.Name))
	if err != nil {
		return err
	}
	spec := map[string]any{"groups": groups}
	hash, err := hashJSON(spec)
	if err != nil {
		return err
	}
	live, _ := u.Object["spec"].(map[string]any)
	if u.GetAnnotations()[AnnotationTemplateHash] != hash || !subsetOf(spec, live) {
		u.Object["spec"] = spec
		setAnnotation(u, AnnotationTemplateHash, hash)
	}
	return nil
}
