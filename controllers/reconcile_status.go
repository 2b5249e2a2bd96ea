package controllers

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/status"
)

// errStale says the status patch lost an optimistic-lock race: the pass
// worked from an older ChatCluster (the cache lags behind a write, often our
// own previous status patch) and must run again on the newer one.
var errStale = errors.New("the ChatCluster changed during the pass")

// reconcileStatus computes the status from what the pass observed and
// patches it only when it differs from the stored one, with an optimistic
// lock so a concurrent writer is never overwritten.
func (r *ChatClusterReconciler) reconcileStatus(ctx context.Context, p *pass) error {
	cc := p.cc
	st := cc.Status.DeepCopy()
	o := status.Observed{
		Generation:         cc.Generation,
		Paused:             p.paused,
		PendingWhilePaused: p.paused && cc.Generation != cc.Status.ObservedGeneration,
		Deployment:         p.deployment,
		MissingSecrets:     p.missingSecrets,
		Err:                errors.Join(append([]error{p.err()}, p.waiting...)...),
	}
	if p.podSecurity != nil {
		// A typed nil must not reach the interface field.
		o.PodSecurity = p.podSecurity
	}
	for _, c := range p.conditions {
		meta.SetStatusCondition(&st.Conditions, c)
	}
	// A section removed from the spec takes its condition along once
	// nothing is left to delete (finalizer.go); until then its condition
	// reports the cleanup without holding up Ready.
	for _, typ := range staleConditions(cc) {
		meta.RemoveStatusCondition(&st.Conditions, typ)
	}
	for _, c := range st.Conditions {
		if (c.Type == v1alpha1.ConditionBrokerReady || c.Type == v1alpha1.ConditionDatabaseReady) && inSpecCondition(cc, c.Type) {
			o.Dependencies = append(o.Dependencies, c)
		}
	}
	for _, c := range [...]func(status.Observed) metav1.Condition{status.Ready, status.Progressing, status.Degraded, status.Paused} {
		meta.SetStatusCondition(&st.Conditions, c(o))
	}
	if c, ok := status.Deprecated(cc.Generation, deprecatedFields(cc)); ok {
		meta.SetStatusCondition(&st.Conditions, c)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionDeprecated)
	}
	if !p.paused {
		// While paused the children follow the last generation applied; the
		// top-level observedGeneration keeps saying which one that is.
		st.ObservedGeneration = cc.Generation
		// The provisioning steps ran: they say which generated Secrets exist.
		st.Secrets = p.secrets
	}

	c := resource.Cluster{ChatCluster: cc, ClusterDomain: r.Options.ClusterDomain}
	st.Selector = labels.SelectorFromSet(naming.SelectorLabels(cc.Name)).String()
	st.Endpoint = c.Endpoint()
	st.ExternalEndpoint = c.ExternalEndpoint()
	st.Replicas, st.ReadyReplicas, st.UpdatedReplicas, st.Image = 0, 0, 0, ""
	if d := p.deployment; d != nil {
		st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = d.Status.Replicas, d.Status.ReadyReplicas, d.Status.UpdatedReplicas
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if ctr.Name == naming.ContainerName {
				st.Image = ctr.Image
			}
		}
	}
	st.AvailableImage = ""
	if cc.Spec.Image == "" && cc.Spec.DefaultImagePolicy == v1alpha1.DefaultImagePolicyHold && st.Image != "" && st.Image != r.Options.DefaultImage {
		st.AvailableImage = r.Options.DefaultImage
	}

	if equality.Semantic.DeepEqual(&p.original.Status, st) {
		return nil
	}
	r.conditionEvents(cc, p.original.Status.Conditions, st.Conditions, p.podSecurity)
	cc.Status = *st
	patch := client.MergeFromWithOptions(p.original, client.MergeFromWithOptimisticLock{})
	if err := r.Status().Patch(ctx, cc, patch); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case apierrors.IsConflict(err):
			return errStale
		}
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}

// deprecatedFields lists the deprecated spec fields cc uses and what to move to.
func deprecatedFields(cc *v1alpha1.ChatCluster) map[string]string {
	out := map[string]string{}
	if b := cc.Spec.Broker; b != nil && b.SecretRef != nil {
		out["spec.broker.secretRef"] = "it puts a RabbitMQ admin URI in the tenant's namespace and shares one vhost; " +
			"name a RabbitMQ ChatBackend in spec.broker.backend (or leave both empty for the default) to get a vhost and user of the cluster's own"
	}
	if d := cc.Spec.Database; d != nil && d.AdminSecretRef != nil {
		out["spec.database.adminSecretRef"] = "it puts a PostgreSQL admin URI in the tenant's namespace; " +
			"name a PostgreSQL ChatBackend in spec.database.backend (the same server keeps the same database)"
	}
	return out
}
