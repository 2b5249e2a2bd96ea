package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
)

// FinalizerExternalState holds a ChatCluster's deletion until the operator
// has deleted its external state (RabbitMQ topology with deletionPolicy
// Delete, the PostgreSQL database with reclaimPolicy Delete). It is present
// only while there is such state to clean up.
const FinalizerExternalState = "chat.parley.io/external-state"

// AnnotationAbandonExternalState, set to "true" on a ChatCluster being
// deleted, lets it go at once without deleting its external state (a broker
// or database gone for good). An event names what was left behind.
const AnnotationAbandonExternalState = "chat.parley.io/abandon-external-state"

// externalCleanup is one piece of external state a deleted cluster must remove.
type externalCleanup struct {
	condition string
	what      string // what is left behind if this fails
	run       func(ctx context.Context) error
}

// cleanups lists what the deletion of cc must remove, per its policies.
func (r *ChatClusterReconciler) cleanups(cc *v1alpha1.ChatCluster) []externalCleanup {
	var out []externalCleanup
	if b := cc.Spec.Broker; b != nil && b.DeletionPolicy != v1alpha1.DeletionPolicyRetain {
		top := amqpprov.TopologyFor(cc.Namespace, cc.Name)
		ref := b.SecretRef
		out = append(out, externalCleanup{
			condition: v1alpha1.ConditionBrokerReady,
			what:      "RabbitMQ " + strings.Join(top.Objects(), ", "),
			run: func(ctx context.Context) error {
				uri, err := r.secretValue(ctx, cc.Namespace, ref)
				if err != nil {
					return fmt.Errorf("broker URI (spec.broker.secretRef): %w", err)
				}
				return r.broker().Delete(ctx, uri, top)
			},
		})
	}
	if d := cc.Spec.Database; d != nil && d.AdminSecretRef != nil && d.ReclaimPolicy == v1alpha1.DeletionPolicyDelete {
		names := pgprov.DatabaseFor(cc.Namespace, cc.Name)
		ref := *d.AdminSecretRef
		out = append(out, externalCleanup{
			condition: v1alpha1.ConditionDatabaseReady,
			what:      fmt.Sprintf("PostgreSQL database %q and role %q", names.Name, names.Role),
			run: func(ctx context.Context) error {
				uri, err := r.secretValue(ctx, cc.Namespace, ref)
				if err != nil {
					return fmt.Errorf("admin URI (spec.database.adminSecretRef): %w", err)
				}
				return r.database().Drop(ctx, uri, names)
			},
		})
	}
	return out
}

// reconcileFinalizer runs first among the provisioning steps: the finalizer
// is added before any external state that needs cleaning up is created, and
// removed when the policies no longer ask for cleanup (both Retain).
func (r *ChatClusterReconciler) reconcileFinalizer(ctx context.Context, p *pass) error {
	want := len(r.cleanups(p.cc)) > 0
	if want == controllerutil.ContainsFinalizer(p.cc, FinalizerExternalState) {
		return nil
	}
	if want {
		controllerutil.AddFinalizer(p.cc, FinalizerExternalState)
	} else {
		controllerutil.RemoveFinalizer(p.cc, FinalizerExternalState)
	}
	if err := r.patchFinalizers(ctx, p.original, p.cc); err != nil {
		return err
	}
	// The status patch that ends this pass is based on p.original with an
	// optimistic lock: move it to the version just written (status unchanged).
	p.original.ObjectMeta = *p.cc.ObjectMeta.DeepCopy()
	return nil
}

// patchFinalizers writes cc's finalizers, failing if cc changed since base was read.
func (r *ChatClusterReconciler) patchFinalizers(ctx context.Context, base, cc *v1alpha1.ChatCluster) error {
	if err := r.Patch(ctx, cc, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("update finalizers: %w", err)
	}
	return nil
}

// finalize deletes the external state of a ChatCluster being deleted, then
// releases it. Failures are retried with backoff up to
// Provisioning.CleanupAttempts times; then the finalizer is released anyway
// and a warning event names what was left behind, so a broker or database
// gone for good never blocks the deletion forever. The annotation
// chat.parley.io/abandon-external-state=true lets go at once.
func (r *ChatClusterReconciler) finalize(ctx context.Context, cc *v1alpha1.ChatCluster) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(cc, FinalizerExternalState) {
		r.forgetCluster(cc)
		return ctrl.Result{}, nil
	}
	original := cc.DeepCopy()
	work := r.cleanups(cc)
	if cc.Annotations[AnnotationAbandonExternalState] == "true" {
		var left []string
		for _, c := range work {
			left = append(left, c.what)
		}
		if len(left) > 0 {
			r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventExternalAbandoned, "Delete",
				"%s=true: left behind %s", AnnotationAbandonExternalState, strings.Join(left, "; "))
		}
		return ctrl.Result{}, r.release(ctx, original, cc)
	}

	var failed []externalCleanup
	var errs []error
	for _, c := range work {
		callCtx, cancel := r.callContext(ctx)
		err := c.run(callCtx)
		cancel()
		if err != nil {
			failed = append(failed, c)
			errs = append(errs, fmt.Errorf("delete %s: %w", c.what, err))
		}
	}
	if len(failed) == 0 {
		if len(work) > 0 {
			var done []string
			for _, c := range work {
				done = append(done, c.what)
			}
			r.Recorder.Eventf(cc, nil, corev1.EventTypeNormal, EventExternalDeleted, "Delete", "deleted %s", strings.Join(done, "; "))
		}
		return ctrl.Result{}, r.release(ctx, original, cc)
	}

	attempt := r.provisioned.cleanups.inc(cc.UID)
	limit := r.Provisioning.CleanupAttempts
	if limit <= 0 {
		limit = defaultCleanupAttempts
	}
	var left []string
	for _, c := range failed {
		left = append(left, c.what)
	}
	cause := errors.Join(errs...)
	if attempt >= limit {
		r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventLeftBehind, "Delete",
			"gave up after %d attempts; left behind %s: %v", attempt, strings.Join(left, "; "), cause)
		return ctrl.Result{}, r.release(ctx, original, cc)
	}
	r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventCleanupFailed, "Delete",
		"attempt %d of %d: %v", attempt, limit, cause)
	// The conditions say what is still there and how to let go.
	for i, c := range failed {
		meta.SetStatusCondition(&cc.Status.Conditions, metav1.Condition{
			Type: c.condition, Status: metav1.ConditionFalse, Reason: ReasonCleanupFailed, ObservedGeneration: cc.Generation,
			Message: fmt.Sprintf("deleting the ChatCluster: %v (attempt %d of %d; then %s is left behind; annotate %s=true to let go now)",
				errs[i], attempt, limit, c.what, AnnotationAbandonExternalState),
		})
	}
	if err := r.Status().Patch(ctx, cc, client.MergeFrom(original)); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("patch status: %w", err)
	}
	return ctrl.Result{RequeueAfter: r.cleanupBackoff(attempt)}, nil
}

func (r *ChatClusterReconciler) cleanupBackoff(attempt int) time.Duration {
	d := r.Provisioning.CleanupBackoff
	if d <= 0 {
		d = defaultCleanupBackoff
	}
	for i := 1; i < attempt && d < 10*time.Minute; i++ {
		d *= 2
	}
	return d
}

// release removes the finalizer so the ChatCluster goes.
func (r *ChatClusterReconciler) release(ctx context.Context, original, cc *v1alpha1.ChatCluster) error {
	controllerutil.RemoveFinalizer(cc, FinalizerExternalState)
	if err := r.patchFinalizers(ctx, original, cc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	r.forgetCluster(cc)
	return nil
}

func (r *ChatClusterReconciler) forgetCluster(cc *v1alpha1.ChatCluster) {
	r.provisioned.synced.forget(types.NamespacedName{Namespace: cc.Namespace, Name: cc.Name})
	r.provisioned.cleanups.forget(cc.UID)
}
