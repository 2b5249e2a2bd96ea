package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/status"
)

// AnnotationSecretFor, set to a ChatCluster's name on a Secret the user
// creates under one of the names the operator generates for that cluster
// (<name>-jwt, <name>-api-key, <name>-db, <name>-broker), says the user means
// the operator to use it: a <name>-db holding a chosen password, keys to
// start from. Without it, or the operator's own mark (the ChatCluster as the
// Secret's controller), such a Secret is refused: a Secret that happens to
// have that name, or one planted to feed the chat servers a known key, is
// never silently taken over.
const AnnotationSecretFor = "chat.parley.io/secret-for"

// ReasonSecretNotOwned: a Secret under a generated name was made by someone
// else, without the opt-in annotation.
const ReasonSecretNotOwned = "SecretNotOwned"

// generatedSecretNames are the Secrets the operator writes for cc: the keys
// always, the database credentials when it provisions the database, the
// broker credentials when the broker is a ChatBackend.
func generatedSecretNames(cc *v1alpha1.ChatCluster) map[string]bool {
	names := map[string]bool{naming.JWTSecretName(cc.Name): true, naming.APIKeySecretName(cc.Name): true}
	if d := cc.Spec.Database; d != nil && d.SecretRef == nil {
		names[naming.DatabaseSecretName(cc.Name)] = true
	}
	if usesBrokerBackend(cc) {
		names[naming.BrokerSecretName(cc.Name)] = true
	}
	return names
}

// secretOwnership says why the operator may not use s, a Secret under one of
// cc's generated names (nil: it may). The operator's own Secrets carry the
// ChatCluster as their controller; a user's carry AnnotationSecretFor.
func secretOwnership(cc *v1alpha1.ChatCluster, s *corev1.Secret) error {
	if metav1.IsControlledBy(s, cc) || s.Annotations[AnnotationSecretFor] == cc.Name {
		return nil
	}
	by := "it has no controller"
	if ref := metav1.GetControllerOf(s); ref != nil {
		by = fmt.Sprintf("its controller is %s %s", ref.Kind, ref.Name)
	}
	return status.WithReason(ReasonSecretNotOwned, fmt.Errorf(
		"Secret %s exists and was not created by the operator for this ChatCluster (%s): refusing to use or change it; "+
			"rename or delete it, or annotate it %s=%s to have the operator use it", s.Name, by, AnnotationSecretFor, cc.Name))
}

// generatedSecret reads one of the cluster's generated Secrets, refusing one
// the operator did not create and the user did not hand over.
func (r *ChatClusterReconciler) generatedSecret(ctx context.Context, p *pass, name string) (*corev1.Secret, bool, error) {
	s, found, err := r.getSecret(ctx, p.cc.Namespace, name)
	if err != nil || !found {
		return s, found, err
	}
	if err := secretOwnership(p.cc, s); err != nil {
		return nil, false, err
	}
	return s, true, nil
}
