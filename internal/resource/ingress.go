package resource

import (
	"maps"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
)

// IngressBuilder builds the Ingress, when the spec asks for one.
type IngressBuilder struct{ Cluster }

// Build returns the named, empty Ingress.
func (b *IngressBuilder) Build() (Object, error) {
	return &networkingv1.Ingress{ObjectMeta: objectMeta(b.Cluster, b.Name())}, nil
}

// Wanted is true when spec.ingress is set.
func (b *IngressBuilder) Wanted() bool { return b.Spec.Ingress != nil }

// Update routes the host and path to the Service.
func (b *IngressBuilder) Update(obj Object) error {
	in := b.Spec.Ingress
	updateIngress(b.Cluster, obj.(*networkingv1.Ingress), ingressPath(in), in.Annotations)
	return nil
}

// StreamIngressBuilder builds the Ingress of the long-lived endpoints
// (<path>connection/), when spec.ingress.streamAnnotations is set: Ingress
// controllers take timeouts and buffering per Ingress, so the streams get
// theirs apart from the page's and /emulation's.
type StreamIngressBuilder struct{ Cluster }

// Build returns the named, empty Ingress.
func (b *StreamIngressBuilder) Build() (Object, error) {
	return &networkingv1.Ingress{ObjectMeta: objectMeta(b.Cluster, naming.StreamsIngressName(b.ChatCluster.Name))}, nil
}

// Wanted is true when spec.ingress sets streamAnnotations.
func (b *StreamIngressBuilder) Wanted() bool {
	return b.Spec.Ingress != nil && len(b.Spec.Ingress.StreamAnnotations) > 0
}

// Update routes <path>connection/ to the Service with both sets of annotations.
func (b *StreamIngressBuilder) Update(obj Object) error {
	in := b.Spec.Ingress
	annotations := maps.Clone(in.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	maps.Copy(annotations, in.StreamAnnotations)
	updateIngress(b.Cluster, obj.(*networkingv1.Ingress), StreamsPath(in), annotations)
	return nil
}

// StreamsPath is the prefix of the long-lived endpoints under the Ingress path.
func StreamsPath(in *v1alpha1.IngressSpec) string {
	p := ingressPath(in)
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p + "connection/"
}

// updateIngress routes host and path to the Service, with annotations.
func updateIngress(c Cluster, ing *networkingv1.Ingress, path string, annotations map[string]string) {
	in := c.Spec.Ingress
	setLabels(ing, naming.Labels(c.ChatCluster.Name))
	setOwnedAnnotations(ing, annotations)
	pathType := networkingv1.PathTypePrefix
	ing.Spec = networkingv1.IngressSpec{
		IngressClassName: in.ClassName,
		Rules: []networkingv1.IngressRule{{
			Host: in.Host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{
					Path:     path,
					PathType: &pathType,
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
						Name: c.Name(),
						Port: networkingv1.ServiceBackendPort{Name: c.PortName()},
					}},
				}},
			}},
		}},
	}
	if in.TLSSecretName != "" {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{in.Host}, SecretName: in.TLSSecretName}}
	}
}

func ingressPath(in *v1alpha1.IngressSpec) string {
	if in.Path == "" {
		return "/"
	}
	return in.Path
}
