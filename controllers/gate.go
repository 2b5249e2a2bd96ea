package controllers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
)

// Why a gate: the manager has a few workers and an external call may take
// up to the call timeout. Without a bound, a handful of ChatClusters whose
// RabbitMQ or PostgreSQL accepts connections and never answers would hold
// every worker, and healthy clusters (their deletions too) would wait behind
// them. The gate bounds the calls in flight per backend, and after a backend
// could not be reached it lets one trial call through per backoff period;
// the other clusters on that backend skip the call at once, and their
// condition says when the next attempt is.

// Defaults of the gate's settings.
const (
	// DefaultMaxConcurrentReconciles is the manager's default worker count:
	// with DefaultBackendConcurrency, two backends failing at once still leave
	// workers for everyone else.
	DefaultMaxConcurrentReconciles = 8
	DefaultConnectTimeout          = 5 * time.Second
	DefaultBackendConcurrency      = 2
	DefaultUnreachableBackoff      = 5 * time.Second
	// MaxUnreachableBackoff caps the doubling backoff after failures to reach a backend.
	MaxUnreachableBackoff = 5 * time.Minute
)

// busyRetry is how soon a pass that found its backend's slots taken tries
// again (plus jitter, so the waiting clusters do not come back together).
const busyRetry = 250 * time.Millisecond

// backendGate bounds and backs off the external calls, per backend.
type backendGate struct {
	mu sync.Mutex
	m  map[string]*gateState
}

type gateState struct {
	// endpoint is what the key pointed at when the failures were counted: a
	// backend whose connection changes (fixed by its admin) starts afresh.
	endpoint string
	inFlight int
	failures int
	retryAt  time.Time
	lastErr  error
}

// errBackendBusy: the backend's slots are all taken by calls of other
// clusters; the call was not made.
type errBackendBusy struct {
	backend string
	limit   int
	wait    time.Duration
}

func (e *errBackendBusy) Error() string {
	return fmt.Sprintf("%d calls to %s already in flight; waiting for one to end", e.limit, e.backend)
}

// errBackendDown: the backend could not be reached. attempted says whether
// this error is the answer to this call, or one from an earlier call that
// put the backend in backoff (the call was not made).
type errBackendDown struct {
	backend   string
	err       error
	next      time.Time
	attempted bool
}

func (e *errBackendDown) Error() string {
	msg := e.err.Error()
	if !e.attempted {
		msg = "not tried: " + msg
	}
	return fmt.Sprintf("%s (%s unreachable; next attempt at %s)", msg, e.backend, e.next.UTC().Format(time.RFC3339))
}

func (e *errBackendDown) Unwrap() error { return e.err }

// wait is how long until the next attempt, from now.
func (e *errBackendDown) wait(now time.Time) time.Duration { return max(e.next.Sub(now), 0) }

// gated runs call against backend (a key: backendKey or uriKey) when the backend has a free slot and is not backing off.
// It returns call's error, an *errBackendBusy or an *errBackendDown (not
// attempted) when the call was not made, and an *errBackendDown (attempted)
// when the call found the backend unreachable. The call's context is
// bounded by the call timeout.
func (r *ChatClusterReconciler) gated(ctx context.Context, backend, endpoint string, call func(context.Context) error) error {
	g := &r.provisioned.gate
	limit := r.backendConcurrency()
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*gateState{}
	}
	st := g.m[backend]
	if st == nil {
		st = &gateState{endpoint: endpoint}
		g.m[backend] = st
	}
	if st.endpoint != endpoint {
		st.endpoint, st.failures, st.lastErr = endpoint, 0, nil
	}
	now := r.now()
	switch {
	case st.failures > 0 && now.Before(st.retryAt):
		err := &errBackendDown{backend: backend, err: st.lastErr, next: st.retryAt}
		g.mu.Unlock()
		return err
	case st.failures > 0 && st.inFlight > 0:
		// Half open: one trial call finds out whether the backend is back.
		g.mu.Unlock()
		return &errBackendBusy{backend: backend, limit: 1, wait: jitter(busyRetry)}
	case st.inFlight >= limit:
		g.mu.Unlock()
		return &errBackendBusy{backend: backend, limit: limit, wait: jitter(busyRetry)}
	}
	st.inFlight++
	g.mu.Unlock()

	callCtx, cancel := r.callContext(ctx)
	err := call(callCtx)
	cancel()

	g.mu.Lock()
	defer g.mu.Unlock()
	st.inFlight--
	if st.endpoint != endpoint {
		// The endpoint changed during the call: its answer concerns the old one.
		return err
	}
	if err == nil || !unreachable(err) {
		st.failures, st.lastErr = 0, nil
		return err
	}
	st.failures++
	st.lastErr = err
	st.retryAt = r.now().Add(r.unreachableBackoff(st.failures))
	return &errBackendDown{backend: backend, err: err, next: st.retryAt, attempted: true}
}

// unreachable reports a failure to talk to the backend at all (as opposed to
// an answer: refused credentials, a conflict), which is the backend's
// failure and not one cluster's.
func unreachable(err error) bool {
	return amqpprov.ReasonOf(err) == amqpprov.ReasonUnreachable || pgprov.ReasonOf(err) == pgprov.ReasonUnreachable ||
		errors.Is(err, context.DeadlineExceeded)
}

func (r *ChatClusterReconciler) backendConcurrency() int {
	if n := r.Provisioning.BackendConcurrency; n > 0 {
		return n
	}
	return DefaultBackendConcurrency
}

func (r *ChatClusterReconciler) unreachableBackoff(failures int) time.Duration {
	d := r.Provisioning.UnreachableBackoff
	if d <= 0 {
		d = DefaultUnreachableBackoff
	}
	for i := 1; i < failures && d < MaxUnreachableBackoff; i++ {
		d *= 2
	}
	return min(d, MaxUnreachableBackoff)
}

// jitter spreads d over [d, 1.5d).
func jitter(d time.Duration) time.Duration {
	return d + rand.N(d/2+1)
}

// backendKey names a ChatBackend's RabbitMQ or PostgreSQL (typ) in the gate.
func backendKey(name, typ string) string { return fmt.Sprintf("ChatBackend %q (%s)", name, typ) }

// uriKey names the server of a URI from a deprecated spec field in the gate:
// typ (RabbitMQ, PostgreSQL) at its host:port (with the scheme's default
// port), or, for a URI that does not parse as a URL (a libpq key=value
// string), at a fingerprint of it.
func uriKey(typ, uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Host == "" {
		return typ + " " + digest(uri)[:12]
	}
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "amqp":
			port = "5672"
		case "amqps":
			port = "5671"
		default:
			port = "5432"
		}
	}
	return typ + " at " + net.JoinHostPort(u.Hostname(), port)
}
