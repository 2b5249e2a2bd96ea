package resource

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/parley-chat/parley/internal/naming"
)

// ServiceBuilder builds the Service in front of the chat servers.
type ServiceBuilder struct{ Cluster }

// Build returns the named, empty Service.
func (b *ServiceBuilder) Build() (Object, error) {
	return &corev1.Service{ObjectMeta: objectMeta(b.Cluster, b.Name())}, nil
}

// PortName is the Service's (and the container's) port name: http, or https with TLS.
func (c Cluster) PortName() string {
	if c.Spec.TLS != nil {
		return "https"
	}
	return "http"
}

// Update sets type, port, selector and the spec's annotations. What the API
// server allocates (cluster IP, node ports) and defaults stays as it is.
func (b *ServiceBuilder) Update(obj Object) error {
	svc := obj.(*corev1.Service)
	setLabels(svc, naming.Labels(b.ChatCluster.Name))
	setOwnedAnnotations(svc, b.Spec.Service.Annotations)

	typ := b.Spec.Service.Type
	if typ == "" {
		typ = corev1.ServiceTypeClusterIP
	}
	svc.Spec.Type = typ
	svc.Spec.Selector = naming.SelectorLabels(b.ChatCluster.Name)

	appProtocol := "kubernetes.io/ws"
	if b.Spec.TLS != nil {
		appProtocol = "kubernetes.io/wss"
	}
	port := corev1.ServicePort{
		Name:        b.PortName(),
		Protocol:    corev1.ProtocolTCP,
		AppProtocol: &appProtocol,
		Port:        b.ServicePort(),
		TargetPort:  intstr.FromInt32(ChatPort),
	}
	// Keep the node port the API server allocated, unless the type no longer has one.
	if typ != corev1.ServiceTypeClusterIP {
		for _, live := range svc.Spec.Ports {
			if live.Name == port.Name {
				port.NodePort = live.NodePort
			}
		}
	}
	svc.Spec.Ports = []corev1.ServicePort{port}
	return nil
}
