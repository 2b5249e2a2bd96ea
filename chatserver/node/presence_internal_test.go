package node

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// recorder stands in for the store's AddPresences; block, when set, holds a
// write in flight until it is closed.
type recorder struct {
	mu      sync.Mutex
	batches [][]store.PresenceEntry
	started chan struct{}
	block   chan struct{}
}

func (r *recorder) write(_ context.Context, e []store.PresenceEntry) error {
	if r.started != nil {
		close(r.started)
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, e)
	return nil
}

// Refreshes within an interval go out as one batch, the latest per key.
func TestPresenceRefreshesAreBatched(t *testing.T) {
	r := &recorder{}
	b := newPresenceBatcher(20*time.Millisecond, r.write, slog.Default())
	defer b.stop()
	for i := range 500 {
		b.add("room:1", message.ClientInfo{User: "u", Client: "c" + string(rune('a'+i%50))})
	}
	b.add("$conns:u", message.ClientInfo{User: "u", Client: "ca"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.batches)
		r.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no batch written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(60 * time.Millisecond) // nothing more is pending: no second batch
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.batches) != 1 || len(r.batches[0]) != 51 {
		t.Fatalf("%d batches (first of %d entries), want one of 51", len(r.batches), len(r.batches[0]))
	}
}

// A connection leaving while its refresh is being written waits for that
// write, so the removal that follows is not undone by it; a queued refresh
// of the entry is dropped.
func TestPresenceForgetWaitsForTheWriteInFlight(t *testing.T) {
	r := &recorder{started: make(chan struct{}), block: make(chan struct{})}
	b := newPresenceBatcher(time.Hour, r.write, slog.Default()) // flushed by hand
	defer b.stop()
	b.add("room:1", message.ClientInfo{User: "u", Client: "c1"})
	go b.flush()
	<-r.started // the write is in flight
	b.add("room:1", message.ClientInfo{User: "u", Client: "c1"})
	forgotten := make(chan struct{})
	go func() {
		b.forget("room:1", "c1")
		close(forgotten)
	}()
	select {
	case <-forgotten:
		t.Fatal("forget returned while a write of the entry was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(r.block)
	<-forgotten
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.batches) != 1 {
		t.Fatalf("%d batches written", len(r.batches))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) != 0 {
		t.Fatalf("the queued refresh survived forget: %v", b.pending)
	}
}
