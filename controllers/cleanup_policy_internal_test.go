package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/parley-chat/parley/api/v1alpha1"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
)

// TestCleanupKeepsRetryingForThePolicyPeriod: a broker that refuses the
// deletion for hours while its ChatCluster is deleted. The operator used to let go after
// 5 attempts (about two minutes); now it retries with a capped backoff until
// --cleanup-retry-for has passed since the first failure, says so in the
// condition, and counts it in metrics.
func TestCleanupKeepsRetryingForThePolicyPeriod(t *testing.T) {
	cc := teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyRetain)
	cc.Finalizers = []string{FinalizerExternalState}
	h := newHarness(t, append(adminSecrets(), cc)...)
	h.r.Provisioning.CleanupRetryFor = 6 * time.Hour
	h.r.Provisioning.CleanupBackoff = time.Second
	h.r.Provisioning.CleanupMaxBackoff = time.Minute
	// Refused rather than unreachable: the per-backend backoff (gate.go) is
	// not what this test is about.
	h.broker.deleteErr = &amqpprov.Error{Reason: amqpprov.ReasonAccessRefused, Op: "delete exchange", Err: errors.New("403 ACCESS_REFUSED")}
	failuresBefore := testutil.ToFloat64(cleanupFailures.WithLabelValues("broker"))
	gaveUpBefore := testutil.ToFloat64(leftBehind.WithLabelValues("broker", "gave_up"))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&clusterCollector{reader: h.c})

	cur := deleting(t, h, cc)
	ctx := context.Background()
	start := h.clock.Now()
	var longest time.Duration
	var events []string
	for i := 0; ; i++ {
		res, err := h.r.finalize(ctx, cur)
		events = append(events, h.events()...) // the fake recorder blocks when full
		if err != nil {
			t.Fatal(err)
		}
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(cc), cur); apierrors.IsNotFound(err) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if i > 1000 || res.RequeueAfter <= 0 {
			t.Fatalf("pass %d: %+v; want a wait for the next attempt", i, res)
		}
		if h.clock.Now().Sub(start) >= 6*time.Hour+time.Minute {
			t.Fatalf("still retrying %s after the first failure, past --cleanup-retry-for", h.clock.Now().Sub(start))
		}
		if i == 10 {
			c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionBrokerReady)
			if c == nil || !strings.Contains(c.Message, "retrying until 2030-01-01T06:00:00Z") || !strings.Contains(c.Message, "attempt 11") ||
				!strings.Contains(c.Message, AnnotationAbandonExternalState) {
				t.Errorf("condition while retrying: %+v; want the attempt, until when, and how to let go", c)
			}
			if got := gauge(t, reg, "parley_operator_cleanup_retrying", "broker"); got != 1 {
				t.Errorf("parley_operator_cleanup_retrying{piece=broker} = %v, want 1", got)
			}
		}
		longest = max(longest, res.RequeueAfter)
		h.clock.add(res.RequeueAfter)
	}
	elapsed := h.clock.Now().Sub(start)
	if elapsed < 6*time.Hour {
		t.Errorf("let go %s after the first failure; the policy says 6h", elapsed)
	}
	if longest != time.Minute {
		t.Errorf("longest wait between attempts %s, want the cap of 1m", longest)
	}
	attempts := float64(h.calls.deletes)
	if attempts < 300 {
		t.Errorf("%v attempts over 6h with a 1m cap; want about 360", attempts)
	}
	if got := testutil.ToFloat64(cleanupFailures.WithLabelValues("broker")) - failuresBefore; got != attempts {
		t.Errorf("parley_operator_cleanup_failures_total{piece=broker} grew by %v, want %v", got, attempts)
	}
	if got := testutil.ToFloat64(leftBehind.WithLabelValues("broker", "gave_up")) - gaveUpBefore; got != 1 {
		t.Errorf("parley_operator_cleanup_left_behind_total{cause=gave_up} grew by %v, want 1", got)
	}
	if e := eventWith(append(events, h.events()...), EventLeftBehind, "--cleanup-retry-for=6h0m0s", "failing since 2030-01-01T00:00:00Z", "parley.chat.team.pub"); e == "" {
		t.Error("no event naming what was left behind after the retry period")
	}
}

// gauge reads one series of a gathered gauge (-1 when absent).
func gauge(t *testing.T, reg *prometheus.Registry, name, piece string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "piece" && l.GetValue() == piece {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}
