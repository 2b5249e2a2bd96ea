package resource

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// The container declares the public port and the admin port, and the kubelet
// probes the public one (the listener clients are sent to).
func TestContainerHasPublicAndAdminPortsAndProbesThePublicOne(t *testing.T) {
	for name, tc := range map[string]struct {
		c          Cluster
		public     string
		probeProto corev1.URIScheme
	}{
		"plain": {cluster(), "http", corev1.URISchemeHTTP},
		"TLS":   {cluster(withTLS), "https", corev1.URISchemeHTTPS},
	} {
		t.Run(name, func(t *testing.T) {
			c := desiredDeployment(t, tc.c).Spec.Template.Spec.Containers[0]
			ports := map[string]int32{}
			for _, p := range c.Ports {
				if len(p.Name) > 15 {
					t.Errorf("port name %q is longer than 15 characters", p.Name)
				}
				ports[p.Name] = p.ContainerPort
			}
			if len(c.Ports) != 2 || ports[tc.public] != 8000 || ports["admin"] != 8001 {
				t.Fatalf("container ports = %+v, want %s:8000 and admin:8001", c.Ports, tc.public)
			}
			for what, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				if g := p.HTTPGet; g.Port.String() != tc.public || g.Scheme != tc.probeProto {
					t.Errorf("%s probe on port %s (%s), want the public port %s (%s)", what, g.Port.String(), g.Scheme, tc.public, tc.probeProto)
				}
			}
		})
	}
}

func servicePorts(svc *corev1.Service) map[string]corev1.ServicePort {
	out := map[string]corev1.ServicePort{}
	for _, p := range svc.Spec.Ports {
		out[p.Name] = p
	}
	return out
}

// The Service carries both ports under their own names; the Ingress routes
// to the public one only.
func TestServiceCarriesBothPortsAndTheIngressOnlyThePublicOne(t *testing.T) {
	for name, tc := range map[string]struct {
		c                      Cluster
		public                 string
		publicPort             int32
		appProtocol, adminProt string
	}{
		"plain": {cluster(), "http", 80, "kubernetes.io/ws", "http"},
		"TLS":   {cluster(withTLS), "https", 443, "kubernetes.io/wss", "https"},
	} {
		t.Run(name, func(t *testing.T) {
			svc := updated(t, &ServiceBuilder{tc.c}, &corev1.Service{})
			ports := servicePorts(svc)
			pub, admin := ports[tc.public], ports["admin"]
			if len(ports) != 2 || pub.Port != tc.publicPort || pub.TargetPort.IntValue() != 8000 || *pub.AppProtocol != tc.appProtocol {
				t.Errorf("public port = %+v (all: %+v)", pub, svc.Spec.Ports)
			}
			if admin.Port != 8001 || admin.TargetPort.IntValue() != 8001 || *admin.AppProtocol != tc.adminProt {
				t.Errorf("admin port = %+v", admin)
			}
			c := tc.c
			c.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org"}
			ing := updated(t, &IngressBuilder{c}, &networkingv1.Ingress{})
			for _, path := range ing.Spec.Rules[0].HTTP.Paths {
				if p := path.Backend.Service.Port; p.Name != tc.public || p.Number != 0 {
					t.Errorf("the Ingress routes %s to port %+v, want the public port by name %q", path.Path, p, tc.public)
				}
			}
		})
	}
}

// A LoadBalancer keeps the node ports the API server gave both ports.
func TestServiceKeepsBothNodePorts(t *testing.T) {
	lb := cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Service.Type = corev1.ServiceTypeLoadBalancer })
	svc := updated(t, &ServiceBuilder{lb}, &corev1.Service{})
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].NodePort = 31000 + int32(i)
	}
	updated(t, &ServiceBuilder{lb}, svc)
	if p := servicePorts(svc); p["http"].NodePort != 31000 || p["admin"].NodePort != 31001 {
		t.Errorf("node ports changed: %+v", svc.Spec.Ports)
	}
}

// spec.service.port 8001 would collide with the admin port: the builder
// refuses it naming the field (the CRD refuses it too, for new objects).
func TestServicePortMustNotBeTheAdminPort(t *testing.T) {
	c := cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Service.Port = ptrTo[int32](8001) })
	err := (&ServiceBuilder{c}).Update(&corev1.Service{})
	if err == nil || !strings.Contains(err.Error(), "spec.service.port") {
		t.Fatalf("got %v, want an error naming spec.service.port", err)
	}
}

// The NetworkPolicy admits allowedFrom to the public port and, separately,
// metricsFrom and apiFrom to the admin port, with defaults that never open
// the admin port to everyone.
func TestNetworkPolicySeparatesPublicAndAdminPorts(t *testing.T) {
	ingressNS := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ingress": "true"}}}
	promNS := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "observability"}}}
	backend := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "backend"}}}
	defaultMetrics := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	ownNamespace := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{}}

	for name, tc := range map[string]struct {
		spec                 v1alpha1.NetworkPolicySpec
		public, metrics, api []networkingv1.NetworkPolicyPeer
	}{
		"defaults": {
			spec:   v1alpha1.NetworkPolicySpec{Enabled: true},
			public: nil, metrics: []networkingv1.NetworkPolicyPeer{defaultMetrics}, api: []networkingv1.NetworkPolicyPeer{ownNamespace},
		},
		"named peers": {
			spec: v1alpha1.NetworkPolicySpec{Enabled: true, AllowedFrom: []networkingv1.NetworkPolicyPeer{ingressNS},
				MetricsFrom: []networkingv1.NetworkPolicyPeer{promNS}, APIFrom: []networkingv1.NetworkPolicyPeer{backend}},
			public: []networkingv1.NetworkPolicyPeer{ingressNS}, metrics: []networkingv1.NetworkPolicyPeer{promNS}, api: []networkingv1.NetworkPolicyPeer{backend},
		},
	} {
		t.Run(name, func(t *testing.T) {
			spec := tc.spec
			c := cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.NetworkPolicy = &spec })
			np := updated(t, &NetworkPolicyBuilder{c}, &networkingv1.NetworkPolicy{})
			rules := np.Spec.Ingress
			if len(rules) != 3 {
				t.Fatalf("%d rules, want 3: %+v", len(rules), rules)
			}
			for i, want := range []struct {
				port int
				from []networkingv1.NetworkPolicyPeer
			}{{8000, tc.public}, {8001, tc.metrics}, {8001, tc.api}} {
				r := rules[i]
				if len(r.Ports) != 1 || r.Ports[0].Port.IntValue() != want.port || *r.Ports[0].Protocol != corev1.ProtocolTCP {
					t.Errorf("rule %d ports = %+v, want TCP %d", i, r.Ports, want.port)
				}
				if !peersEqual(r.From, want.from) {
					t.Errorf("rule %d (port %d) from = %+v, want %+v", i, want.port, r.From, want.from)
				}
			}
			if np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress || len(np.Spec.PolicyTypes) != 1 {
				t.Errorf("policy types = %v", np.Spec.PolicyTypes)
			}
		})
	}
}

func peersEqual(a, b []networkingv1.NetworkPolicyPeer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

// The ServiceMonitor scrapes the admin port, plain or TLS.
func TestServiceMonitorScrapesTheAdminPort(t *testing.T) {
	c := cluster()
	c.ServiceMonitorAvailable = true
	smb := &ServiceMonitorBuilder{c}
	obj, _ := smb.Build()
	sm := updated(t, smb, obj.(*unstructured.Unstructured))
	ep := sm.Object["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)
	if ep["port"] != "admin" || ep["path"] != "/metrics" || ep["scheme"] != nil {
		t.Errorf("endpoint = %v, want /metrics on port admin over http", ep)
	}
}
