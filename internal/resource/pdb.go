package resource

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/parley-chat/parley/internal/naming"
)

// PDBBuilder builds the PodDisruptionBudget.
type PDBBuilder struct{ Cluster }

// Build returns the named, empty PodDisruptionBudget.
func (b *PDBBuilder) Build() (Object, error) {
	return &policyv1.PodDisruptionBudget{ObjectMeta: objectMeta(b.Cluster, b.Name())}, nil
}

// Wanted is true unless the spec turns the budget off.
func (b *PDBBuilder) Wanted() bool {
	p := b.Spec.PodDisruptionBudget
	return p == nil || p.Enabled == nil || *p.Enabled
}

// Update sets selector and budget (default: at most one pod unavailable).
func (b *PDBBuilder) Update(obj Object) error {
	pdb := obj.(*policyv1.PodDisruptionBudget)
	setLabels(pdb, naming.Labels(b.ChatCluster.Name))
	pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: naming.SelectorLabels(b.ChatCluster.Name)}
	pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable = ptrTo(intstr.FromInt32(1)), nil
	if p := b.Spec.PodDisruptionBudget; p != nil {
		switch {
		case p.MinAvailable != nil:
			pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable = nil, ptrTo(*p.MinAvailable)
		case p.MaxUnavailable != nil:
			pdb.Spec.MaxUnavailable = ptrTo(*p.MaxUnavailable)
		}
	}
	return nil
}
