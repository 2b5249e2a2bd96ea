// Package resource builds the Kubernetes objects a ChatCluster owns: one pure
// builder per object, in the shape of rabbitmq/cluster-operator. Build returns
// an empty object carrying only its name and namespace; Update sets the desired
// fields on the live object the reconciler read, leaving alone the fields others
// own (HPA-managed replicas, API-server defaults), so an unchanged cluster
// produces an unchanged object and no write. Nothing here talks to an API server.
package resource

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
)

// Object is a Kubernetes object: what controller-runtime calls client.Object.
type Object interface {
	metav1.Object
	runtime.Object
}

// ResourceBuilder builds one child of a ChatCluster.
type ResourceBuilder interface {
	// Build returns the object with only its name and namespace set.
	Build() (Object, error)
	// Update sets the desired fields on obj, the live object (or the empty one
	// from Build when it does not exist yet).
	Update(obj Object) error
}

// Optional is implemented by builders whose object exists only when the spec
// asks for it. When Wanted is false the reconciler deletes the object.
type Optional interface {
	Wanted() bool
}

// Annotations the operator puts on the objects it owns.
const (
	// AnnotationConfigHash, on the pod template, digests the rendered config and
	// the referenced Secrets the chat server reads only at start: a real change
	// rolls the pods, nothing else does.
	AnnotationConfigHash = "chat.parley.io/config-hash"
	// AnnotationTemplateHash, on the Deployment, digests the pod template the
	// operator last wrote, so a template the API server defaulted is not rewritten.
	AnnotationTemplateHash = "chat.parley.io/template-hash"
	// AnnotationManagedAnnotations lists the annotation keys the operator set
	// from the spec, so a key removed from the spec is removed from the object
	// while annotations written by others (cloud controllers) stay.
	AnnotationManagedAnnotations = "chat.parley.io/managed-annotations"
)

// Defaults the builders apply where the spec leaves a choice open.
const (
	DefaultReplicas      int32 = 1
	DefaultClusterDomain       = "cluster.local"
	DefaultDrainTimeout        = 25 * time.Second
	// ChatPort is the chat server's public listener: WebSocket, web page,
	// health and a terse readiness. The Service and the Ingress expose it.
	ChatPort int32 = 8000
	// AdminPort is the chat server's operator-facing listener: the HTTP API,
	// Prometheus metrics, readiness with the reason. The Service carries it
	// under its own name; the Ingress never routes to it.
	AdminPort int32 = 8001
	// AdminPortName names the admin port on the container and the Service.
	AdminPortName = "admin"
	// RunAsUser is the unprivileged user (and group) the chat server runs as.
	RunAsUser int64 = 65532
)

// Cluster is a ChatCluster with what the builders need besides its spec.
type Cluster struct {
	*v1alpha1.ChatCluster
	// DefaultImage is the operator's chat server image, for an empty spec.image.
	DefaultImage string
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string
	// SecretsHash digests the referenced Secrets the chat server reads only at
	// start (see SecretReferences); it goes into the pod template's config hash.
	SecretsHash string
	// ServiceMonitorAvailable is true when the monitoring.coreos.com/v1
	// ServiceMonitor kind exists in the cluster.
	ServiceMonitorAvailable bool
	// PrometheusRuleAvailable is true when the monitoring.coreos.com/v1
	// PrometheusRule kind exists in the cluster.
	PrometheusRuleAvailable bool
	// BrokerCA and DatabaseCA are true when the cluster's ChatBackend
	// verifies TLS: its CA is in the credentials Secret (key ca.crt) and the
	// chat servers trust only it.
	BrokerCA, DatabaseCA bool
}

// Builders returns the builders of a cluster's children in the order they are
// applied: identity and configuration before the workload, the workload
// before what points at it.
func Builders(c Cluster) []ResourceBuilder {
	return []ResourceBuilder{
		&ServiceAccountBuilder{c},
		&ConfigMapBuilder{c},
		&ServiceBuilder{c},
		&DeploymentBuilder{c},
		&HPABuilder{c},
		&PDBBuilder{c},
		&IngressBuilder{c},
		&StreamIngressBuilder{c},
		&NetworkPolicyBuilder{c},
		&ServiceMonitorBuilder{c},
		&PrometheusRuleBuilder{c},
	}
}

// Name is the name of the cluster's children that carry the cluster's own name.
func (c Cluster) Name() string { return naming.ChildResourceName(c.ChatCluster.Name, "") }

// Image is the chat server image the cluster runs.
func (c Cluster) Image() string {
	if c.Spec.Image != "" {
		return c.Spec.Image
	}
	return c.DefaultImage
}

// Autoscaled reports whether a HorizontalPodAutoscaler owns the replica count.
func (c Cluster) Autoscaled() bool { return c.Spec.Autoscaling != nil }

// Replicas is the replica count the spec asks for when autoscaling is off.
func (c Cluster) Replicas() int32 {
	if c.Spec.Replicas != nil {
		return *c.Spec.Replicas
	}
	return DefaultReplicas
}

// MinReplicas is the autoscaler's lower bound (the Deployment's first size).
func (c Cluster) MinReplicas() int32 {
	if a := c.Spec.Autoscaling; a != nil && a.MinReplicas != nil {
		return *a.MinReplicas
	}
	return 2
}

func (c Cluster) domain() string {
	if c.ClusterDomain != "" {
		return c.ClusterDomain
	}
	return DefaultClusterDomain
}

func (c Cluster) drainTimeout() time.Duration {
	if c.Spec.DrainTimeout != nil && c.Spec.DrainTimeout.Duration > 0 {
		return c.Spec.DrainTimeout.Duration
	}
	return DefaultDrainTimeout
}

// ServicePort is the port the Service listens on: spec.service.port, else 80, or 443 with TLS.
func (c Cluster) ServicePort() int32 {
	if c.Spec.Service.Port != nil {
		return *c.Spec.Service.Port
	}
	if c.Spec.TLS != nil {
		return 443
	}
	return 80
}

// Endpoint is the in-cluster WebSocket URL of the cluster's Service.
func (c Cluster) Endpoint() string {
	scheme, port := "ws", c.ServicePort()
	if c.Spec.TLS != nil {
		scheme = "wss"
	}
	host := c.Name() + "." + c.Namespace + ".svc." + c.domain()
	if (scheme == "ws" && port != 80) || (scheme == "wss" && port != 443) {
		host += ":" + itoa(port)
	}
	return scheme + "://" + host + WebSocketPath
}

// ExternalEndpoint is the WebSocket URL through the Ingress, or "" without one.
func (c Cluster) ExternalEndpoint() string {
	in := c.Spec.Ingress
	if in == nil {
		return ""
	}
	scheme := "ws"
	if in.TLSSecretName != "" {
		scheme = "wss"
	}
	return scheme + "://" + in.Host + strings.TrimSuffix(ingressPath(in), "/") + WebSocketPath
}

// WebSocketPath is where the chat server accepts WebSocket connections.
const WebSocketPath = "/connection/websocket"

// Hash is a short, stable digest of the given parts.
func Hash(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		// Length-prefix each part so ("ab","c") and ("a","bc") differ.
		h.Write([]byte(itoa(int32(len(p))) + ":"))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func hashJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return Hash(b), nil
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

// setLabels puts our labels on obj, keeping labels others added.
func setLabels(obj metav1.Object, labels map[string]string) {
	l := obj.GetLabels()
	if l == nil {
		l = make(map[string]string, len(labels))
	}
	maps.Copy(l, labels)
	obj.SetLabels(l)
}

// setOwnedAnnotations applies the annotations the spec asks for and removes
// those the operator set before that the spec no longer has. Annotations
// written by anyone else stay.
func setOwnedAnnotations(obj metav1.Object, desired map[string]string) {
	a := obj.GetAnnotations()
	if a == nil && len(desired) == 0 {
		return
	}
	if a == nil {
		a = map[string]string{}
	}
	if prev, ok := a[AnnotationManagedAnnotations]; ok {
		for k := range strings.SplitSeq(prev, ",") {
			if _, still := desired[k]; !still {
				delete(a, k)
			}
		}
	}
	maps.Copy(a, desired)
	if len(desired) > 0 {
		a[AnnotationManagedAnnotations] = strings.Join(slices.Sorted(maps.Keys(desired)), ",")
	} else {
		delete(a, AnnotationManagedAnnotations)
	}
	if len(a) == 0 {
		a = nil
	}
	obj.SetAnnotations(a)
}

func setAnnotation(obj metav1.Object, key, value string) {
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[key] = value
	obj.SetAnnotations(a)
}

func objectMeta(c Cluster, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: c.Namespace}
}

func ptrTo[T any](v T) *T { return &v }

// jsonSubset reports whether every field set in want (as it serializes:
// empty and zero fields are left out) has the same value in got. Fields the
// API server filled in with defaults are in got only, so they do not count as
// a difference; a field someone changed does.
func jsonSubset(want, got any) (bool, error) {
	var w, g any
	for _, x := range []struct {
		in  any
		out *any
	}{{want, &w}, {got, &g}} {
		b, err := json.Marshal(x.in)
		if err != nil {
			return false, err
		}
		if err := json.Unmarshal(b, x.out); err != nil {
			return false, err
		}
	}
	return subsetOf(w, g), nil
}

// subsetOf reports whether every value set in want is set to the same value
// in got (maps may have more keys in got; lists must match element by element).
func subsetOf(want, got any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range w {
			if !subsetOf(v, g[k]) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !subsetOf(w[i], g[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(want, got)
	}
}
