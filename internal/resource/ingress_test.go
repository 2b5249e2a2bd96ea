package resource

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
)

// spec.ingress.streamAnnotations puts <path>connection/ on an Ingress of its
// own with those annotations on top of the common ones; the main Ingress
// keeps only the common ones, and without streamAnnotations there is none.
func TestStreamsIngress(t *testing.T) {
	nginx := map[string]string{
		"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
		"nginx.ingress.kubernetes.io/proxy-buffering":    "off",
	}
	for _, tc := range []struct{ path, want string }{{"", "/connection/"}, {"/", "/connection/"}, {"/chat/", "/chat/connection/"}, {"/chat", "/chat/connection/"}} {
		c := cluster(withTLS, func(cc *v1alpha1.ChatCluster) {
			cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org", ClassName: ptrTo("nginx"), TLSSecretName: "chat-tls", Path: tc.path,
				Annotations: map[string]string{"common": "yes"}, StreamAnnotations: nginx}
		})
		b := &StreamIngressBuilder{c}
		if !b.Wanted() {
			t.Fatal("streams Ingress not wanted with streamAnnotations set")
		}
		obj, _ := b.Build()
		if obj.GetName() != naming.StreamsIngressName("team-chat") {
			t.Errorf("named %s", obj.GetName())
		}
		ing := updated(t, b, obj.(*networkingv1.Ingress))
		p := ing.Spec.Rules[0].HTTP.Paths[0]
		if p.Path != tc.want || p.Backend.Service.Name != "team-chat" || p.Backend.Service.Port.Name != "https" || ing.Spec.TLS[0].SecretName != "chat-tls" {
			t.Errorf("path %q: streams Ingress %+v", tc.path, ing.Spec)
		}
		a := ing.GetAnnotations()
		if a["common"] != "yes" || a["nginx.ingress.kubernetes.io/proxy-read-timeout"] != "3600" || a["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
			t.Errorf("streams Ingress annotations %v", a)
		}
		main := updated(t, &IngressBuilder{c}, &networkingv1.Ingress{})
		if _, ok := main.GetAnnotations()["nginx.ingress.kubernetes.io/proxy-read-timeout"]; ok {
			t.Error("the main Ingress got the stream annotations")
		}
	}
	plain := cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org"} })
	if (&StreamIngressBuilder{plain}).Wanted() || (&StreamIngressBuilder{cluster()}).Wanted() {
		t.Error("streams Ingress wanted without streamAnnotations")
	}
}
