package controllers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
)

// TestGate checks the per-backend bounds on external calls with a clock the
// test moves: the calls in flight are capped, a backend found unreachable is
// skipped until its backoff ends, then one trial call goes through, and a
// success or a changed endpoint starts afresh.
func TestGate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &ChatClusterReconciler{Provisioning: Provisioning{
		Now: func() time.Time { return now }, BackendConcurrency: 2, UnreachableBackoff: time.Second,
	}}
	ctx := context.Background()
	down := &amqpprov.Error{Reason: amqpprov.ReasonUnreachable, Op: "connect", Err: errors.New("i/o timeout")}

	// Two calls may be in flight; the third is turned away at once.
	release := make(chan struct{})
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	for range 2 {
		wg.Go(func() {
			_ = r.gated(ctx, "b", "e", func(context.Context) error {
				started <- struct{}{}
				<-release
				return nil
			})
		})
	}
	<-started
	<-started
	called := false
	err := r.gated(ctx, "b", "e", func(context.Context) error { called = true; return nil })
	var busy *errBackendBusy
	if !errors.As(err, &busy) || called {
		t.Fatalf("third call: err %v, called %v; want busy, not called", err, called)
	}
	if err := r.gated(ctx, "other", "e", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("another backend is not bounded by this one's calls: %v", err)
	}
	close(release)
	wg.Wait()

	// An unreachable backend: the failing call says when the next attempt is.
	err = r.gated(ctx, "b", "e", func(context.Context) error { return down })
	var d *errBackendDown
	if !errors.As(err, &d) || !d.attempted || !d.next.Equal(now.Add(time.Second)) || amqpprov.ReasonOf(err) != amqpprov.ReasonUnreachable {
		t.Fatalf("unreachable call: %v; want attempted, next attempt in 1s, reason kept", err)
	}
	if !strings.Contains(err.Error(), "next attempt at 2026-01-01T00:00:01Z") {
		t.Errorf("message %q does not say when the next attempt is", err)
	}
	// Meanwhile nobody calls it.
	err = r.gated(ctx, "b", "e", func(context.Context) error { called = true; return nil })
	if !errors.As(err, &d) || d.attempted || called || d.wait(now) != time.Second {
		t.Fatalf("during the backoff: %v, called %v; want not attempted, wait 1s", err, called)
	}
	// A failure that is an answer (refused credentials) is not the backend's: no backoff.
	refused := &amqpprov.Error{Reason: amqpprov.ReasonAccessRefused, Op: "connect", Err: errors.New("403")}
	if err := r.gated(ctx, "c", "e", func(context.Context) error { return refused }); !errors.Is(err, refused) || errors.As(err, &d) {
		t.Fatalf("refused: %v", err)
	}
	if err := r.gated(ctx, "c", "e", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("after an answer the next call is made: %v", err)
	}

	// After the backoff one trial call goes through; others wait for it.
	now = now.Add(time.Second)
	trial := make(chan struct{})
	inTrial := make(chan struct{})
	wg.Go(func() {
		err := r.gated(ctx, "b", "e", func(context.Context) error { close(inTrial); <-trial; return down })
		if !errors.As(err, &d) || !d.attempted || !d.next.Equal(now.Add(2*time.Second)) {
			t.Errorf("second failure: %v; want the backoff doubled", err)
		}
	})
	<-inTrial
	if err := r.gated(ctx, "b", "e", func(context.Context) error { return nil }); !errors.As(err, &busy) || busy.limit != 1 {
		t.Errorf("beside the trial call: %v; want busy", err)
	}
	close(trial)
	wg.Wait()

	// The backend's connection changes (its admin fixed it): no backoff.
	if err := r.gated(ctx, "b", "fixed", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("a changed endpoint is tried at once: %v", err)
	}
	if got := r.unreachableBackoff(100); got != MaxUnreachableBackoff {
		t.Errorf("backoff after 100 failures %s, want the cap %s", got, MaxUnreachableBackoff)
	}
}

func TestURIKey(t *testing.T) {
	for uri, want := range map[string]string{
		"amqp://u:p@rabbit.example:5673/vh":                "RabbitMQ at rabbit.example:5673",
		"amqp://u:p@rabbit.example/":                       "RabbitMQ at rabbit.example:5672",
		"amqps://u:p@rabbit.example/":                      "RabbitMQ at rabbit.example:5671",
		"postgres://postgres@db.example/postgres":          "RabbitMQ at db.example:5432",
		"postgres://postgres@[::1]:6432/postgres?sslmode=": "RabbitMQ at [::1]:6432",
	} {
		if got := uriKey("RabbitMQ", uri); got != want {
			t.Errorf("uriKey(%q) = %q, want %q", uri, got, want)
		}
	}
	if got := uriKey("PostgreSQL", "host=db password=secret"); strings.Contains(got, "secret") || !strings.HasPrefix(got, "PostgreSQL ") {
		t.Errorf("uriKey of a key=value string = %q: want a fingerprint", got)
	}
}
