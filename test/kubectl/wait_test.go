package kubectl

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// shortWait is the --timeout of the waits that must not succeed: long
// enough for kubectl to read and watch the object a few times.
const shortWait = "3s"

// testWait: `kubectl wait --for=condition=Ready` returns once the chat
// servers are ready, and after a spec change it does not take the previous
// generation's Ready for the new one: not while the operator has not seen the
// change yet (its manager stopped, Ready=True describing the old generation),
// nor while the new generation rolls out.
func testWait(t *testing.T, e *env) {
	ns := e.namespace(t)
	stop := e.operator(t, ns)
	e.apply(t, ns, `
apiVersion: chat.parley.io/v1alpha1
kind: ChatCluster
metadata:
  name: waited
spec:
  auth: {allowAnonymous: true}
`)
	waitArgs := func(timeout string) []string {
		return []string{"wait", "-n", ns, "--for=condition=Ready", "--timeout=" + timeout, "chatcluster/waited"}
	}

	// 1. A user's wait started before the pods are ready blocks until they are.
	e.deployment(t, ns, "waited", "the Deployment", func(*appsv1.Deployment) error { return nil })
	w := e.start(t, waitArgs("60s")...)
	time.Sleep(time.Second) // kubectl has read and is watching the cluster
	if !w.running() {
		t.Fatalf("kubectl wait returned before any replica was ready:\n%s", w.result)
	}
	e.rollOut(t, ns, "waited")
	r := w.wait(t, time.Minute)
	if r.err != nil || !strings.Contains(r.stdout, "chatcluster.chat.parley.io/waited condition met") {
		t.Fatalf("kubectl wait after the roll-out:\n%s", r)
	}
	ready := e.ready(t, ns, "waited", metav1.ConditionTrue)
	oldGen := ready.ObservedGeneration

	// 2. The operator is down when the spec changes: Ready=True still
	// describes the old generation, and kubectl wait must not take it.
	stop()
	e.must(t, "patch", "-n", ns, "chatcluster/waited", "--type=merge", "-p", `{"spec":{"limits":{"maxMessageBytes":4096}}}`)
	cc := e.cluster(t, ns, "waited")
	stale := meta.FindStatusCondition(cc.Status.Conditions, v1alpha1.ConditionReady)
	if cc.Generation != oldGen+1 || stale == nil || stale.Status != metav1.ConditionTrue || stale.ObservedGeneration != oldGen {
		t.Fatalf("want generation %d with Ready=True for generation %d left from before, got generation %d, Ready %+v",
			oldGen+1, oldGen, cc.Generation, stale)
	}
	if r := e.run(t, waitArgs(shortWait)...); !timedOut(r) {
		t.Fatalf("kubectl wait while Ready=True describes generation %d of %d: want a timeout\n%s", oldGen, cc.Generation, r)
	}

	// 3. The operator is back and has seen the change: the Deployment rolls
	// the new configuration, Ready=False for the new generation.
	e.operator(t, ns)
	notReady := e.ready(t, ns, "waited", metav1.ConditionFalse)
	if notReady.ObservedGeneration != oldGen+1 {
		t.Fatalf("Ready=False describes generation %d, want %d", notReady.ObservedGeneration, oldGen+1)
	}
	if r := e.run(t, waitArgs(shortWait)...); !timedOut(r) {
		t.Fatalf("kubectl wait while generation %d rolls out (%s: %s): want a timeout\n%s", oldGen+1, notReady.Reason, notReady.Message, r)
	}

	// 4. Once the new pods are ready, the same wait succeeds.
	w = e.start(t, waitArgs("60s")...)
	e.rollOut(t, ns, "waited")
	if r := w.wait(t, time.Minute); r.err != nil || !strings.Contains(r.stdout, "condition met") {
		t.Fatalf("kubectl wait after the new generation rolled out:\n%s", r)
	}
	if c := e.ready(t, ns, "waited", metav1.ConditionTrue); c.ObservedGeneration != oldGen+1 {
		t.Fatalf("Ready=True describes generation %d, want %d", c.ObservedGeneration, oldGen+1)
	}
	e.must(t, "delete", "-n", ns, "chatcluster/waited", "--timeout=30s")
}
