package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// MaxPresenceRefreshDelay bounds how long a presence refresh waits to be
// written with others. Every connection refreshes its entries (the
// connection count of limits.connectionsPerUser, and presence of channels
// that keep it) on every ping: one statement each would be tens of thousands
// of commits a second at a million connections. Batched, a node writes them
// in one statement per interval. The presence TTL outlives three ping
// intervals, so the delay (at most a quarter of the ping interval) never lets
// a live entry expire.
const MaxPresenceRefreshDelay = time.Second

// presenceBatcher collects presence refreshes and writes them together.
type presenceBatcher struct {
	interval time.Duration
	write    func(context.Context, []store.PresenceEntry) error
	log      *slog.Logger

	// flushMu is held while a batch is written, so forget can wait for a
	// write in flight: a refresh must never land after the entry's removal
	// and bring it back for a whole TTL.
	flushMu sync.Mutex
	mu      sync.Mutex
	pending map[presenceKey]message.ClientInfo
	timer   *time.Timer
	stopped bool
}

type presenceKey struct{ channel, client string }

func newPresenceBatcher(interval time.Duration, write func(context.Context, []store.PresenceEntry) error, log *slog.Logger) *presenceBatcher {
	return &presenceBatcher{interval: interval, write: write, log: log, pending: map[presenceKey]message.ClientInfo{}}
}

// add queues a refresh; the first one after a flush starts the next interval.
func (b *presenceBatcher) add(channel string, info message.ClientInfo) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	b.pending[presenceKey{channel, info.Client}] = info
	if b.timer == nil {
		b.timer = time.AfterFunc(b.interval, b.flush)
	}
}

// flush writes what is pending. A failed batch is logged and dropped: the
// next ping refreshes the same entries again, well within the TTL.
func (b *presenceBatcher) flush() {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	batch := b.pending
	b.pending = map[presenceKey]message.ClientInfo{}
	b.timer = nil
	stopped := b.stopped
	b.mu.Unlock()
	if stopped || len(batch) == 0 {
		return
	}
	entries := make([]store.PresenceEntry, 0, len(batch))
	for k, info := range batch {
		entries = append(entries, store.PresenceEntry{Channel: k.channel, Info: info})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.write(ctx, entries); err != nil {
		b.log.Warn("refresh presence", "entries", len(entries), "error", err)
	}
}

// forget drops a queued refresh of the entry and waits for a write in flight,
// so the caller's removal comes after it.
func (b *presenceBatcher) forget(channel, client string) {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	delete(b.pending, presenceKey{channel, client})
	b.mu.Unlock()
}

// stop drops what is pending and waits for a write in flight.
func (b *presenceBatcher) stop() {
	b.mu.Lock()
	b.stopped = true
	if b.timer != nil {
		b.timer.Stop()
	}
	b.pending = map[presenceKey]message.ClientInfo{}
	b.mu.Unlock()
	b.flushMu.Lock()
	b.flushMu.Unlock() //nolint:staticcheck // an empty critical section: waiting is the point
}
