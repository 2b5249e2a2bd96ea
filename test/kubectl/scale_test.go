package kubectl

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/parley-chat/parley/internal/testenv"
)

// testScaleAndGet: `kubectl scale chatcluster` changes the chat server
// Deployment when autoscaling is off and is refused, with the CRD's message,
// when it is on; `kubectl get chat` prints Ready, Replicas, Endpoint and Age
// (and Reason and Image with -o wide). More than one replica needs a broker
// and a database: the clusters use the machine's RabbitMQ and PostgreSQL.
func testScaleAndGet(t *testing.T, e *env) {
	ns := e.namespace(t)
	ctx := context.Background()
	for name, uri := range map[string]string{"rabbitmq": testenv.AMQPURL(), "chat-db": testenv.PostgresURL()} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: map[string]string{"uri": uri}}
		if err := e.c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	e.operator(t, ns)
	// Registered after the operator, so it runs before the operator stops:
	// the finalizer deletes the clusters' RabbitMQ exchanges first.
	t.Cleanup(func() {
		if r := e.run(t, "delete", "-n", ns, "chatclusters", "--all", "--timeout=60s"); r.err != nil {
			t.Errorf("kubectl delete chatclusters --all:\n%s", r)
		}
	})
	const deps = `
  broker: {secretRef: {name: rabbitmq, key: uri}}
  database: {secretRef: {name: chat-db, key: uri}}
  auth: {allowAnonymous: true}
`
	e.apply(t, ns, `
apiVersion: chat.parley.io/v1alpha1
kind: ChatCluster
metadata:
  name: scaled
spec:
  replicas: 2`+deps)
	e.deployment(t, ns, "scaled", "a Deployment of 2 replicas", replicas(2))
	e.rollOut(t, ns, "scaled")
	e.must(t, "wait", "-n", ns, "--for=condition=Ready", "--timeout=60s", "chatcluster/scaled")
	// Ready includes the dependencies: the exchanges exist, the database answers.
	for _, c := range []string{"BrokerReady", "DatabaseReady"} {
		if got := e.must(t, "get", "-n", ns, "chatcluster/scaled", "-o", `jsonpath={.status.conditions[?(@.type=="`+c+`")].status}`); got != "True" {
			t.Errorf("%s = %q while Ready", c, got)
		}
	}

	// Autoscaling off: kubectl scale goes through the scale subresource to
	// spec.replicas, and the operator scales the Deployment.
	out := e.must(t, "scale", "-n", ns, "chatcluster/scaled", "--replicas=4")
	if !strings.Contains(out, "chatcluster.chat.parley.io/scaled scaled") {
		t.Errorf("kubectl scale printed %q", out)
	}
	if got := e.must(t, "get", "-n", ns, "chatcluster/scaled", "-o", "jsonpath={.spec.replicas}"); got != "4" {
		t.Errorf("spec.replicas = %q after kubectl scale --replicas=4", got)
	}
	e.deployment(t, ns, "scaled", "the Deployment scaled to 4", replicas(4))
	e.rollOut(t, ns, "scaled")
	e.must(t, "wait", "-n", ns, "--for=condition=Ready", "--timeout=60s", "chatcluster/scaled")
	// The scale subresource reads back what kubectl wrote.
	if got := e.must(t, "get", "-n", ns, "chatcluster/scaled", "--subresource=scale", "-o", "jsonpath={.spec.replicas}/{.status.replicas}"); got != "4/4" {
		t.Errorf("scale subresource spec/status replicas = %q, want 4/4", got)
	}

	// Autoscaling on: the HorizontalPodAutoscaler owns the count.
	e.apply(t, ns, `
apiVersion: chat.parley.io/v1alpha1
kind: ChatCluster
metadata:
  name: autoscaled
spec:
  autoscaling: {minReplicas: 2, maxReplicas: 6}`+deps)
	e.deployment(t, ns, "autoscaled", "a Deployment at minReplicas", replicas(2))
	before := e.cluster(t, ns, "autoscaled")
	r := e.run(t, "scale", "-n", ns, "chatcluster/autoscaled", "--replicas=3")
	const refusal = "spec.replicas cannot change while spec.autoscaling is set: the HorizontalPodAutoscaler owns the replica count (remove spec.autoscaling to scale by hand)"
	if r.err == nil || !strings.Contains(r.stderr, refusal) {
		t.Errorf("kubectl scale of an autoscaled cluster: want it refused with %q\n%s", refusal, r)
	}
	if after := e.cluster(t, ns, "autoscaled"); after.Generation != before.Generation || *after.Spec.Replicas != *before.Spec.Replicas {
		t.Errorf("the refused scale changed the cluster: generation %d→%d, replicas %d→%d",
			before.Generation, after.Generation, *before.Spec.Replicas, *after.Spec.Replicas)
	}
	e.rollOut(t, ns, "autoscaled")
	e.must(t, "wait", "-n", ns, "--for=condition=Ready", "--timeout=60s", "chatcluster/autoscaled")

	checkGet(t, e, ns)
}

func replicas(n int32) func(*appsv1.Deployment) error {
	return func(d *appsv1.Deployment) error {
		if d.Spec.Replicas == nil || *d.Spec.Replicas != n {
			return fmt.Errorf("replicas %v, want %d", d.Spec.Replicas, n)
		}
		return nil
	}
}

// checkGet reads `kubectl get chat` (the short name) as a user does: the
// columns and what they show for both clusters, which must be the status.
func checkGet(t *testing.T, e *env, ns string) {
	t.Helper()
	// The status (replicas, endpoint) is written by the operator after the
	// Ready condition: poll until both rows show the rolled-out clusters.
	var table [][]string
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, patience, true, func(context.Context) (bool, error) {
		last = e.must(t, "get", "chat", "-n", ns)
		table = fields(last)
		return cell(table, "scaled", 2) == "4" && cell(table, "autoscaled", 2) == "2", nil
	})
	if err != nil {
		t.Fatalf("kubectl get chat never showed scaled with 4 replicas and autoscaled with 2:\n%s", last)
	}
	if got, want := strings.Join(table[0], " "), "NAME READY REPLICAS ENDPOINT AGE"; got != want {
		t.Errorf("kubectl get chat columns %q, want %q\n%s", got, want, last)
	}
	age := regexp.MustCompile(`^[0-9]+(s|m[0-9]*s?)$`)
	for _, name := range []string{"scaled", "autoscaled"} {
		row := rowOf(table, name)
		cc := e.cluster(t, ns, name)
		if cc.Status.Endpoint == "" || !strings.Contains(cc.Status.Endpoint, name+"."+ns+".svc.cluster.local") {
			t.Errorf("%s: status.endpoint %q does not name the cluster's Service", name, cc.Status.Endpoint)
		}
		want := []string{name, "True", fmt.Sprint(cc.Status.Replicas), cc.Status.Endpoint}
		if len(row) != 5 || strings.Join(row[:4], " ") != strings.Join(want, " ") || !age.MatchString(row[4]) {
			t.Errorf("kubectl get chat row %q, want %q and an age\n%s", row, want, last)
		}
	}

	wide := e.must(t, "get", "chat", "-n", ns, "-o", "wide")
	wt := fields(wide)
	if got, want := strings.Join(wt[0], " "), "NAME READY REPLICAS ENDPOINT AGE REASON IMAGE AVAILABLE IMAGE"; got != want {
		t.Errorf("kubectl get chat -o wide columns %q, want %q\n%s", got, want, wide)
	}
	if row := rowOf(wt, "scaled"); len(row) != 7 || row[5] != "Ready" || row[6] != testImage {
		t.Errorf("kubectl get chat -o wide row %q: want reason Ready and image %s\n%s", row, testImage, wide)
	}
}

// fields splits kubectl's table into rows of whitespace-separated cells (no
// cell of these tables contains a space).
func fields(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func rowOf(table [][]string, name string) []string {
	for _, r := range table[1:] {
		if len(r) > 0 && r[0] == name {
			return r
		}
	}
	return nil
}

// cell is column i of the row of name, "" when there is none.
func cell(table [][]string, name string, i int) string {
	if r := rowOf(table, name); len(r) > i {
		return r[i]
	}
	return ""
}
