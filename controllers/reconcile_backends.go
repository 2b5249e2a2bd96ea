package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/backends"
	"github.com/parley-chat/parley/internal/status"
)

// The operator reads ChatBackends, Namespaces (for allowedNamespaces), and
// what a backend references: Secrets (get, above), RabbitmqClusters,
// CloudNativePG Clusters and their Services, read-only.
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatbackends,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=rabbitmq.com,resources=rabbitmqclusters,verbs=get
// +kubebuilder:rbac:groups=postgresql.cnpg.io,resources=clusters,verbs=get

// backendUse is what the backends step learned about one of a cluster's
// backends: which ChatBackend, and how to reach it as admin, or why not.
type backendUse struct {
	name     string
	rabbitmq backends.RabbitMQ
	postgres backends.PostgreSQL
	// err says why the backend cannot be used (not found, namespace not
	// allowed, a credential missing); the step of the piece reports it in its
	// condition and creates nothing.
	err error
}

// usesBrokerBackend reports whether the cluster's RabbitMQ is a ChatBackend
// (named, or the default) rather than the deprecated secretRef.
func usesBrokerBackend(cc *v1alpha1.ChatCluster) bool {
	return cc.Spec.Broker != nil && cc.Spec.Broker.SecretRef == nil
}

// usesDatabaseBackend reports whether the cluster's database is created in a
// ChatBackend (named, or the default).
func usesDatabaseBackend(cc *v1alpha1.ChatCluster) bool {
	d := cc.Spec.Database
	return d != nil && d.AdminSecretRef == nil && d.SecretRef == nil
}

// reconcileBackends runs first: it settles which ChatBackends the cluster
// uses and reads their admin connections for the broker and database steps.
// A default, once chosen, is kept in status.backends, like a
// PersistentVolumeClaim keeps the StorageClass it got: a later default does
// not move a cluster's history. The namespace must be admitted by the
// backend before anything is recorded or created.
func (r *ChatClusterReconciler) reconcileBackends(ctx context.Context, p *pass) error {
	if !usesBrokerBackend(p.cc) && !usesDatabaseBackend(p.cc) {
		return nil
	}
	var list v1alpha1.ChatBackendList
	if err := r.List(ctx, &list); err != nil {
		return fmt.Errorf("list ChatBackends: %w", err)
	}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, types.NamespacedName{Name: p.cc.Namespace}, ns); err != nil {
		return fmt.Errorf("read Namespace %s: %w", p.cc.Namespace, err)
	}
	if usesBrokerBackend(p.cc) {
		p.broker = r.useBackend(ctx, list.Items, ns, v1alpha1.BackendTypeRabbitMQ,
			p.cc.Spec.Broker.Backend, &p.cc.Status.Backends.Broker, "spec.broker.backend")
	}
	if usesDatabaseBackend(p.cc) {
		p.database = r.useBackend(ctx, list.Items, ns, v1alpha1.BackendTypePostgreSQL,
			p.cc.Spec.Database.Backend, &p.cc.Status.Backends.Database, "spec.database.backend")
	}
	return nil
}

// useBackend resolves one backend. bound is the name kept in status; it is
// set here the first time the backend is usable.
func (r *ChatClusterReconciler) useBackend(ctx context.Context, all []v1alpha1.ChatBackend, ns *corev1.Namespace,
	typ, named string, bound *string, field string) *backendUse {
	name := named
	if *bound != "" {
		if named != "" && named != *bound {
			return &backendUse{err: status.WithReason(ReasonBackendChanged, fmt.Errorf(
				"%s: the cluster's state lives in ChatBackend %q; it cannot move to %q (create a new ChatCluster to move)",
				field, *bound, named))}
		}
		name = *bound
	}
	b, err := backends.Select(all, typ, name, field)
	if err != nil {
		return &backendUse{name: name, err: err}
	}
	use := &backendUse{name: b.Name}
	if use.err = backends.Admits(b, ns); use.err != nil {
		return use
	}
	res := backends.Resolver{Reader: r.APIReader, ClusterDomain: r.Options.ClusterDomain}
	if typ == v1alpha1.BackendTypeRabbitMQ {
		use.rabbitmq, use.err = res.RabbitMQ(ctx, b)
	} else {
		use.postgres, use.err = res.PostgreSQL(ctx, b)
	}
	if use.err != nil {
		use.err = fmt.Errorf("ChatBackend %q: %w", b.Name, use.err)
		return use
	}
	*bound = b.Name
	return use
}

// backendByName resolves a backend recorded in status.externalState, to
// delete what the cluster owns there. Admission is not checked: a namespace
// the platform team no longer admits still has its own state removed.
func (r *ChatClusterReconciler) backendByName(ctx context.Context, name string) (*v1alpha1.ChatBackend, error) {
	b := &v1alpha1.ChatBackend{}
	if err := r.Get(ctx, types.NamespacedName{Name: name}, b); err != nil {
		return nil, fmt.Errorf("ChatBackend %q (where this cluster's state lives): %w", name, err)
	}
	return b, nil
}
