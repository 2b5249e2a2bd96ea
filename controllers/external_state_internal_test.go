package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
)

// Unit tests of status.externalState: cleanup attempts that survive an
// operator restart, and the cleanup of a section removed from the spec.

// fullPass runs the provisioning steps and the status write, as Reconcile
// does (without the children), and returns the stored cluster.
func (h *harness) fullPass(t *testing.T) (*pass, *v1alpha1.ChatCluster) {
	t.Helper()
	p, _ := h.runSteps(t)
	if err := h.r.reconcileStatus(context.Background(), p); err != nil {
		t.Fatalf("status: %v", err)
	}
	return p, h.stored(t)
}

func (h *harness) stored(t *testing.T) *v1alpha1.ChatCluster {
	t.Helper()
	cc := &v1alpha1.ChatCluster{}
	if err := h.c.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: "team"}, cc); err != nil {
		t.Fatal(err)
	}
	return cc
}

// edit changes the stored cluster's spec.
func (h *harness) edit(t *testing.T, change func(cc *v1alpha1.ChatCluster)) {
	t.Helper()
	cc := h.stored(t)
	change(cc)
	cc.Generation++
	if err := h.c.Update(context.Background(), cc); err != nil {
		t.Fatal(err)
	}
}

// restart replaces the reconciler with a new one, as an operator restart
// (or a new leader) does: nothing remembered in memory.
func (h *harness) restart() {
	h.r = &ChatClusterReconciler{Client: h.r.Client, APIReader: h.r.APIReader, Scheme: h.r.Scheme, Recorder: h.r.Recorder, Provisioning: h.r.Provisioning}
}

func eventWith(events []string, parts ...string) string {
	for _, e := range events {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(e, p)
		}
		if ok {
			return e
		}
	}
	return ""
}

func TestCleanupAttemptsSurviveAnOperatorRestart(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyRetain))...)
	h.fullPass(t) // provisioned: finalizer and record stored
	h.broker.deleteErr = &amqpprov.Error{Reason: amqpprov.ReasonUnreachable, Op: "connect to broker", Err: errors.New("connection refused")}
	cur := deleting(t, h, h.stored(t))
	ctx := context.Background()
	start := h.clock.Now()

	// Two failed attempts (of 3), then the operator restarts.
	for attempt := 1; attempt <= 2; attempt++ {
		res, err := h.r.finalize(ctx, cur)
		if err != nil {
			t.Fatal(err)
		}
		cur = h.stored(t)
		rec := cur.Status.ExternalState.Broker
		if rec == nil || rec.CleanupAttempts != int32(attempt) || rec.FirstCleanupFailure == nil || !rec.FirstCleanupFailure.Time.Equal(start) ||
			rec.LastCleanupFailure == nil || !rec.LastCleanupFailure.Time.Equal(h.clock.Now()) {
			t.Fatalf("attempt %d: status.externalState.broker = %+v", attempt, rec)
		}
		h.clock.add(res.RequeueAfter)
	}
	h.restart()
	// Within the backoff the new process waits for what is left of it.
	h.clock.add(-time.Second)
	res, err := h.r.finalize(ctx, cur)
	if err != nil || h.calls.deletes != 2 || res.RequeueAfter != time.Second {
		t.Fatalf("after a restart, within the backoff: %+v %v, %d deletes; want a wait of 1s and no call", res, err, h.calls.deletes)
	}
	h.clock.add(time.Second)
	// The third attempt is the last one, as it would have been without the restart.
	if _, err := h.r.finalize(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Get(ctx, client.ObjectKeyFromObject(cur), &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after the third attempt across a restart the cluster is still there (%v): the count was reset", err)
	}
	if h.calls.deletes != 3 {
		t.Errorf("%d deletes, want 3", h.calls.deletes)
	}
	if e := eventWith(h.events(), EventLeftBehind, "gave up after 3 attempts", "failing since "+start.Format(time.RFC3339)); e == "" {
		t.Error("no event saying the cleanup gave up after 3 attempts, failing since the first failure")
	}
}

func TestRemovingTheBrokerUnderDeleteDeletesItsTopologyThenItsCondition(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyRetain))...)
	_, cc := h.fullPass(t)
	if meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionBrokerReady) == nil || !controllerutil.ContainsFinalizer(cc, FinalizerExternalState) {
		t.Fatalf("not provisioned: %+v %v", cc.Status.Conditions, cc.Finalizers)
	}
	h.edit(t, func(cc *v1alpha1.ChatCluster) { cc.Spec.Broker = nil })
	_, cc = h.fullPass(t)
	if h.calls.deletes != 1 {
		t.Fatalf("%d deletes after removing spec.broker (deletionPolicy Delete); want 1", h.calls.deletes)
	}
	if c := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionBrokerReady); c != nil {
		t.Errorf("BrokerReady left behind: %+v", c)
	}
	if cc.Status.ExternalState.Broker != nil || controllerutil.ContainsFinalizer(cc, FinalizerExternalState) {
		t.Errorf("after the topology was deleted: record %+v, finalizers %v; want neither (the database is Retain)", cc.Status.ExternalState.Broker, cc.Finalizers)
	}
	if e := eventWith(h.events(), EventExternalDeleted, "spec.broker was removed", "parley.chat.team.pub"); e == "" {
		t.Error("no event saying the topology was deleted")
	}
	// Nothing more happens on later passes.
	h.fullPass(t)
	if h.calls.deletes != 1 {
		t.Errorf("%d deletes; the removal ran again", h.calls.deletes)
	}
	// Adding the broker back declares it again at once (not a cached check).
	declares := len(h.calls.declares)
	h.edit(t, func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq", Key: "uri"}}
	})
	_, cc = h.fullPass(t)
	if len(h.calls.declares) != declares+1 || cc.Status.ExternalState.Broker == nil || !controllerutil.ContainsFinalizer(cc, FinalizerExternalState) {
		t.Errorf("broker added back: %d declares (was %d), record %+v, finalizers %v", len(h.calls.declares), declares, cc.Status.ExternalState.Broker, cc.Finalizers)
	}
}

func TestRemovingTheBrokerUnderRetainKeepsItsTopologyAndDropsItsCondition(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain))...)
	h.fullPass(t)
	h.edit(t, func(cc *v1alpha1.ChatCluster) { cc.Spec.Broker = nil })
	_, cc := h.fullPass(t)
	if h.calls.deletes != 0 {
		t.Errorf("Retain: the topology was deleted")
	}
	if c := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionBrokerReady); c != nil {
		t.Errorf("BrokerReady left behind: %+v", c)
	}
	if c := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionDatabaseReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("DatabaseReady = %+v; the database section is still there", c)
	}
}

func TestRemovedSectionCleanupIsBoundedAndDoesNotHoldUpReady(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyRetain))...)
	h.fullPass(t)
	h.broker.deleteErr = &amqpprov.Error{Reason: amqpprov.ReasonUnreachable, Op: "connect to broker", Err: errors.New("connection refused")}
	h.edit(t, func(cc *v1alpha1.ChatCluster) { cc.Spec.Broker = nil })
	for attempt := 1; attempt <= 2; attempt++ {
		p, cc := h.fullPass(t)
		c := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionBrokerReady)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonCleanupFailed || !strings.Contains(c.Message, "spec.broker was removed") ||
			!strings.Contains(c.Message, "parley.chat.team.pub") {
			t.Fatalf("attempt %d: BrokerReady = %+v", attempt, c)
		}
		if ready := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionReady); ready != nil && ready.Reason == "BrokerNotReady" {
			t.Errorf("attempt %d: the cleanup of a removed broker holds up Ready: %+v", attempt, ready)
		}
		if rec := cc.Status.ExternalState.Broker; rec == nil || rec.CleanupAttempts != int32(attempt) || !controllerutil.ContainsFinalizer(cc, FinalizerExternalState) {
			t.Fatalf("attempt %d: record %+v, finalizers %v", attempt, rec, cc.Finalizers)
		}
		if want := time.Duration(attempt) * time.Second; p.requeueAfter != want {
			t.Errorf("attempt %d: requeue after %s, want the backoff %s", attempt, p.requeueAfter, want)
		}
		// A restart in between changes nothing.
		h.restart()
		h.fullPass(t)
		if h.calls.deletes != attempt {
			t.Fatalf("a pass within the backoff tried again (%d deletes)", h.calls.deletes)
		}
		h.clock.add(p.requeueAfter)
	}
	_, cc := h.fullPass(t)
	if h.calls.deletes != 3 {
		t.Fatalf("%d deletes, want 3", h.calls.deletes)
	}
	if c := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionBrokerReady); c != nil {
		t.Errorf("BrokerReady after giving up: %+v", c)
	}
	if cc.Status.ExternalState.Broker != nil || controllerutil.ContainsFinalizer(cc, FinalizerExternalState) {
		t.Errorf("after giving up: record %+v, finalizers %v", cc.Status.ExternalState.Broker, cc.Finalizers)
	}
	if e := eventWith(h.events(), EventLeftBehind, "spec.broker was removed", "gave up after 3 attempts", "parley.chat.team.pub"); e == "" {
		t.Error("no event naming the topology left behind")
	}
}

// The CRD refuses to remove spec.database; an older CRD (or a future one)
// might not: the same rule holds.
func TestRemovingTheDatabaseUnderDeleteDropsIt(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyDelete))...)
	var droppedWith string
	h.r.Provisioning.Database = pgprov.Funcs{
		EnsureFunc: h.r.Provisioning.Database.(pgprov.Funcs).EnsureFunc,
		DropFunc: func(_ context.Context, admin pgprov.Admin, _ pgprov.Database) error {
			droppedWith = admin.URI
			return nil
		},
	}
	h.fullPass(t)
	h.edit(t, func(cc *v1alpha1.ChatCluster) { cc.Spec.Database = nil })
	_, cc := h.fullPass(t)
	if droppedWith != "postgres://u:p@postgres:5432/postgres" {
		t.Fatalf("dropped with %q; want the recorded admin URI", droppedWith)
	}
	if c := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionDatabaseReady); c != nil {
		t.Errorf("DatabaseReady left behind: %+v", c)
	}
	if len(cc.Finalizers) != 0 || cc.Status.ExternalState.Database != nil {
		t.Errorf("finalizers %v, record %+v", cc.Finalizers, cc.Status.ExternalState.Database)
	}
}

// Switching a policy to Retain forgets the record without deleting anything,
// also while the ChatCluster is being deleted: a way to let go of one piece.
func TestRetainForgetsTheRecord(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyDelete))...)
	h.fullPass(t)
	h.db.dropErr = errors.New("connection refused")
	ctx := context.Background()
	cur := deleting(t, h, h.stored(t))
	if _, err := h.r.finalize(ctx, cur); err != nil {
		t.Fatal(err)
	}
	cur = h.stored(t)
	if cur.Status.ExternalState.Broker != nil || cur.Status.ExternalState.Database == nil {
		t.Fatalf("after one attempt: %+v; want the topology deleted and the database pending", cur.Status.ExternalState)
	}
	cur.Spec.Database.ReclaimPolicy = v1alpha1.DeletionPolicyRetain
	if err := h.c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	h.clock.add(time.Hour)
	if _, err := h.r.finalize(ctx, h.stored(t)); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Get(ctx, client.ObjectKeyFromObject(cur), &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
		t.Fatalf("still there (%v)", err)
	}
	if h.calls.drops != 1 || h.calls.deletes != 1 {
		t.Errorf("drops %d, deletes %d; want one each (the first attempt)", h.calls.drops, h.calls.deletes)
	}
}
