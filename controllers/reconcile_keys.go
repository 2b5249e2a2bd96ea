package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/keys"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/status"
)

// keyRing is one of the two rotated secrets of a cluster.
type keyRing struct {
	what       string // for messages: "JWT key", "API key"
	secretName string
	layout     keys.Layout
	supplied   *v1alpha1.SecretKeyReference
	annotation string // the rotation request annotation
	// exists records the Secret in the status (status.secrets).
	exists func(p *pass, name string)
}

func keyRings(cc *v1alpha1.ChatCluster) []keyRing {
	return []keyRing{
		{"JWT key", naming.JWTSecretName(cc.Name), keys.JWT, cc.Spec.Auth.JWTSecretRef, keys.RotateJWTKeyAnnotation,
			func(p *pass, name string) { p.secrets.JWT = name }},
		{"API key", naming.APIKeySecretName(cc.Name), keys.APIKey, cc.Spec.Auth.APIKeySecretRef, keys.RotateAPIKeyAnnotation,
			func(p *pass, name string) { p.secrets.APIKey = name }},
	}
}

// reconcileKeys makes sure the Secrets <name>-jwt (keys current, previous)
// and <name>-api-key (keys api-key, api-key-previous) exist, generating the
// keys or copying the user's (spec.auth.jwtSecretRef, apiKeySecretRef), and
// rotating them on request: a new value of the annotation
// chat.parley.io/rotate-jwt-key (or rotate-api-key) makes the current key the
// previous one, which stays valid for spec.auth.keyRotationOverlap and is
// then dropped. The chat servers reload both files without a restart.
func (r *ChatClusterReconciler) reconcileKeys(ctx context.Context, p *pass) error {
	overlap := keys.DefaultOverlap
	if o := p.cc.Spec.Auth.KeyRotationOverlap; o != nil && o.Duration > 0 {
		overlap = o.Duration
	}
	var errs []error
	for _, k := range keyRings(p.cc) {
		if err := r.reconcileKeyRing(ctx, p, k, overlap); err != nil {
			errs = append(errs, fmt.Errorf("%s (Secret %s): %w", k.what, k.secretName, err))
		}
	}
	return errors.Join(errs...)
}

func (r *ChatClusterReconciler) reconcileKeyRing(ctx context.Context, p *pass, k keyRing, overlap time.Duration) error {
	s, found, err := r.generatedSecret(ctx, p, k.secretName)
	if err != nil {
		return err
	}
	var ring keys.Ring
	if found {
		ring = k.layout.Read(s.Data, s.Annotations)
	}
	request := p.cc.Annotations[k.annotation]
	now := r.now()
	var plan keys.Plan
	if k.supplied != nil {
		v, err := r.secretValue(ctx, p.cc.Namespace, *k.supplied)
		if err != nil {
			return err
		}
		if plan, err = keys.ReconcileSupplied(ring, v, now, overlap); err != nil {
			return status.WithReason(ReasonInvalidKey, fmt.Errorf("the key in Secret %s (key %q): %w", k.supplied.Name, k.supplied.Key, err))
		}
		if request != "" && request != ring.Request {
			// Remember the request so the event is recorded once.
			plan.Ring.Request = request
			r.Recorder.Eventf(p.cc, nil, corev1.EventTypeWarning, EventRotationIgnored, "Rotate",
				"the %s comes from Secret %s: rotate it by changing that Secret (the replaced key stays valid for %s)", k.what, k.supplied.Name, overlap)
		}
	} else if plan, err = keys.Reconcile(ring, request, now, overlap, keys.Generate); err != nil {
		return err
	}
	if !found || plan.Changed(ring) {
		if err := r.writeSecret(ctx, p, k.secretName, func(s *corev1.Secret) {
			k.layout.Write(plan.Ring, s.Data, s.Annotations)
		}); err != nil {
			return err
		}
	}
	k.exists(p, k.secretName)
	switch {
	case plan.Rotated:
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventKeyRotated, "Rotate",
			"rotated the %s in Secret %s; the previous key stays valid until %s", k.what, k.secretName,
			plan.Ring.RotatedAt.Add(overlap).Format(time.RFC3339))
	case plan.Generated && k.supplied == nil:
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventKeyGenerated, "Generate",
			"generated the %s in Secret %s", k.what, k.secretName)
	}
	if plan.Dropped {
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventKeyDropped, "Rotate",
			"dropped the previous %s from Secret %s: its overlap of %s ended", k.what, k.secretName, overlap)
	}
	p.requeue(plan.RequeueAfter)
	return nil
}
