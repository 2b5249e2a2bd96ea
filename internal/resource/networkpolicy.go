package resource

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/parley-chat/parley/internal/naming"
)

// NetworkPolicyBuilder builds the NetworkPolicy, when the spec enables it.
// It restricts ingress only: the chat servers' egress goes to the broker and
// database at addresses only their URIs know.
type NetworkPolicyBuilder struct{ Cluster }

// Build returns the named, empty NetworkPolicy.
func (b *NetworkPolicyBuilder) Build() (Object, error) {
	return &networkingv1.NetworkPolicy{ObjectMeta: objectMeta(b.Cluster, b.Name())}, nil
}

// Wanted is true when spec.networkPolicy.enabled is.
func (b *NetworkPolicyBuilder) Wanted() bool {
	return b.Spec.NetworkPolicy != nil && b.Spec.NetworkPolicy.Enabled
}

// Update admits the listed peers (or anyone) to the chat port and nothing else.
func (b *NetworkPolicyBuilder) Update(obj Object) error {
	np := obj.(*networkingv1.NetworkPolicy)
	setLabels(np, naming.Labels(b.ChatCluster.Name))
	tcp := corev1.ProtocolTCP
	np.Spec = networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: naming.SelectorLabels(b.ChatCluster.Name)},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptrTo(intstr.FromInt32(ChatPort))}},
			From:  b.Spec.NetworkPolicy.AllowedFrom,
		}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
	}
	return nil
}
