package resource

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/parley-chat/parley/internal/naming"
)

// DefaultMetricsNamespace is the namespace admitted to scrape the admin port
// when spec.networkPolicy.metricsFrom is empty: where kube-prometheus and the
// Prometheus Operator's examples run Prometheus.
const DefaultMetricsNamespace = "monitoring"

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

// Update admits, and nothing else:
//   - allowedFrom (or anyone) to the public port;
//   - metricsFrom (default: the "monitoring" namespace) to the admin port;
//   - apiFrom (default: pods of the cluster's own namespace) to the admin port.
//
// An empty apiFrom does not mean everyone, unlike allowedFrom: the HTTP API
// publishes as the server and disconnects users, so only the namespace that
// holds its API key Secret is trusted without being named. Kubelet probes
// need no rule: traffic from a pod's own node is always allowed.
func (b *NetworkPolicyBuilder) Update(obj Object) error {
	np := obj.(*networkingv1.NetworkPolicy)
	setLabels(np, naming.Labels(b.ChatCluster.Name))
	spec := b.Spec.NetworkPolicy
	tcp := corev1.ProtocolTCP
	port := func(p int32) []networkingv1.NetworkPolicyPort {
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptrTo(intstr.FromInt32(p))}}
	}
	metricsFrom := spec.MetricsFrom
	if len(metricsFrom) == 0 {
		metricsFrom = []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
			MatchLabels: map[string]string{corev1.LabelMetadataName: DefaultMetricsNamespace},
		}}}
	}
	apiFrom := spec.APIFrom
	if len(apiFrom) == 0 {
		// A pod selector without a namespace selector stays in the policy's namespace.
		apiFrom = []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}
	}
	np.Spec = networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: naming.SelectorLabels(b.ChatCluster.Name)},
		Ingress: []networkingv1.NetworkPolicyIngressRule{
			{Ports: port(ChatPort), From: spec.AllowedFrom},
			{Ports: port(AdminPort), From: metricsFrom},
			{Ports: port(AdminPort), From: apiFrom},
		},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
	}
	return nil
}
