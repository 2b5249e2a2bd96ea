package controllers

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/status"
)

// Event reasons on a ChatCluster. Events are written only when something
// happened (a child created, updated or deleted; a failure that is new or
// changed; a pause or resume), never by a pass that changed nothing.
const (
	EventCreated         = "Created"
	EventUpdated         = "Updated"
	EventDeleted         = "Deleted"
	EventReconcileFailed = "ReconcileFailed"
	EventRecovered       = "Recovered"
	EventPaused          = "Paused"
	EventResumed         = "Resumed"
	// EventPodSecurityViolation: the pod template the spec asks for is
	// refused; the note names the failing checks.
	EventPodSecurityViolation = "PodSecurityViolation"
)

// noteLimit is the API server's limit on an event's note (events.k8s.io/v1).
const noteLimit = 1024

// note keeps an event's text within noteLimit: a longer one is refused
// whole, and the event lost.
func note(s string) string {
	if len(s) <= noteLimit {
		return s
	}
	return s[:noteLimit-3] + "..."
}

const opDeleted controllerutil.OperationResult = "deleted"

func (r *ChatClusterReconciler) childEvent(cc *v1alpha1.ChatCluster, obj client.Object, op controllerutil.OperationResult) {
	var reason, action string
	switch op {
	case controllerutil.OperationResultCreated:
		reason, action = EventCreated, "Create"
	case controllerutil.OperationResultUpdated:
		reason, action = EventUpdated, "Update"
	case opDeleted:
		reason, action = EventDeleted, "Delete"
	default:
		return
	}
	r.Recorder.Eventf(cc, obj, corev1.EventTypeNormal, reason, action, "%s %s %s", reason, kindOf(r, obj), obj.GetName())
}

// conditionEvents reports the transitions of Degraded and Paused between
// the stored status and the new one. A refused pod template (refused, when
// not nil) is reported under its own reason, naming the failing checks; the
// condition's message holds each check's field and detail.
func (r *ChatClusterReconciler) conditionEvents(cc *v1alpha1.ChatCluster, before, after []metav1.Condition, refused *resource.PodSecurityError) {
	find := func(conds []metav1.Condition, t string) *metav1.Condition {
		for i := range conds {
			if conds[i].Type == t {
				return &conds[i]
			}
		}
		return nil
	}
	was, is := find(before, v1alpha1.ConditionDegraded), find(after, v1alpha1.ConditionDegraded)
	switch {
	case is != nil && is.Status == metav1.ConditionTrue && (was == nil || was.Status != is.Status || was.Message != is.Message):
		if is.Reason == status.ReasonPodSecurityViolation && refused != nil {
			r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventPodSecurityViolation, "Reconcile", "%s", note(fmt.Sprintf(
				"the pod template breaks Pod Security (%s); the Deployment keeps its last accepted template: see the Degraded condition for each field",
				strings.Join(refused.Checks(), ", "))))
			break
		}
		r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventReconcileFailed, "Reconcile", "%s", note(is.Message))
	case is != nil && is.Status != metav1.ConditionTrue && was != nil && was.Status == metav1.ConditionTrue:
		r.Recorder.Eventf(cc, nil, corev1.EventTypeNormal, EventRecovered, "Reconcile", "the cluster is no longer degraded")
	}
	was, is = find(before, v1alpha1.ConditionDeprecated), find(after, v1alpha1.ConditionDeprecated)
	if is != nil && (was == nil || was.Message != is.Message) {
		r.Recorder.Eventf(cc, nil, corev1.EventTypeWarning, EventDeprecated, "Reconcile", "%s", is.Message)
	}
	was, is = find(before, v1alpha1.ConditionPaused), find(after, v1alpha1.ConditionPaused)
	if is != nil && (was == nil || was.Status != is.Status) {
		switch {
		case is.Status == metav1.ConditionTrue:
			r.Recorder.Eventf(cc, nil, corev1.EventTypeNormal, EventPaused, "Pause", "%s", note(is.Message))
		case was != nil:
			r.Recorder.Eventf(cc, nil, corev1.EventTypeNormal, EventResumed, "Resume", "the operator manages the cluster's children again")
		}
	}
}
