// Package backends turns a ChatBackend (a RabbitMQ or PostgreSQL the
// platform team offers) into what the operator needs to reach it as admin:
// which backend a ChatCluster gets (named, or the default of its type),
// whether the cluster's namespace may use it, and the admin connection read
// from the Secrets and referenced objects (RabbitmqCluster, CloudNativePG
// Cluster) the backend points at. Those objects are read as unstructured by
// group/version/kind: their operators' Go modules are not dependencies.
package backends

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/status"
)

// Reasons of the errors this package returns; the controllers put them in
// BrokerReady / DatabaseReady and in the ChatBackend's Ready condition.
const (
	// ReasonBackendNotFound: the named ChatBackend does not exist, or none is the default.
	ReasonBackendNotFound = "BackendNotFound"
	// ReasonWrongBackendType: a RabbitMQ backend named for the database, or the reverse.
	ReasonWrongBackendType = "WrongBackendType"
	// ReasonNamespaceNotAllowed: the backend does not admit the ChatCluster's namespace.
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	// ReasonKindNotInstalled: the referenced kind (RabbitmqCluster, CNPG Cluster) has no CRD here.
	ReasonKindNotInstalled = "KindNotInstalled"
	// ReasonReferenceNotFound: the referenced object does not exist.
	ReasonReferenceNotFound = "ReferenceNotFound"
	// ReasonReferenceNotReady: the referenced object has not published its credentials yet.
	ReasonReferenceNotReady = "ReferenceNotReady"
	// ReasonSecretNotFound: a Secret the backend names, or its key, does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonInvalid: a value read from the backend's Secrets is unusable.
	ReasonInvalid = "InvalidBackend"
)

// Select returns the ChatBackend of type typ (v1alpha1.BackendTypeRabbitMQ or
// ...PostgreSQL) a ChatCluster gets: the one named, or, for an empty name,
// the default of that type. Several defaults: the newest wins, as for
// StorageClasses (the name breaks a tie). field names the spec field, for
// messages.
func Select(all []v1alpha1.ChatBackend, typ, name, field string) (*v1alpha1.ChatBackend, error) {
	if name != "" {
		for i := range all {
			b := &all[i]
			if b.Name != name {
				continue
			}
			if b.Type() != typ {
				return nil, status.WithReason(ReasonWrongBackendType,
					fmt.Errorf("%s: ChatBackend %q is a %s backend, not %s", field, name, b.Type(), typ))
			}
			return b, nil
		}
		return nil, status.WithReason(ReasonBackendNotFound, fmt.Errorf("%s: ChatBackend %q does not exist", field, name))
	}
	if d := Default(all, typ); d != nil {
		return d, nil
	}
	return nil, status.WithReason(ReasonBackendNotFound, fmt.Errorf(
		"%s is empty and no %s ChatBackend is annotated %s=true: name one, or ask the platform team for a default",
		field, typ, v1alpha1.AnnotationDefaultBackend))
}

// Default is the default backend of type typ, nil when there is none.
func Default(all []v1alpha1.ChatBackend, typ string) *v1alpha1.ChatBackend {
	var best *v1alpha1.ChatBackend
	for i := range all {
		b := &all[i]
		if b.Type() != typ || !b.IsDefault() || !b.DeletionTimestamp.IsZero() {
			continue
		}
		if best == nil || newer(b, best) {
			best = b
		}
	}
	return best
}

func newer(a, b *v1alpha1.ChatBackend) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return a.Name < b.Name
}

// Admits reports whether backend b serves ChatClusters of namespace ns, and
// an error (reason NamespaceNotAllowed) saying why not.
func Admits(b *v1alpha1.ChatBackend, ns *corev1.Namespace) error {
	a := b.Spec.AllowedNamespaces
	switch a.From {
	case v1alpha1.NamespacesFromAll:
		return nil
	case v1alpha1.NamespacesFromSelector:
		if a.Selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(a.Selector)
			if err != nil {
				return status.WithReason(ReasonInvalid, fmt.Errorf("ChatBackend %q: spec.allowedNamespaces.selector: %w", b.Name, err))
			}
			if !sel.Empty() && sel.Matches(labels.Set(ns.Labels)) {
				return nil
			}
		}
	}
	return status.WithReason(ReasonNamespaceNotAllowed, fmt.Errorf(
		"ChatBackend %q does not allow namespace %q (spec.allowedNamespaces); nothing was created in it; ask the platform team to admit the namespace",
		b.Name, ns.Name))
}

// UsedBy lists the ChatClusters (namespace/name) whose status says they use
// backend name, sorted.
func UsedBy(clusters []v1alpha1.ChatCluster, name string) []string {
	var out []string
	for _, cc := range clusters {
		if cc.Status.Backends.Broker == name || cc.Status.Backends.Database == name {
			out = append(out, cc.Namespace+"/"+cc.Name)
		}
	}
	slices.Sort(out)
	return out
}

// errMissingKey is a Secret without the key a backend needs.
func errMissingKey(namespace, name, key string) error {
	return status.WithReason(ReasonSecretNotFound, fmt.Errorf("Secret %s/%s has no key %q", namespace, name, key))
}

// joinNonEmpty joins the non-empty parts.
func joinNonEmpty(sep string, parts ...string) string {
	return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), sep)
}
