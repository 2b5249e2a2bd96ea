package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/backends"
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

// piece is one kind of external state a ChatCluster may own: its spec
// section, the condition reporting it, and its record in
// status.externalState.
type piece struct {
	section   string // "broker", "database": spec.<section>
	condition string
	step      string // its provisioning step (sync cache key)
}

var pieces = []piece{
	{section: "broker", condition: v1alpha1.ConditionBrokerReady, step: stepBroker},
	{section: "database", condition: v1alpha1.ConditionDatabaseReady, step: stepDatabase},
}

// record is the piece's entry in es.
func (pc piece) record(es *v1alpha1.ExternalState) **v1alpha1.ExternalStateRecord {
	if pc.section == "broker" {
		return &es.Broker
	}
	return &es.Database
}

// inSpec reports whether cc's spec has the piece's section and, when its
// policy is Delete, where the operator deletes the state from: the
// ChatBackend it was created in (status.backends, once resolved), or the
// Secret key of the deprecated spec fields.
func (pc piece) inSpec(cc *v1alpha1.ChatCluster) (present bool, deleteWith *v1alpha1.ExternalStateRecord) {
	switch pc.section {
	case "broker":
		b := cc.Spec.Broker
		switch {
		case b == nil:
			return false, nil
		case b.DeletionPolicy == v1alpha1.DeletionPolicyRetain:
			return true, nil
		case b.SecretRef != nil:
			return true, &v1alpha1.ExternalStateRecord{SecretRef: b.SecretRef}
		case cc.Status.Backends.Broker != "":
			return true, &v1alpha1.ExternalStateRecord{Backend: cc.Status.Backends.Broker}
		}
		return true, nil
	default:
		d := cc.Spec.Database
		switch {
		case d == nil:
			return false, nil
		case d.ReclaimPolicy != v1alpha1.DeletionPolicyDelete || d.SecretRef != nil:
			return true, nil
		case d.AdminSecretRef != nil:
			return true, &v1alpha1.ExternalStateRecord{SecretRef: d.AdminSecretRef}
		case cc.Status.Backends.Database != "":
			return true, &v1alpha1.ExternalStateRecord{Backend: cc.Status.Backends.Database}
		}
		return true, nil
	}
}

// what names the piece's external state, for events and conditions.
func (pc piece) what(cc *v1alpha1.ChatCluster) string {
	if pc.section == "broker" {
		// A tenant of a backend (in the spec, or recorded for a removed spec.broker).
		rec := cc.Status.ExternalState.Broker
		if usesBrokerBackend(cc) || (cc.Spec.Broker == nil && rec != nil && rec.Backend != "") {
			t := brokerTenant(cc)
			return fmt.Sprintf("RabbitMQ vhost %q (with its exchanges and queues) and user %q", t.VHost, t.User)
		}
		return "RabbitMQ " + strings.Join(amqpprov.TopologyFor(cc.Namespace, cc.Name).Objects(), ", ")
	}
	names := pgprov.DatabaseFor(cc.Namespace, cc.Name)
	return fmt.Sprintf("PostgreSQL database %q and role %q", names.Name, names.Role)
}

// deleteState deletes the piece's external state where rec says it lives.
func (r *ChatClusterReconciler) deleteState(ctx context.Context, cc *v1alpha1.ChatCluster, pc piece, rec *v1alpha1.ExternalStateRecord) error {
	if rec.Backend != "" {
		b, err := r.backendByName(ctx, rec.Backend)
		if err != nil {
			return err
		}
		res := backends.Resolver{Reader: r.APIReader, ClusterDomain: r.Options.ClusterDomain}
		if pc.section == "broker" {
			conn, err := res.RabbitMQ(ctx, b)
			if err != nil {
				return fmt.Errorf("ChatBackend %q: %w", b.Name, err)
			}
			return r.gated(ctx, backendKey(b.Name, v1alpha1.BackendTypeRabbitMQ), digest(conn.URI, conn.ManagementURI), func(ctx context.Context) error {
				return r.tenants().DeleteTenant(ctx, amqpprov.Backend{URI: conn.URI, ManagementURI: conn.ManagementURI, CAPEM: conn.CAPEM}, brokerTenant(cc))
			})
		}
		conn, err := res.PostgreSQL(ctx, b)
		if err != nil {
			return fmt.Errorf("ChatBackend %q: %w", b.Name, err)
		}
		return r.gated(ctx, backendKey(b.Name, v1alpha1.BackendTypePostgreSQL), digest(conn.URI), func(ctx context.Context) error {
			return r.database().Drop(ctx, pgprov.Admin{URI: conn.URI, CAPEM: conn.CAPEM}, pgprov.DatabaseFor(cc.Namespace, cc.Name))
		})
	}
	if rec.SecretRef == nil {
		return fmt.Errorf("status.externalState.%s names neither a backend nor a Secret", pc.section)
	}
	ref := *rec.SecretRef
	uri, err := r.secretValue(ctx, cc.Namespace, ref)
	if pc.section == "broker" {
		if err != nil {
			return fmt.Errorf("broker URI (Secret %s, key %q): %w", ref.Name, ref.Key, err)
		}
		key := uriKey(v1alpha1.BackendTypeRabbitMQ, uri)
		return r.gated(ctx, key, key, func(ctx context.Context) error {
			return r.broker().Delete(ctx, uri, amqpprov.TopologyFor(cc.Namespace, cc.Name))
		})
	}
	if err != nil {
		return fmt.Errorf("admin URI (Secret %s, key %q): %w", ref.Name, ref.Key, err)
	}
	key := uriKey(v1alpha1.BackendTypePostgreSQL, uri)
	return r.gated(ctx, key, key, func(ctx context.Context) error {
		return r.database().Drop(ctx, pgprov.Admin{URI: uri}, pgprov.DatabaseFor(cc.Namespace, cc.Name))
	})
}

// externalRecords returns what status.externalState should hold before any
// cleanup runs: a record for each piece the spec provisions under a Delete
// policy (the spec's Secret wins: a user may fix it), the records of removed
// sections kept until their state is deleted, and none for a piece whose
// policy is now Retain (the user chose to keep it).
//
// A live cluster resets the cleanup attempts of a piece its spec wants
// again. For a deleted one the records are the work list: a piece deleted by
// an earlier attempt is not added back from the spec, and attempts keep
// counting. Only a deleted cluster with no records at all (provisioned by an
// operator that did not keep them) takes its work list from the spec.
func externalRecords(cc *v1alpha1.ChatCluster, deleting bool) v1alpha1.ExternalState {
	es := *cc.Status.ExternalState.DeepCopy()
	fromSpec := !deleting || (es.Broker == nil && es.Database == nil)
	for _, pc := range pieces {
		rec := pc.record(&es)
		switch present, ref := pc.inSpec(cc); {
		case ref != nil && (*rec == nil || !deleting):
			if fromSpec {
				*rec = ref
			}
		case ref != nil:
			(*rec).SecretRef, (*rec).Backend = ref.SecretRef, ref.Backend
		case present:
			*rec = nil
		}
	}
	return es
}

// cleanupRetryFor is how long after its first failure a cleanup is retried.
func (r *ChatClusterReconciler) cleanupRetryFor() time.Duration {
	if d := r.Provisioning.CleanupRetryFor; d > 0 {
		return min(d, MaxCleanupRetryFor)
	}
	return DefaultCleanupRetryFor
}

// cleanupWait is how long until rec's next cleanup attempt is due (0: now):
// the backoff after its last failure, which status keeps across restarts.
func (r *ChatClusterReconciler) cleanupWait(rec *v1alpha1.ExternalStateRecord, now time.Time) time.Duration {
	if rec.CleanupAttempts == 0 || rec.LastCleanupFailure == nil {
		return 0
	}
	backoff := r.cleanupBackoff(int(rec.CleanupAttempts))
	wait := rec.LastCleanupFailure.Add(backoff).Sub(now)
	return max(0, min(wait, backoff)) // a clock behind the last writer's waits no longer than the backoff
}

// failed records a failed attempt of piece pc in rec and reports until when
// the cleanup is retried and whether the policy's time is up.
func (r *ChatClusterReconciler) failed(pc piece, rec *v1alpha1.ExternalStateRecord, now time.Time) (attempt int32, until time.Time, last bool) {
	t := metav1.NewTime(now)
	rec.CleanupAttempts++
	if rec.FirstCleanupFailure == nil {
		rec.FirstCleanupFailure = &t
	}
	rec.LastCleanupFailure = &t
	cleanupFailures.WithLabelValues(pc.section).Inc()
	until = rec.FirstCleanupFailure.Add(r.cleanupRetryFor())
	last = !now.Before(until)
	if last {
		leftBehind.WithLabelValues(pc.section, "gave_up").Inc()
	}
	return rec.CleanupAttempts, until, last
}

// retryNote says how a failing cleanup goes on, for events and conditions.
func (r *ChatClusterReconciler) retryNote(attempt int32, until time.Time, now time.Time, rec *v1alpha1.ExternalStateRecord) string {
	next := now.Add(r.cleanupBackoff(int(attempt)))
	if next.After(until) {
		next = until
	}
	return fmt.Sprintf("attempt %d%s; next attempt at %s; retrying until %s (--cleanup-retry-for=%s)",
		attempt, since(rec), next.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339), r.cleanupRetryFor())
}

func since(rec *v1alpha1.ExternalStateRecord) string {
	if rec.FirstCleanupFailure == nil {
		return ""
	}
	return ", failing since " + rec.FirstCleanupFailure.UTC().Format(time.RFC3339)
}

// reconcileExternalState runs first among the provisioning steps. It keeps
// status.externalState and the finalizer in step with the spec, both stored
// before the steps after it create any external state that will need
// deleting, and removed when nothing is left to delete (every policy
// Retain). When a section with a Delete policy is removed from the spec
// (spec.broker; spec.database only where validation allows it), its external
// state is deleted with the Secret recorded for it, with the same bounded
// retries as a deletion; then its condition goes. A section removed under
// Retain just loses its condition: the state stays.
func (r *ChatClusterReconciler) reconcileExternalState(ctx context.Context, p *pass) error {
	es := externalRecords(p.cc, false)
	now := r.now()
	for _, pc := range pieces {
		if present, _ := pc.inSpec(p.cc); present {
			continue
		}
		// Adding the section again must declare afresh, not trust a check
		// made before its state was deleted.
		r.provisioned.synced.drop(p.cc, pc.step)
		if rec := pc.record(&es); *rec != nil {
			r.cleanupRemoved(ctx, p, pc, rec, now)
		}
	}
	if !equality.Semantic.DeepEqual(es, p.cc.Status.ExternalState) {
		p.cc.Status.ExternalState = es
		if err := r.Status().Patch(ctx, p.cc, client.MergeFromWithOptions(p.original, client.MergeFromWithOptimisticLock{})); err != nil {
			return staleOr(fmt.Errorf("record status.externalState: %w", err))
		}
		// The status patch that ends this pass is based on p.original: move
		// it to the version just written.
		p.original = p.cc.DeepCopy()
	}

	want := es.Broker != nil || es.Database != nil
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
	p.original.ObjectMeta = *p.cc.ObjectMeta.DeepCopy()
	return nil
}

// cleanupRemoved deletes the external state of a section removed from the
// spec under a Delete policy, when its next attempt is due. *rec becomes nil
// once the state is deleted or the attempts have run out.
func (r *ChatClusterReconciler) cleanupRemoved(ctx context.Context, p *pass, pc piece, rec **v1alpha1.ExternalStateRecord, now time.Time) {
	if wait := r.cleanupWait(*rec, now); wait > 0 {
		p.requeue(wait)
		return
	}
	what := pc.what(p.cc)
	err := r.deleteState(ctx, p.cc, pc, *rec)
	if w, skipped := notTried(err, now); skipped {
		p.requeue(w)
		return
	}
	if err == nil {
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventExternalDeleted, "Delete",
			"spec.%s was removed: deleted %s", pc.section, what)
		*rec = nil
		return
	}
	attempt, until, last := r.failed(pc, *rec, now)
	if last {
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeWarning, EventLeftBehind, "Delete",
			"spec.%s was removed: gave up after %d attempts%s (--cleanup-retry-for=%s); left behind %s: %v",
			pc.section, attempt, since(*rec), r.cleanupRetryFor(), what, err)
		*rec = nil
		return
	}
	note := r.retryNote(attempt, until, now, *rec)
	r.Recorder.Eventf(p.cc, nil, corev1.EventTypeWarning, EventCleanupFailed, "Delete",
		"spec.%s was removed: deleting %s failed (%s): %v", pc.section, what, note, err)
	p.setCondition(metav1.Condition{
		Type: pc.condition, Status: metav1.ConditionFalse, Reason: ReasonCleanupFailed,
		Message: fmt.Sprintf("spec.%s was removed (deletion policy Delete): deleting %s failed: %v (%s; then it is left behind)",
			pc.section, what, err, note),
	})
	p.requeue(r.cleanupBackoff(int(attempt)))
}

// staleConditions lists the conditions of pieces cc no longer has: its
// section is gone and nothing is left to delete.
func staleConditions(cc *v1alpha1.ChatCluster) []string {
	var out []string
	for _, pc := range pieces {
		if present, _ := pc.inSpec(cc); !present && *pc.record(&cc.Status.ExternalState) == nil {
			out = append(out, pc.condition)
		}
	}
	return out
}

// inSpecCondition reports whether a condition reports a section the spec has
// (the others, left from a removed section, do not hold up Ready).
func inSpecCondition(cc *v1alpha1.ChatCluster, typ string) bool {
	for _, pc := range pieces {
		if pc.condition == typ {
			present, _ := pc.inSpec(cc)
			return present
		}
	}
	return false
}

// patchFinalizers writes cc's finalizers, failing if cc changed since base was read.
func (r *ChatClusterReconciler) patchFinalizers(ctx context.Context, base, cc *v1alpha1.ChatCluster) error {
	if err := r.Patch(ctx, cc, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return staleOr(fmt.Errorf("update finalizers: %w", err))
	}
	return nil
}

// staleOr turns a lost optimistic-lock race into errStale: the pass worked
// from an older ChatCluster and runs again on the newer one.
func staleOr(err error) error {
	if apierrors.IsConflict(err) {
		return fmt.Errorf("%w: %v", errStale, err)
	}
	return err
}

// finalize deletes the external state of a ChatCluster being deleted, then
// releases it. Each piece (topology, database) is retried with capped backoff
// until it is deleted or Provisioning.CleanupRetryFor has passed since its
// first failure (hours: a broker's rolling restart or a database failover
// must not leave state behind); then a warning event names what was left
// behind, so a broker or database gone for good never blocks the deletion
// forever. The attempts and the time of the
// last failure are kept in status.externalState, so an operator restart
// neither resets the count nor cuts a backoff short. The annotation
// chat.parley.io/abandon-external-state=true lets go at once.
func (r *ChatClusterReconciler) finalize(ctx context.Context, cc *v1alpha1.ChatCluster) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(cc, FinalizerExternalState) {
		r.forgetCluster(cc)
		return ctrl.Result{}, nil
	}
	original := cc.DeepCopy()
	es := externalRecords(cc, true)
	if cc.Annotations[AnnotationAbandonExternalState] == "true" {
		var left []string
		for _, pc := range pieces {
			if *pc.record(&es) != nil {
				left = append(left, pc.what(cc))
			}
		}
		for _, pc := range pieces {
			if *pc.record(&es) != nil {
				leftBehind.WithLabelValues(pc.section, "abandoned").Inc()
			}
		}
		if len(left) > 0 {
			r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventExternalAbandoned, "Delete",
				"%s=true: left behind %s", AnnotationAbandonExternalState, strings.Join(left, "; "))
		}
		return r.release(ctx, original, cc)
	}

	now := r.now()
	var deleted []string
	var wait time.Duration
	for _, pc := range pieces {
		rec := pc.record(&es)
		if *rec == nil {
			continue
		}
		if w := r.cleanupWait(*rec, now); w > 0 {
			wait = soonest(wait, w)
			continue
		}
		what := pc.what(cc)
		err := r.deleteState(ctx, cc, pc, *rec)
		if w, skipped := notTried(err, now); skipped {
			// The backend is busy or backing off: not an attempt of this cluster's.
			wait = soonest(wait, w)
			continue
		}
		if err == nil {
			deleted = append(deleted, what)
			*rec = nil
			continue
		}
		err = fmt.Errorf("delete %s: %w", what, err)
		attempt, until, last := r.failed(pc, *rec, now)
		if last {
			r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventLeftBehind, "Delete",
				"gave up after %d attempts%s (--cleanup-retry-for=%s); left behind %s: %v", attempt, since(*rec), r.cleanupRetryFor(), what, err)
			*rec = nil
			continue
		}
		note := r.retryNote(attempt, until, now, *rec)
		r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventCleanupFailed, "Delete", "%v (%s)", err, note)
		// The condition says what is still there, until when it is retried and how to let go.
		meta.SetStatusCondition(&cc.Status.Conditions, metav1.Condition{
			Type: pc.condition, Status: metav1.ConditionFalse, Reason: ReasonCleanupFailed, ObservedGeneration: cc.Generation,
			Message: fmt.Sprintf("deleting the ChatCluster: %v (%s; then %s is left behind; annotate %s=true to let go now)",
				err, note, what, AnnotationAbandonExternalState),
		})
		wait = soonest(wait, r.cleanupBackoff(int(attempt)))
	}
	if len(deleted) > 0 {
		r.Recorder.Eventf(cc, nil, corev1.EventTypeNormal, EventExternalDeleted, "Delete", "deleted %s", strings.Join(deleted, "; "))
	}
	if es.Broker == nil && es.Database == nil {
		return r.release(ctx, original, cc)
	}
	cc.Status.ExternalState = es
	if err := r.Status().Patch(ctx, cc, client.MergeFromWithOptions(original, client.MergeFromWithOptimisticLock{})); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return ctrl.Result{}, nil
		case apierrors.IsConflict(err):
			// Read from a stale cache: the attempt is not counted, the next pass counts on.
			return ctrl.Result{RequeueAfter: staleRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patch status: %w", err)
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// notTried reports whether err says the gate did not make the call, and
// how long until it may.
func notTried(err error, now time.Time) (time.Duration, bool) {
	var busy *errBackendBusy
	if errors.As(err, &busy) {
		return busy.wait, true
	}
	var down *errBackendDown
	if errors.As(err, &down) && !down.attempted {
		return max(down.wait(now), staleRetry), true
	}
	return 0, false
}

// soonest is the shorter of two waits, 0 counting as none.
func soonest(a, b time.Duration) time.Duration {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// cleanupBackoff is the wait after the attempt-th failed cleanup attempt:
// CleanupBackoff doubled per attempt, capped at CleanupMaxBackoff.
func (r *ChatClusterReconciler) cleanupBackoff(attempt int) time.Duration {
	d := r.Provisioning.CleanupBackoff
	if d <= 0 {
		d = DefaultCleanupBackoff
	}
	limit := r.Provisioning.CleanupMaxBackoff
	if limit <= 0 {
		limit = max(DefaultCleanupMaxBackoff, d)
	}
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// release removes the finalizer so the ChatCluster goes.
func (r *ChatClusterReconciler) release(ctx context.Context, original, cc *v1alpha1.ChatCluster) (ctrl.Result, error) {
	controllerutil.RemoveFinalizer(cc, FinalizerExternalState)
	if err := r.patchFinalizers(ctx, original, cc); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return ctrl.Result{}, nil
		case errors.Is(err, errStale):
			return ctrl.Result{RequeueAfter: staleRetry}, nil
		}
		return ctrl.Result{}, err
	}
	r.forgetCluster(cc)
	return ctrl.Result{}, nil
}

func (r *ChatClusterReconciler) forgetCluster(cc *v1alpha1.ChatCluster) {
	key := types.NamespacedName{Namespace: cc.Namespace, Name: cc.Name}
	r.provisioned.synced.forget(key)
	r.provisioned.conflicts.forget(key)
}
