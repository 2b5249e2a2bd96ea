package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// HostService is a service of this machine made reachable from pods under a
// cluster DNS name, as a cluster reaches a managed database: a Service
// without a selector whose EndpointSlice names the host's end of the node's
// link, where a TCPProxy forwards to the server (which listens only on
// loopback here).
type HostService struct {
	// Proxy forwards to the server; Disable makes the service unreachable.
	Proxy *TCPProxy
	// Address is host:port inside the cluster, e.g.
	// "rabbitmq.parley-platform.svc.cluster.local:5672".
	Address string
}

// ExposeHostService creates the Service name in namespace on port and a
// proxy from the node's link to target (host:port on this machine).
func (c *Cluster) ExposeHostService(ctx context.Context, namespace, name string, port int32, target string) (*HostService, error) {
	if err := c.EnsureNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	proxy, err := NewTCPProxy(net.JoinHostPort(HostIP.String(), "0"), target)
	if err != nil {
		return nil, fmt.Errorf("proxy to %s: %w", target, err)
	}
	c.proxies = append(c.proxies, proxy)
	_, portStr, _ := net.SplitHostPort(proxy.Addr())
	proxyPort, _ := strconv.Atoi(portStr)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "tcp", Port: port, TargetPort: intOrPort(proxyPort), Protocol: corev1.ProtocolTCP,
		}}},
	}
	if _, err := c.Client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-host", Namespace: namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "parley-local-cluster",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{HostIP.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Port: ptr.To(int32(proxyPort)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	slices := c.Client.DiscoveryV1().EndpointSlices(namespace)
	if _, err := slices.Create(ctx, slice, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		old, gerr := slices.Get(ctx, slice.Name, metav1.GetOptions{})
		if gerr != nil {
			return nil, gerr
		}
		slice.ResourceVersion = old.ResourceVersion
		_, err = slices.Update(ctx, slice, metav1.UpdateOptions{})
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return &HostService{Proxy: proxy, Address: net.JoinHostPort(fmt.Sprintf("%s.%s.svc.%s", name, namespace, ClusterDomain), strconv.Itoa(int(port)))}, nil
}
