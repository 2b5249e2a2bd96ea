package resource

import (
	"maps"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/parley-chat/parley/internal/naming"
)

// ServiceMonitorGVK is the Prometheus Operator's ServiceMonitor kind. The
// operator does not import the Prometheus Operator's types: it builds the
// object unstructured, and only when the kind exists in the cluster.
var ServiceMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}

// ServiceMonitorBuilder builds the ServiceMonitor scraping the chat servers'
// /metrics on their admin port.
type ServiceMonitorBuilder struct{ Cluster }

// Build returns the named, empty ServiceMonitor.
func (b *ServiceMonitorBuilder) Build() (Object, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(ServiceMonitorGVK)
	u.SetName(b.Name())
	u.SetNamespace(b.Namespace)
	return u, nil
}

// Wanted is true when the kind exists and the spec does not turn it off.
func (b *ServiceMonitorBuilder) Wanted() bool {
	e := b.Spec.Monitoring.ServiceMonitor.Enabled
	return b.ServiceMonitorAvailable && (e == nil || *e)
}

// Update selects the cluster's Service and scrapes its admin port.
func (b *ServiceMonitorBuilder) Update(obj Object) error {
	u := obj.(*unstructured.Unstructured)
	sm := b.Spec.Monitoring.ServiceMonitor
	labels := naming.Labels(b.ChatCluster.Name)
	maps.Copy(labels, sm.Labels)
	setLabels(u, labels)

	// Prometheus durations have no fractions; the CRD keeps the interval at whole seconds or more.
	interval := "30s"
	if sm.Interval != nil {
		interval = strconv.Itoa(int(sm.Interval.Seconds())) + "s"
	}
	// Metrics are served on the admin port only (never the public one).
	endpoint := map[string]any{
		"port":     AdminPortName,
		"path":     "/metrics",
		"interval": interval,
	}
	if b.Spec.TLS != nil {
		endpoint["scheme"] = "https"
		endpoint["tlsConfig"] = map[string]any{
			"serverName": b.Name() + "." + b.Namespace + ".svc",
			"ca":         map[string]any{"secret": map[string]any{"name": b.Spec.TLS.SecretName, "key": "ca.crt"}},
		}
	}
	selector := map[string]any{}
	for k, v := range naming.SelectorLabels(b.ChatCluster.Name) {
		selector[k] = v
	}
	spec := map[string]any{
		"selector":  map[string]any{"matchLabels": selector},
		"endpoints": []any{endpoint},
	}
	// Like the pod template: replace the spec only when ours changed or a
	// field we set was changed, so fields the API server defaulted stay.
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
