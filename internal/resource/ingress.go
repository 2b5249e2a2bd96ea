package resource

import (
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
	ing := obj.(*networkingv1.Ingress)
	in := b.Spec.Ingress
	setLabels(ing, naming.Labels(b.ChatCluster.Name))
	setOwnedAnnotations(ing, in.Annotations)
	pathType := networkingv1.PathTypePrefix
	ing.Spec = networkingv1.IngressSpec{
		IngressClassName: in.ClassName,
		Rules: []networkingv1.IngressRule{{
			Host: in.Host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{
					Path:     ingressPath(in),
					PathType: &pathType,
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
						Name: b.Name(),
						Port: networkingv1.ServiceBackendPort{Name: b.PortName()},
					}},
				}},
			}},
		}},
	}
	if in.TLSSecretName != "" {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{in.Host}, SecretName: in.TLSSecretName}}
	}
	return nil
}

func ingressPath(in *v1alpha1.IngressSpec) string {
	if in.Path == "" {
		return "/"
	}
	return in.Path
}
