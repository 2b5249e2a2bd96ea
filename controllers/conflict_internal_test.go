package controllers

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// TestTransientChildConflictIsNotDegraded: another writer (kubectl, an
// admission webhook, the HPA) updates the Deployment between the operator's
// read and its write. One such conflict used to make the cluster
// Degraded=True; now the write is retried on a fresh read, a conflict that
// comes back is retried soon without Degraded, and only one that persists
// for childConflictGrace makes the cluster Degraded.
func TestTransientChildConflictIsNotDegraded(t *testing.T) {
	cc := &v1alpha1.ChatCluster{ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: testNS, UID: "uid-1", Generation: 1}}
	var conflicts atomic.Int32
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(cc).
		WithStatusSubresource(&v1alpha1.ChatCluster{}).
		WithInterceptorFuncs(interceptor.Funcs{
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				if _, ok := obj.(*appsv1.Deployment); ok && conflicts.Load() > 0 {
					conflicts.Add(-1)
					return apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, obj.GetName(),
						errString("the object has been modified; please apply your changes to the latest version and try again"))
				}
				return c.Update(ctx, obj, opts...)
			},
		}).Build()
	clock := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := &ChatClusterReconciler{
		Client: c, APIReader: c, Scheme: c.Scheme(), Recorder: events.NewFakeRecorder(1000),
		Options:      Options{DefaultImage: "example.org/parley:test", ClusterDomain: "cluster.local"},
		Provisioning: Provisioning{Now: clock.Now},
		optional:     newOptionalKinds(nil, 0),
	}
	ctx := context.Background()
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cc)}
	reconcile := func(what string) (ctrl.Result, error, *metav1.Condition) {
		t.Helper()
		res, err := r.Reconcile(ctx, req)
		got := &v1alpha1.ChatCluster{}
		if err := c.Get(ctx, req.NamespacedName, got); err != nil {
			t.Fatal(err)
		}
		return res, err, meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionDegraded)
	}
	if _, err, _ := reconcile("create"); err != nil {
		t.Fatalf("first pass: %v", err)
	}
	scale := func(n int32) {
		got := &v1alpha1.ChatCluster{}
		if err := c.Get(ctx, req.NamespacedName, got); err != nil {
			t.Fatal(err)
		}
		got.Spec.Replicas = &n
		got.Generation++
		if err := c.Update(ctx, got); err != nil {
			t.Fatal(err)
		}
	}

	// One conflict: the write is retried on a fresh read and goes through.
	scale(3)
	conflicts.Store(1)
	_, err, degraded := reconcile("one conflict")
	if err != nil || degraded == nil || degraded.Status != metav1.ConditionFalse {
		t.Fatalf("after one conflict: err %v, Degraded %+v; want no error, not Degraded", err, degraded)
	}
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, req.NamespacedName, d); err != nil || *d.Spec.Replicas != 3 {
		t.Fatalf("Deployment replicas after the retried write: %v (%v)", d.Spec.Replicas, err)
	}

	// Conflicts that keep coming: retried soon, not Degraded within the grace...
	scale(4)
	conflicts.Store(1 << 20)
	res, err, degraded := reconcile("conflicts")
	if err != nil || degraded == nil || degraded.Status != metav1.ConditionFalse || res.RequeueAfter <= 0 || res.RequeueAfter > 5*time.Second {
		t.Fatalf("a new conflict: %+v, err %v, Degraded %+v; want a retry within seconds, not Degraded", res, err, degraded)
	}
	clock.add(childConflictGrace / 2)
	if _, _, degraded = reconcile("conflicts"); degraded.Status != metav1.ConditionFalse {
		t.Fatalf("conflicting for half the grace: Degraded %+v", degraded)
	}
	// ...and Degraded once they persist past it.
	clock.add(childConflictGrace)
	_, err, degraded = reconcile("persisting conflicts")
	if err == nil || degraded.Status != metav1.ConditionTrue || !strings.Contains(degraded.Message, "Deployment team") ||
		!strings.Contains(degraded.Message, "conflict") {
		t.Fatalf("conflicting past the grace: err %v, Degraded %+v; want Degraded naming the Deployment and the conflict", err, degraded)
	}
	// The writes go through again: Degraded goes.
	conflicts.Store(0)
	if _, err, degraded = reconcile("recovered"); err != nil || degraded.Status != metav1.ConditionFalse {
		t.Fatalf("after the conflicts end: err %v, Degraded %+v", err, degraded)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
