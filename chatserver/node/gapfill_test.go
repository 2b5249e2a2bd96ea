package node_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
)

// gatedStore is a memory store whose History waits for the gate to open:
// PostgreSQL slow or stalled while a gap is filled.
type gatedStore struct {
	*storememory.Store
	gate chan struct{}
}

func (g *gatedStore) History(ctx context.Context, channel string, opts store.HistoryOptions) ([]*message.Publication, message.StreamPosition, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, message.StreamPosition{}, ctx.Err()
	}
	return g.Store.History(ctx, channel, opts)
}

// Filling a gap reads the store off the broker's delivery path: while one
// channel's gap waits for a slow store, the broker's goroutine keeps
// delivering that channel's later publications (after the gap, in order) and
// every other channel's at once.
func TestGapFillDoesNotStallDelivery(t *testing.T) {
	ctx := context.Background()
	mem := storememory.New(storememory.Options{})
	t.Cleanup(func() { _ = mem.Close() })
	gs := &gatedStore{Store: mem, gate: make(chan struct{})}
	b := brokermemory.New()
	t.Cleanup(func() { _ = b.Close() })
	n := newNode(t, b, gs)
	slow, other := &recorder{}, &recorder{}
	if err := n.Subscribe(ctx, "room:slow", slow); err != nil {
		t.Fatal(err)
	}
	if err := n.Subscribe(ctx, "room:other", other); err != nil {
		t.Fatal(err)
	}
	appendN := func(ch string, count int) []store.AppendResult {
		var out []store.AppendResult
		for range count {
			r, err := mem.Append(ctx, ch, &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}
	slowPubs, otherPubs := appendN("room:slow", 5), appendN("room:other", 1)

	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		n.HandlePublication("room:slow", slowPubs[0].Publication, slowPubs[0].Position) // 1
		n.HandlePublication("room:slow", slowPubs[3].Publication, slowPubs[3].Position) // 4: a gap
		n.HandlePublication("room:slow", slowPubs[4].Publication, slowPubs[4].Position) // 5 waits behind it
		n.HandlePublication("room:other", otherPubs[0].Publication, otherPubs[0].Position)
	}()
	select {
	case <-delivered:
	case <-time.After(2 * time.Second):
		close(gs.gate)
		t.Fatal("the delivery path waited for the store")
	}
	other.mu.Lock()
	got := slices.Clone(other.offsets)
	other.mu.Unlock()
	if !slices.Equal(got, []uint64{1}) {
		t.Fatalf("other channel got %v while a gap was filled elsewhere", got)
	}
	close(gs.gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		slow.mu.Lock()
		got = slices.Clone(slow.offsets)
		slow.mu.Unlock()
		if len(got) == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("slow channel got %v, want 1..5 in order", got)
	}
}

// While a gap is filled, the broker link comes back: the catch-up from the
// store waits its turn, and each publication still arrives once, in order.
func TestGapFillAndResubscribeTogether(t *testing.T) {
	ctx := context.Background()
	mem := storememory.New(storememory.Options{})
	t.Cleanup(func() { _ = mem.Close() })
	gs := &gatedStore{Store: mem, gate: make(chan struct{})}
	b := brokermemory.New()
	t.Cleanup(func() { _ = b.Close() })
	n := newNode(t, b, gs)
	rec := &recorder{}
	if err := n.Subscribe(ctx, "room:both", rec); err != nil {
		t.Fatal(err)
	}
	var res []store.AppendResult
	for range 6 {
		r, err := mem.Append(ctx, "room:both", &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, r)
	}
	var wg sync.WaitGroup
	wg.Go(func() { n.HandlePublication("room:both", res[2].Publication, res[2].Position) }) // 3: gap 1, 2
	wg.Wait()
	n.Resubscribed([]string{"room:both"}) // the store is at 6
	close(gs.gate)
	deadline := time.Now().Add(5 * time.Second)
	var got []uint64
	for {
		rec.mu.Lock()
		got = slices.Clone(rec.offsets)
		rec.mu.Unlock()
		if len(got) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	rec.mu.Lock()
	got = slices.Clone(rec.offsets)
	rec.mu.Unlock()
	if !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("got %v, want 1..6 once each in order", got)
	}
}

// positionDown is a store whose Position fails (PostgreSQL down when the
// broker link comes back).
type positionDown struct{ *storememory.Store }

func (positionDown) Position(context.Context, string) (message.StreamPosition, error) {
	return message.StreamPosition{}, store.ErrUnavailable
}

// After a broker reconnect with the store down, what the channel missed is
// unknown: its subscribers are disconnected with 3010 to recover, never left
// silently behind.
func TestResubscribeWithoutStoreDisconnects(t *testing.T) {
	ctx := context.Background()
	mem := storememory.New(storememory.Options{})
	t.Cleanup(func() { _ = mem.Close() })
	b := brokermemory.New()
	t.Cleanup(func() { _ = b.Close() })
	n := newNode(t, b, positionDown{mem})
	rec := &recorder{}
	if err := n.Subscribe(ctx, "room:blind", rec); err != nil {
		t.Fatal(err)
	}
	n.Resubscribed([]string{"room:blind"})
	n.WaitGapFills()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.disconnected, []codes.Disconnect{codes.DisconnectInsufficientState}) {
		t.Fatalf("disconnects %v, want insufficient state", rec.disconnected)
	}
}
