package resource

import (
	"fmt"

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

// Update sets type, ports, selector and the spec's annotations. The Service
// carries the public port (named http or https) and the admin port (named
// admin): the Ingress routes to the first by name, the ServiceMonitor scrapes
// the second. What the API server allocates (cluster IP, node ports) and
// defaults stays as it is.
func (b *ServiceBuilder) Update(obj Object) error {
	svc := obj.(*corev1.Service)
	if b.ServicePort() == AdminPort {
		return fmt.Errorf("spec.service.port: %d is the admin port (HTTP API, metrics); choose another", AdminPort)
	}
	setLabels(svc, naming.Labels(b.ChatCluster.Name))
	setOwnedAnnotations(svc, b.Spec.Service.Annotations)

	typ := b.Spec.Service.Type
	if typ == "" {
		typ = corev1.ServiceTypeClusterIP
	}
	svc.Spec.Type = typ
	svc.Spec.Selector = naming.SelectorLabels(b.ChatCluster.Name)

	appProtocol, adminProtocol := "kubernetes.io/ws", "http"
	if b.Spec.TLS != nil {
		appProtocol, adminProtocol = "kubernetes.io/wss", "https"
	}
	ports := []corev1.ServicePort{{
		Name:        b.PortName(),
		Protocol:    corev1.ProtocolTCP,
		AppProtocol: &appProtocol,
		Port:        b.ServicePort(),
		TargetPort:  intstr.FromInt32(ChatPort),
	}, {
		Name:        AdminPortName,
		Protocol:    corev1.ProtocolTCP,
		AppProtocol: &adminProtocol,
		Port:        AdminPort,
		TargetPort:  intstr.FromInt32(AdminPort),
	}}
	// Keep the node ports the API server allocated, unless the type no longer has them.
	if typ != corev1.ServiceTypeClusterIP {
		for i := range ports {
			for _, live := range svc.Spec.Ports {
				if live.Name == ports[i].Name {
					ports[i].NodePort = live.NodePort
				}
			}
		}
	}
	svc.Spec.Ports = ports
	return nil
}
