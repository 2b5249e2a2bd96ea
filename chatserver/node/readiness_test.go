package node_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/chatserver/broker"
	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
)

// flakyBroker is a memory broker whose readiness check fails while down is set.
type flakyBroker struct {
	broker.Broker
	mu   sync.Mutex
	down error
}

func (b *flakyBroker) Ready(ctx context.Context) error {
	b.mu.Lock()
	err := b.down
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.Broker.Ready(ctx)
}

func (b *flakyBroker) set(err error) { b.mu.Lock(); b.down = err; b.mu.Unlock() }

// Readiness over a broker outage, on a clock the test moves: ready and
// degraded until broker.readinessGrace has passed since the first failed
// check, then not ready; a reachable broker ends the outage (the next one
// gets the whole grace again). Draining is never ready.
func TestReadinessAcrossABrokerOutage(t *testing.T) {
	s := storememory.New(storememory.Options{})
	t.Cleanup(func() { _ = s.Close() })
	mem := brokermemory.New()
	t.Cleanup(func() { _ = mem.Close() })
	b := &flakyBroker{Broker: mem}
	n := newNode(t, b, s) // broker.readinessGrace: the default, 5m
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	n.SetClock(func() time.Time { return now })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	m := n.Metrics()
	// The memory broker is ready once the node runs it.
	for deadline := time.Now().Add(5 * time.Second); mem.Ready(ctx) != nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the memory broker never became ready")
		}
	}

	check := func(when string, wantReady bool, wantDegraded string) {
		t.Helper()
		degraded, err := n.Readiness(ctx)
		if (err == nil) != wantReady {
			t.Fatalf("%s: ready=%v (%v), want %v", when, err == nil, err, wantReady)
		}
		if !strings.Contains(degraded, wantDegraded) || (wantDegraded == "" && degraded != "") {
			t.Fatalf("%s: degraded %q, want %q", when, degraded, wantDegraded)
		}
		ready := 0.0
		if wantReady {
			ready = 1
		}
		if got := testutil.ToFloat64(m.Ready); got != ready {
			t.Fatalf("%s: parley_ready %v, want %v", when, got, ready)
		}
	}
	check("healthy", true, "")
	if testutil.ToFloat64(m.BrokerUp) != 1 || testutil.ToFloat64(m.StoreUp) != 1 {
		t.Fatal("broker and store gauges not 1 when healthy")
	}

	b.set(errors.New("connection refused"))
	check("outage starts", true, "broker unreachable for 0s")
	if testutil.ToFloat64(m.BrokerUp) != 0 {
		t.Fatal("parley_broker_up not 0 in an outage")
	}
	now = now.Add(4*time.Minute + 59*time.Second)
	check("just within the grace", true, "broker unreachable for 4m59s")
	now = now.Add(time.Second)
	if _, err := n.Readiness(ctx); err == nil || !strings.Contains(err.Error(), "broker.readinessGrace (5m0s)") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("at the grace: %v, want not ready naming the grace and the broker's error", err)
	}

	b.set(nil)
	check("broker back", true, "")
	b.set(errors.New("connection reset"))
	now = now.Add(time.Hour)
	check("a new outage gets the whole grace", true, "broker unreachable for 0s")

	n.SetShuttingDown()
	if _, err := n.Readiness(ctx); err == nil || err.Error() != "shutting down" {
		t.Fatalf("draining: %v, want not ready", err)
	}
}
