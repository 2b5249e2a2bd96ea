package resource

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/parley-chat/parley/internal/naming"
)

// ServiceAccountBuilder builds the chat servers' ServiceAccount. The chat
// server never calls the Kubernetes API, so the account has no roles and its
// token is not mounted.
type ServiceAccountBuilder struct{ Cluster }

// Build returns the named, empty ServiceAccount.
func (b *ServiceAccountBuilder) Build() (Object, error) {
	return &corev1.ServiceAccount{ObjectMeta: objectMeta(b.Cluster, b.Name())}, nil
}

// Update sets labels and turns token automounting off.
func (b *ServiceAccountBuilder) Update(obj Object) error {
	sa := obj.(*corev1.ServiceAccount)
	setLabels(sa, naming.Labels(b.ChatCluster.Name))
	sa.AutomountServiceAccountToken = ptrTo(false)
	return nil
}
