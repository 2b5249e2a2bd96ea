// Package storetest is the contract every store.Store implementation passes:
// an implementation's tests call Run with a Harness that builds its stores.
// Each test uses channel names of its own, so a harness may share one backend
// (one database) between all tests.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// Options tell a harness how to configure the store it builds.
type Options struct {
	// PresenceTTL is the presence entry lifetime the store must use.
	PresenceTTL time.Duration
}

// Harness builds the stores under test.
type Harness struct {
	// New returns a store. The suite closes it.
	New func(t *testing.T, opts Options) store.Store
	// Peer returns a second store sharing s's backend, as another replica
	// would (its own connections, same data). The suite closes it. Nil when the
	// implementation cannot be shared between replicas (memory).
	Peer func(t *testing.T, s store.Store) store.Store
}

var seq atomic.Uint64

// Channel returns a channel name unique to this process and test.
func Channel(t *testing.T) string {
	return fmt.Sprintf("test:%d:%s", seq.Add(1), t.Name())
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t *testing.T, h Harness, opts Options) store.Store {
	if opts.PresenceTTL == 0 {
		opts.PresenceTTL = time.Minute
	}
	s := h.New(t, opts)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func pub(data string) *message.Publication {
	return &message.Publication{Data: []byte(data), Info: &message.ClientInfo{User: "u1", Client: "c1"}, Tags: map[string]string{"k": "v"}}
}

var keep = store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour}

func mustAppend(t *testing.T, s store.Store, ch string, data string, opts store.AppendOptions) store.AppendResult {
	t.Helper()
	res, err := s.Append(ctxT(t), ch, pub(data), opts)
	if err != nil {
		t.Fatalf("Append(%q): %v", ch, err)
	}
	return res
}

func history(t *testing.T, s store.Store, ch string, opts store.HistoryOptions) ([]*message.Publication, message.StreamPosition) {
	t.Helper()
	pubs, pos, err := s.History(ctxT(t), ch, opts)
	if err != nil {
		t.Fatalf("History(%q, %+v): %v", ch, opts, err)
	}
	return pubs, pos
}

func offsets(pubs []*message.Publication) []uint64 {
	out := make([]uint64, 0, len(pubs))
	for _, p := range pubs {
		out = append(out, p.Offset)
	}
	return out
}

func wantOffsets(t *testing.T, what string, pubs []*message.Publication, want ...uint64) {
	t.Helper()
	if got := offsets(pubs); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("%s: offsets %v, want %v", what, got, want)
	}
}

// Run runs the whole contract.
func Run(t *testing.T, h Harness) {
	t.Run("AppendAssignsDenseOffsets", func(t *testing.T) { t.Parallel(); testAppendDense(t, h) })
	t.Run("AppendDoesNotAliasCaller", func(t *testing.T) { t.Parallel(); testAppendNoAlias(t, h) })
	t.Run("PositionBeforeFirstPublicationStaysValid", func(t *testing.T) { t.Parallel(); testPositionStable(t, h) })
	t.Run("HistoryPages", func(t *testing.T) { t.Parallel(); testHistoryPages(t, h) })
	t.Run("HistoryEpochMismatch", func(t *testing.T) { t.Parallel(); testEpochMismatch(t, h) })
	t.Run("RetentionBySizeIsNotLoss", func(t *testing.T) { t.Parallel(); testRetentionSize(t, h) })
	t.Run("RetentionByAgeIsNotLoss", func(t *testing.T) { t.Parallel(); testRetentionAge(t, h) })
	t.Run("NoHistoryStillAssignsOffsets", func(t *testing.T) { t.Parallel(); testNoHistory(t, h) })
	t.Run("RemoveHistoryStartsNewEpoch", func(t *testing.T) { t.Parallel(); testRemoveHistory(t, h) })
	t.Run("ConcurrentAppendsAreDenseAndOrdered", func(t *testing.T) { t.Parallel(); testConcurrentAppends(t, h) })
	t.Run("IdempotentAppend", func(t *testing.T) { t.Parallel(); testIdempotent(t, h) })
	t.Run("IdempotentAppendConcurrent", func(t *testing.T) { t.Parallel(); testIdempotentConcurrent(t, h) })
	t.Run("IdempotencyKeyExpires", func(t *testing.T) { t.Parallel(); testIdempotencyExpires(t, h) })
	t.Run("ReadReceipts", func(t *testing.T) { t.Parallel(); testReadReceipts(t, h) })
	t.Run("ReceiptsPerChannel", func(t *testing.T) { t.Parallel(); testReceipts(t, h) })
	t.Run("Presence", func(t *testing.T) { t.Parallel(); testPresence(t, h) })
	t.Run("PresenceExpiresWithoutRefresh", func(t *testing.T) { t.Parallel(); testPresenceTTL(t, h) })
	t.Run("PresenceInBatches", func(t *testing.T) { t.Parallel(); testPresenceBatch(t, h) })
	t.Run("AdmitPresenceNeverOvershoots", func(t *testing.T) { t.Parallel(); testAdmitPresence(t, h) })
	t.Run("OutboxKeepsTheNewest", func(t *testing.T) { t.Parallel(); testOutbox(t, h) })
	t.Run("BadInput", func(t *testing.T) { t.Parallel(); testBadInput(t, h) })
	t.Run("CanceledContext", func(t *testing.T) { t.Parallel(); testCanceled(t, h) })
	runGroups(t, h)
	if h.Peer != nil {
		t.Run("PeersShareStreams", func(t *testing.T) { t.Parallel(); testPeers(t, h) })
	}
}

func testAppendDense(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	before := time.Now().Add(-time.Minute).UnixMilli()
	var epoch string
	for i := 1; i <= 5; i++ {
		res := mustAppend(t, s, ch, fmt.Sprint(i), keep)
		if res.Duplicate {
			t.Fatalf("append %d: Duplicate without a key", i)
		}
		if res.Publication.Offset != uint64(i) || res.Position.Offset != uint64(i) {
			t.Fatalf("append %d: publication offset %d, position %+v", i, res.Publication.Offset, res.Position)
		}
		if res.Position.Epoch == "" {
			t.Fatalf("append %d: empty epoch", i)
		}
		if epoch != "" && res.Position.Epoch != epoch {
			t.Fatalf("append %d: epoch changed from %q to %q", i, epoch, res.Position.Epoch)
		}
		epoch = res.Position.Epoch
		if res.Publication.Time < before || res.Publication.Time > time.Now().Add(time.Minute).UnixMilli() {
			t.Fatalf("append %d: time %d not around now", i, res.Publication.Time)
		}
		if string(res.Publication.Data) != fmt.Sprint(i) || res.Publication.Info == nil || res.Publication.Info.User != "u1" || res.Publication.Tags["k"] != "v" {
			t.Fatalf("append %d: stored publication %+v", i, res.Publication)
		}
	}
	pos, err := s.Position(ctxT(t), ch)
	if err != nil {
		t.Fatal(err)
	}
	if pos != (message.StreamPosition{Offset: 5, Epoch: epoch}) {
		t.Fatalf("Position = %+v, want 5/%s", pos, epoch)
	}
	pubs, hpos := history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "history", pubs, 1, 2, 3, 4, 5)
	if hpos != pos {
		t.Fatalf("History position %+v, want %+v", hpos, pos)
	}
	for i, p := range pubs {
		if string(p.Data) != fmt.Sprint(i+1) || p.Info == nil || p.Info.Client != "c1" || p.Tags["k"] != "v" || p.Time == 0 {
			t.Fatalf("history[%d] = %+v", i, p)
		}
	}
	// Another channel has its own offsets.
	if res := mustAppend(t, s, Channel(t), "x", keep); res.Publication.Offset != 1 {
		t.Fatalf("first offset of another channel = %d", res.Publication.Offset)
	}
}

func testAppendNoAlias(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	in := pub("hello")
	res, err := s.Append(ctxT(t), ch, in, keep)
	if err != nil {
		t.Fatal(err)
	}
	if in.Offset != 0 || in.Time != 0 {
		t.Fatalf("Append modified the caller's publication: %+v", in)
	}
	in.Data[0] = 'X'
	in.Tags["k"] = "changed"
	res.Publication.Data[1] = 'Y'
	pubs, _ := history(t, s, ch, store.HistoryOptions{Limit: -1})
	if len(pubs) != 1 || string(pubs[0].Data) != "hello" || pubs[0].Tags["k"] != "v" {
		t.Fatalf("stored publication changed through a caller's pointer: %+v", pubs)
	}
}

func testPositionStable(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	p0, err := s.Position(ctxT(t), ch)
	if err != nil {
		t.Fatal(err)
	}
	if p0.Offset != 0 || p0.Epoch == "" {
		t.Fatalf("Position of a new channel = %+v, want offset 0 and an epoch", p0)
	}
	_, hp := history(t, s, ch, store.HistoryOptions{Limit: 10})
	if hp != p0 {
		t.Fatalf("History position %+v differs from Position %+v", hp, p0)
	}
	res := mustAppend(t, s, ch, "a", keep)
	if res.Position.Epoch != p0.Epoch {
		t.Fatalf("epoch changed on first publication: %q → %q", p0.Epoch, res.Position.Epoch)
	}
	pubs, _ := history(t, s, ch, store.HistoryOptions{Since: &p0, Limit: -1})
	wantOffsets(t, "recovery from the position before the first publication", pubs, 1)
}

func testHistoryPages(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	var epoch string
	for i := 1; i <= 10; i++ {
		epoch = mustAppend(t, s, ch, fmt.Sprint(i), keep).Position.Epoch
	}
	at := func(o uint64) *message.StreamPosition { return &message.StreamPosition{Offset: o, Epoch: epoch} }
	for _, tc := range []struct {
		name string
		opts store.HistoryOptions
		want []uint64
	}{
		{"limit 0 returns only the position", store.HistoryOptions{Limit: 0}, nil},
		{"all", store.HistoryOptions{Limit: -1}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"first 3", store.HistoryOptions{Limit: 3}, []uint64{1, 2, 3}},
		{"last 3 reversed", store.HistoryOptions{Limit: 3, Reverse: true}, []uint64{10, 9, 8}},
		{"all reversed", store.HistoryOptions{Limit: -1, Reverse: true}, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{"since 4", store.HistoryOptions{Since: at(4), Limit: -1}, []uint64{5, 6, 7, 8, 9, 10}},
		{"since 4 limit 2", store.HistoryOptions{Since: at(4), Limit: 2}, []uint64{5, 6}},
		{"since top", store.HistoryOptions{Since: at(10), Limit: -1}, nil},
		{"since 0", store.HistoryOptions{Since: at(0), Limit: 2}, []uint64{1, 2}},
		{"before 4 reversed", store.HistoryOptions{Since: at(4), Limit: -1, Reverse: true}, []uint64{3, 2, 1}},
		{"before 8 reversed limit 2", store.HistoryOptions{Since: at(8), Limit: 2, Reverse: true}, []uint64{7, 6}},
		{"limit larger than history", store.HistoryOptions{Limit: 50}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pubs, pos := history(t, s, ch, tc.opts)
			wantOffsets(t, tc.name, pubs, tc.want...)
			if pos != *at(10) {
				t.Fatalf("position %+v, want 10/%s", pos, epoch)
			}
			for _, p := range pubs {
				if string(p.Data) != fmt.Sprint(p.Offset) {
					t.Fatalf("publication %d carries data %q", p.Offset, p.Data)
				}
			}
		})
	}
	// Paging forward through everything with since = last offset seen.
	var seen []uint64
	var since *message.StreamPosition
	for page := 0; page < 10; page++ {
		pubs, _ := history(t, s, ch, store.HistoryOptions{Since: since, Limit: 4})
		if len(pubs) == 0 {
			break
		}
		seen = append(seen, offsets(pubs)...)
		since = at(pubs[len(pubs)-1].Offset)
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(seen, want) {
		t.Fatalf("forward pages: %v, want %v", seen, want)
	}
}

func testEpochMismatch(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	res := mustAppend(t, s, ch, "a", keep)
	pubs, pos, err := s.History(ctxT(t), ch, store.HistoryOptions{Since: &message.StreamPosition{Offset: 0, Epoch: "not-" + res.Position.Epoch}, Limit: -1})
	if !errors.Is(err, store.ErrEpochMismatch) {
		t.Fatalf("History with a foreign epoch: err = %v, want ErrEpochMismatch", err)
	}
	if len(pubs) != 0 {
		t.Fatalf("History with a foreign epoch returned %d publications", len(pubs))
	}
	if pos != res.Position {
		t.Fatalf("History with a foreign epoch returned position %+v, want current %+v", pos, res.Position)
	}
}

func testRetentionSize(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	opts := store.AppendOptions{HistorySize: 3, HistoryTTL: time.Hour}
	var first store.AppendResult
	for i := 1; i <= 7; i++ {
		res := mustAppend(t, s, ch, fmt.Sprint(i), opts)
		if i == 1 {
			first = res
		}
		if res.Position.Epoch != first.Position.Epoch {
			t.Fatalf("retention changed the epoch")
		}
	}
	pubs, pos := history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "kept", pubs, 5, 6, 7)
	if pos.Offset != 7 || pos.Epoch != first.Position.Epoch {
		t.Fatalf("position %+v", pos)
	}
	// A client at offset 1 gets a shorter page, not an epoch error: it sees the
	// gap (5 ≠ 2) and knows it cannot recover fully.
	pubs, _ = history(t, s, ch, store.HistoryOptions{Since: &first.Position, Limit: -1})
	wantOffsets(t, "since 1 after trimming", pubs, 5, 6, 7)
	// Shrinking the size applies on the next append.
	mustAppend(t, s, ch, "8", store.AppendOptions{HistorySize: 1, HistoryTTL: time.Hour})
	pubs, _ = history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "after shrinking to 1", pubs, 8)
}

func testRetentionAge(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	opts := store.AppendOptions{HistorySize: 10, HistoryTTL: 1500 * time.Millisecond}
	old := mustAppend(t, s, ch, "1", opts)
	time.Sleep(1600 * time.Millisecond)
	mustAppend(t, s, ch, "2", opts)
	pubs, pos := history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "after the first expired", pubs, 2)
	if pos.Epoch != old.Position.Epoch || pos.Offset != 2 {
		t.Fatalf("age retention changed the position: %+v (was %+v)", pos, old.Position)
	}
	time.Sleep(1600 * time.Millisecond)
	pubs, pos = history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "after all expired", pubs)
	if pos.Epoch != old.Position.Epoch || pos.Offset != 2 {
		t.Fatalf("expiry of the whole history changed the position: %+v", pos)
	}
	if res := mustAppend(t, s, ch, "3", opts); res.Publication.Offset != 3 || res.Position.Epoch != old.Position.Epoch {
		t.Fatalf("append after expiry: %+v", res.Position)
	}
}

func testNoHistory(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	for i := 1; i <= 3; i++ {
		res := mustAppend(t, s, ch, fmt.Sprint(i), store.AppendOptions{})
		if res.Publication.Offset != uint64(i) {
			t.Fatalf("offset %d, want %d", res.Publication.Offset, i)
		}
	}
	pubs, pos := history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "history of a channel without history", pubs)
	if pos.Offset != 3 {
		t.Fatalf("position %+v, want offset 3", pos)
	}
}

func testRemoveHistory(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	mustAppend(t, s, ch, "1", keep)
	old := mustAppend(t, s, ch, "2", keep).Position
	if err := s.MarkRead(ctxT(t), ch, "alice", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveHistory(ctxT(t), ch); err != nil {
		t.Fatal(err)
	}
	pos, err := s.Position(ctxT(t), ch)
	if err != nil {
		t.Fatal(err)
	}
	if pos.Epoch == old.Epoch || pos.Epoch == "" || pos.Offset != 0 {
		t.Fatalf("position after RemoveHistory = %+v (was %+v), want offset 0 and a new epoch", pos, old)
	}
	if _, _, err := s.History(ctxT(t), ch, store.HistoryOptions{Since: &old, Limit: -1}); !errors.Is(err, store.ErrEpochMismatch) {
		t.Fatalf("recovery from the lost epoch: err = %v, want ErrEpochMismatch", err)
	}
	pubs, _ := history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "history after RemoveHistory", pubs)
	res := mustAppend(t, s, ch, "new", keep)
	if res.Publication.Offset != 1 || res.Position.Epoch != pos.Epoch {
		t.Fatalf("first append of the new epoch: %+v", res.Position)
	}
	rs, err := s.ReadStates(ctxT(t), "alice", []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].LastRead != 0 || rs[0].Unread != 1 || rs[0].LastOffset != 1 {
		t.Fatalf("read state after RemoveHistory and one append: %+v", rs[0])
	}
}

func testConcurrentAppends(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	stores := []store.Store{s}
	if h.Peer != nil {
		p := h.Peer(t, s)
		t.Cleanup(func() { _ = p.Close() })
		stores = append(stores, p)
	}
	ch := Channel(t)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	got := make([][]uint64, writers)
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := stores[w%len(stores)]
			for i := 0; i < each; i++ {
				res, err := st.Append(context.Background(), ch, pub(fmt.Sprintf("%d-%d", w, i)), store.AppendOptions{HistorySize: writers * each, HistoryTTL: time.Hour})
				if err != nil {
					errs <- err
					return
				}
				got[w] = append(got[w], res.Publication.Offset)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent append: %v", err)
	}
	var all []uint64
	for w, offs := range got {
		if !slices.IsSorted(offs) {
			t.Fatalf("writer %d saw offsets out of order: %v", w, offs)
		}
		all = append(all, offs...)
	}
	slices.Sort(all)
	for i, o := range all {
		if o != uint64(i+1) {
			t.Fatalf("offsets are not 1..%d without gaps or duplicates: position %d holds %d", writers*each, i, o)
		}
	}
	// History agrees with what each writer was told.
	pubs, pos := history(t, stores[len(stores)-1], ch, store.HistoryOptions{Limit: -1})
	if pos.Offset != writers*each || len(pubs) != writers*each {
		t.Fatalf("history has %d publications at position %+v, want %d", len(pubs), pos, writers*each)
	}
	byOffset := map[uint64]string{}
	for w, offs := range got {
		for i, o := range offs {
			byOffset[o] = fmt.Sprintf("%d-%d", w, i)
		}
	}
	for i, p := range pubs {
		if p.Offset != uint64(i+1) || string(p.Data) != byOffset[p.Offset] {
			t.Fatalf("history[%d] = offset %d data %q, want offset %d data %q", i, p.Offset, p.Data, i+1, byOffset[uint64(i+1)])
		}
	}
}

func testIdempotent(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	opts := keep
	opts.IdempotencyKey = "k1"
	opts.IdempotencyTTL = time.Minute
	first, err := s.Append(ctxT(t), ch, pub("original"), opts)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, ch, "other", keep)
	again, err := s.Append(ctxT(t), ch, pub("retry"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || first.Duplicate {
		t.Fatalf("Duplicate flags: first %v, again %v", first.Duplicate, again.Duplicate)
	}
	if again.Publication.Offset != first.Publication.Offset || string(again.Publication.Data) != "original" || again.Publication.Time != first.Publication.Time {
		t.Fatalf("duplicate returned %+v, want the original %+v", again.Publication, first.Publication)
	}
	if again.Position != first.Position {
		t.Fatalf("duplicate position %+v, want the original's %+v", again.Position, first.Position)
	}
	pubs, _ := history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "history after a duplicate", pubs, 1, 2)
	// The same key in another channel is another publication.
	other, err := s.Append(ctxT(t), Channel(t), pub("x"), opts)
	if err != nil || other.Duplicate {
		t.Fatalf("same key in another channel: %+v, %v", other, err)
	}
	// A channel without history still deduplicates.
	nohist := Channel(t)
	o := store.AppendOptions{IdempotencyKey: "k", IdempotencyTTL: time.Minute}
	a, _ := s.Append(ctxT(t), nohist, pub("a"), o)
	b, err := s.Append(ctxT(t), nohist, pub("b"), o)
	if err != nil || !b.Duplicate || b.Publication.Offset != a.Publication.Offset || string(b.Publication.Data) != "a" {
		t.Fatalf("duplicate in a channel without history: %+v, %v", b, err)
	}
}

func testIdempotentConcurrent(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	stores := []store.Store{s}
	if h.Peer != nil {
		p := h.Peer(t, s)
		t.Cleanup(func() { _ = p.Close() })
		stores = append(stores, p)
	}
	ch := Channel(t)
	const n = 8
	var wg sync.WaitGroup
	results := make([]store.AppendResult, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = stores[i%len(stores)].Append(context.Background(), ch, pub(fmt.Sprint(i)),
				store.AppendOptions{HistorySize: 10, HistoryTTL: time.Hour, IdempotencyKey: "same", IdempotencyTTL: time.Minute})
		}()
	}
	wg.Wait()
	fresh := 0
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("append %d: %v", i, errs[i])
		}
		if !results[i].Duplicate {
			fresh++
		}
		if results[i].Publication.Offset != 1 {
			t.Fatalf("append %d got offset %d, want every retry to see offset 1", i, results[i].Publication.Offset)
		}
	}
	if fresh != 1 {
		t.Fatalf("%d appends stored the publication, want exactly 1", fresh)
	}
	pubs, _ := history(t, s, ch, store.HistoryOptions{Limit: -1})
	wantOffsets(t, "history", pubs, 1)
}

func testIdempotencyExpires(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	opts := store.AppendOptions{HistorySize: 10, HistoryTTL: time.Hour, IdempotencyKey: "k", IdempotencyTTL: 500 * time.Millisecond}
	mustAppend(t, s, ch, "a", opts)
	time.Sleep(700 * time.Millisecond)
	res := mustAppend(t, s, ch, "b", opts)
	if res.Duplicate || res.Publication.Offset != 2 {
		t.Fatalf("append after the key expired: duplicate=%v offset=%d", res.Duplicate, res.Publication.Offset)
	}
	if again := mustAppend(t, s, ch, "c", opts); !again.Duplicate || again.Publication.Offset != 2 {
		t.Fatalf("the key re-stored after expiry does not deduplicate: %+v", again)
	}
}

func testReadReceipts(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	a, b, never := Channel(t), Channel(t), Channel(t)
	for i := 0; i < 5; i++ {
		mustAppend(t, s, a, "x", keep)
	}
	mustAppend(t, s, b, "x", keep)
	ctx := ctxT(t)
	for _, step := range []struct {
		ch     string
		offset uint64
	}{{a, 3}, {a, 2}, {b, 99}} {
		if err := s.MarkRead(ctx, step.ch, "alice", step.offset); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s.ReadStates(ctx, "alice", []string{b, a, never})
	if err != nil {
		t.Fatal(err)
	}
	want := []message.ReadState{
		{Channel: b, LastRead: 1, Unread: 0, LastOffset: 1},
		{Channel: a, LastRead: 3, Unread: 2, LastOffset: 5},
		{Channel: never, LastRead: 0, Unread: 0, LastOffset: 0},
	}
	if !slices.Equal(rs, want) {
		t.Fatalf("ReadStates = %+v\nwant %+v", rs, want)
	}
	rs, err = s.ReadStates(ctx, "bob", []string{a})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0] != (message.ReadState{Channel: a, LastRead: 0, Unread: 5, LastOffset: 5}) {
		t.Fatalf("another user's state: %+v", rs[0])
	}
	mustAppend(t, s, a, "x", keep)
	rs, _ = s.ReadStates(ctx, "alice", []string{a})
	if rs[0].Unread != 3 || rs[0].LastOffset != 6 {
		t.Fatalf("unread after a new publication: %+v", rs[0])
	}
	if rs, err := s.ReadStates(ctx, "alice", nil); err != nil || len(rs) != 0 {
		t.Fatalf("ReadStates of no channels: %v, %v", rs, err)
	}
}

func testReceipts(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch, other, never := Channel(t), Channel(t), Channel(t)
	for i := 0; i < 5; i++ {
		mustAppend(t, s, ch, "x", keep)
	}
	mustAppend(t, s, other, "x", keep)
	ctx := ctxT(t)
	for _, step := range []struct {
		user   string
		offset uint64
	}{{"carol", 2}, {"alice", 4}, {"bob", 99}, {"alice", 1}, {"dave", 0}, {"erin", 2}, {"Zed", 2}} {
		if err := s.MarkRead(ctx, ch, step.user, step.offset); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkRead(ctx, other, "frank", 1); err != nil {
		t.Fatal(err)
	}
	got, err := s.Receipts(ctx, ch, 100)
	if err != nil {
		t.Fatal(err)
	}
	// Clamped to the top (bob), never moved back (alice), nobody at 0 (dave),
	// ties by user name in byte order (Zed before carol before erin), other
	// channels' receipts not included (frank).
	want := []message.Receipt{{User: "bob", LastRead: 5}, {User: "alice", LastRead: 4}, {User: "Zed", LastRead: 2}, {User: "carol", LastRead: 2}, {User: "erin", LastRead: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("Receipts = %+v\nwant %+v", got, want)
	}
	if got, err := s.Receipts(ctx, ch, 2); err != nil || !slices.Equal(got, want[:2]) {
		t.Fatalf("Receipts limit 2 = %+v, %v; want the two furthest", got, err)
	}
	if got, err := s.Receipts(ctx, never, 10); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Receipts of an unknown channel = %#v, %v; want an empty list", got, err)
	}
	// Receipts belong to the epoch: removing history drops them.
	if err := s.RemoveHistory(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Receipts(ctx, ch, 10); err != nil || len(got) != 0 {
		t.Fatalf("Receipts after RemoveHistory = %+v, %v", got, err)
	}
}

func testPresence(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	ctx := ctxT(t)
	entries := []message.ClientInfo{
		{User: "alice", Client: "c1", ConnInfo: []byte(`{"n":1}`), ChanInfo: []byte(`{"c":1}`)},
		{User: "alice", Client: "c2"},
		{User: "bob", Client: "c3"},
	}
	for _, e := range entries {
		if err := s.AddPresence(ctx, ch, e); err != nil {
			t.Fatal(err)
		}
	}
	// Adding again is a refresh, not a second entry.
	if err := s.AddPresence(ctx, ch, entries[0]); err != nil {
		t.Fatal(err)
	}
	got, err := s.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["c1"].User != "alice" || string(got["c1"].ConnInfo) != `{"n":1}` || string(got["c1"].ChanInfo) != `{"c":1}` || got["c3"].User != "bob" {
		t.Fatalf("Presence = %+v", got)
	}
	clients, users, err := s.PresenceStats(ctx, ch)
	if err != nil || clients != 3 || users != 2 {
		t.Fatalf("PresenceStats = %d clients, %d users, %v; want 3, 2", clients, users, err)
	}
	if err := s.RemovePresence(ctx, ch, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemovePresence(ctx, ch, "missing"); err != nil {
		t.Fatalf("removing an absent entry: %v", err)
	}
	clients, users, _ = s.PresenceStats(ctx, ch)
	if clients != 2 || users != 2 {
		t.Fatalf("after removing c1: %d clients, %d users", clients, users)
	}
	empty, err := s.Presence(ctx, Channel(t))
	if err != nil || len(empty) != 0 {
		t.Fatalf("presence of an empty channel: %v, %v", empty, err)
	}
}

// testAdmitPresence admits up to the limit, refreshes without counting
// twice, refuses past it, and, with many admissions racing on two stores
// sharing one backend (two replicas), admits exactly the limit.
func testAdmitPresence(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	ch := Channel(t)
	for i := range 3 {
		ok, err := s.AdmitPresence(ctx, ch, message.ClientInfo{User: "u", Client: fmt.Sprint("c", i)}, 3)
		if err != nil || !ok {
			t.Fatalf("admission %d of 3: %v, %v", i+1, ok, err)
		}
	}
	if ok, err := s.AdmitPresence(ctx, ch, message.ClientInfo{User: "u", Client: "c0"}, 3); err != nil || !ok {
		t.Fatalf("a refresh of an admitted entry was refused: %v, %v", ok, err)
	}
	if ok, err := s.AdmitPresence(ctx, ch, message.ClientInfo{User: "u", Client: "c3"}, 3); err != nil || ok {
		t.Fatalf("a fourth admission under limit 3: %v, %v", ok, err)
	}
	if n, _, err := s.PresenceStats(ctx, ch); err != nil || n != 3 {
		t.Fatalf("after a refused admission %d entries (%v), want 3: the refused one must not stay", n, err)
	}
	if err := s.RemovePresence(ctx, ch, "c1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AdmitPresence(ctx, ch, message.ClientInfo{User: "u", Client: "c3"}, 3); err != nil || !ok {
		t.Fatalf("admission after a release: %v, %v", ok, err)
	}

	stores := []store.Store{s}
	if h.Peer != nil {
		p := h.Peer(t, s)
		t.Cleanup(func() { _ = p.Close() })
		stores = append(stores, p)
	}
	race := Channel(t) + "-race"
	const limit, tries = 5, 24
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, tries)
	for i := range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := stores[i%len(stores)].AdmitPresence(ctx, race, message.ClientInfo{User: "u", Client: fmt.Sprint("r", i)}, limit)
			if err != nil {
				errs <- err
			}
			if ok {
				admitted.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n, _, err := s.PresenceStats(ctx, race)
	if err != nil {
		t.Fatal(err)
	}
	if admitted.Load() != limit || n != limit {
		t.Fatalf("%d racing admissions under limit %d: %d admitted, %d entries stayed; want exactly %d", tries, limit, admitted.Load(), n, limit)
	}
}

func testPresenceTTL(t *testing.T, h Harness) {
	s := newStore(t, h, Options{PresenceTTL: 1500 * time.Millisecond})
	ch := Channel(t)
	ctx := ctxT(t)
	ghost := message.ClientInfo{User: "ghost", Client: "dead-node-conn"}
	live := message.ClientInfo{User: "live", Client: "live-conn"}
	for _, e := range []message.ClientInfo{ghost, live} {
		if err := s.AddPresence(ctx, ch, e); err != nil {
			t.Fatal(err)
		}
	}
	// Refresh only the live entry, twice, across more than one TTL: once
	// alone, once in a batch (the way nodes refresh).
	time.Sleep(900 * time.Millisecond)
	if err := s.AddPresence(ctx, ch, live); err != nil {
		t.Fatal(err)
	}
	time.Sleep(900 * time.Millisecond)
	if err := s.AddPresences(ctx, []store.PresenceEntry{{Channel: ch, Info: live}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["dead-node-conn"]; ok {
		t.Fatalf("an entry not refreshed for longer than its TTL is still present: %+v", got)
	}
	if _, ok := got["live-conn"]; !ok {
		t.Fatalf("a refreshed entry expired: %+v", got)
	}
	if clients, users, _ := s.PresenceStats(ctx, ch); clients != 1 || users != 1 {
		t.Fatalf("stats count the ghost: %d clients, %d users", clients, users)
	}
}

// AddPresences adds and refreshes like AddPresence per entry, across
// channels and past one statement's worth of rows; of two entries for one
// key the later wins; a bad entry is refused.
func testPresenceBatch(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	chans := []string{Channel(t) + "-a", Channel(t) + "-b", Channel(t) + "-c"}
	if err := s.AddPresence(ctx, chans[0], message.ClientInfo{User: "old", Client: "c0"}); err != nil {
		t.Fatal(err)
	}
	var batch []store.PresenceEntry
	for i := range 2500 {
		batch = append(batch, store.PresenceEntry{Channel: chans[i%3], Info: message.ClientInfo{
			User: fmt.Sprintf("u%d", i%7), Client: fmt.Sprintf("c%d", i), ConnInfo: []byte(`{"i":1}`)}})
	}
	// The same key twice: the later entry wins.
	batch = append(batch, store.PresenceEntry{Channel: chans[0], Info: message.ClientInfo{User: "new", Client: "c0", ChanInfo: []byte(`{"v":2}`)}})
	if err := s.AddPresences(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		got, err := s.Presence(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		want := 834 // 2500 entries over three channels: 834, 833, 833
		if i > 0 {
			want = 833
		}
		if len(got) != want {
			t.Fatalf("channel %d: %d entries, want %d", i, len(got), want)
		}
		if e := got[fmt.Sprintf("c%d", i+3)]; e.User != fmt.Sprintf("u%d", (i+3)%7) || string(e.ConnInfo) != `{"i":1}` {
			t.Fatalf("channel %d: entry %+v", i, e)
		}
	}
	if got, _ := s.Presence(ctx, chans[0]); got["c0"].User != "new" || string(got["c0"].ChanInfo) != `{"v":2}` {
		t.Fatalf("the later entry of a key should win: %+v", got["c0"])
	}
	if err := s.AddPresences(ctx, []store.PresenceEntry{{Channel: chans[0], Info: message.ClientInfo{User: "x"}}}); err == nil {
		t.Fatal("an entry without a client id was accepted")
	}
	if err := s.AddPresences(ctx, nil); err != nil {
		t.Fatalf("an empty batch: %v", err)
	}
}

func testBadInput(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	ch := Channel(t)
	checks := map[string]error{}
	_, err := s.Append(ctx, "", pub("x"), keep)
	checks["Append empty channel"] = err
	_, err = s.Append(ctx, ch, nil, keep)
	checks["Append nil publication"] = err
	_, err = s.Append(ctx, ch, pub("x"), store.AppendOptions{HistorySize: -1})
	checks["Append negative size"] = err
	_, _, err = s.History(ctx, "", store.HistoryOptions{Limit: -1})
	checks["History empty channel"] = err
	_, err = s.Position(ctx, "")
	checks["Position empty channel"] = err
	checks["MarkRead empty user"] = s.MarkRead(ctx, ch, "", 1)
	_, err = s.ReadStates(ctx, "", []string{ch})
	checks["ReadStates empty user"] = err
	checks["AddPresence without client"] = s.AddPresence(ctx, ch, message.ClientInfo{User: "u"})
	_, err = s.Receipts(ctx, "", 10)
	checks["Receipts empty channel"] = err
	_, err = s.Receipts(ctx, ch, 0)
	checks["Receipts limit 0"] = err
	for what, err := range checks {
		if err == nil {
			t.Errorf("%s: no error", what)
		} else if errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: bad input reported as unavailable: %v", what, err)
		}
	}
	// Nothing was stored by the rejected calls.
	if pos, err := s.Position(ctx, ch); err != nil || pos.Offset != 0 {
		t.Fatalf("position after rejected appends: %+v, %v", pos, err)
	}
}

func testCanceled(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ch := Channel(t)
	if _, err := s.Append(ctx, ch, pub("x"), keep); err == nil {
		t.Fatal("Append with a canceled context succeeded")
	}
	if pos, err := s.Position(context.Background(), ch); err != nil || pos.Offset != 0 {
		t.Fatalf("a canceled Append stored something: %+v, %v", pos, err)
	}
}

func testPeers(t *testing.T, h Harness) {
	a := newStore(t, h, Options{})
	b := h.Peer(t, a)
	t.Cleanup(func() { _ = b.Close() })
	ch := Channel(t)
	// Before the channel's first publication every peer hands out the same
	// position (reading creates no stream, so it cannot come from one).
	pa, errA := a.Position(ctxT(t), ch)
	pb, errB := b.Position(ctxT(t), ch)
	if errA != nil || errB != nil || pa != pb {
		t.Fatalf("peers' positions before the first publication: %+v (%v), %+v (%v)", pa, errA, pb, errB)
	}
	r1 := mustAppend(t, a, ch, "from a", keep)
	if r1.Position.Epoch != pa.Epoch {
		t.Fatalf("first publication's epoch %q, position handed out before: %q", r1.Position.Epoch, pa.Epoch)
	}
	r2 := mustAppend(t, b, ch, "from b", keep)
	if r1.Position.Epoch != r2.Position.Epoch || r2.Publication.Offset != 2 {
		t.Fatalf("peers disagree: %+v then %+v", r1.Position, r2.Position)
	}
	pubs, _ := history(t, a, ch, store.HistoryOptions{Limit: -1})
	if len(pubs) != 2 || string(pubs[1].Data) != "from b" {
		t.Fatalf("a does not see b's publication: %+v", pubs)
	}
	if err := b.AddPresence(ctxT(t), ch, message.ClientInfo{User: "u", Client: "on-b"}); err != nil {
		t.Fatal(err)
	}
	if p, err := a.Presence(ctxT(t), ch); err != nil || len(p) != 1 {
		t.Fatalf("a does not see b's presence: %+v, %v", p, err)
	}
}

// The outbox keeps each channel's newest unsent position, shared by peers;
// clearing an older position (a sweep that raced a newer mark) keeps it.
func testOutbox(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ch := Channel(t)
	find := func(s store.Store) (message.StreamPosition, bool) {
		t.Helper()
		entries, err := s.Unsent(ctxT(t), 100000)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range entries {
			if u.Channel == ch {
				return u.Position, true
			}
		}
		return message.StreamPosition{}, false
	}
	three, two := message.StreamPosition{Offset: 3, Epoch: "e1"}, message.StreamPosition{Offset: 2, Epoch: "e1"}
	for _, pos := range []message.StreamPosition{three, two} {
		if err := s.MarkUnsent(ctxT(t), ch, pos); err != nil {
			t.Fatal(err)
		}
	}
	if pos, ok := find(s); !ok || pos != three {
		t.Fatalf("unsent %+v %v, want %+v", pos, ok, three)
	}
	if h.Peer != nil {
		peer := h.Peer(t, s)
		t.Cleanup(func() { _ = peer.Close() })
		if pos, ok := find(peer); !ok || pos != three {
			t.Fatalf("a peer sees %+v %v, want %+v", pos, ok, three)
		}
	}
	if err := s.ClearUnsent(ctxT(t), ch, two); err != nil {
		t.Fatal(err)
	}
	if _, ok := find(s); !ok {
		t.Fatal("clearing an older position removed the newest")
	}
	if err := s.ClearUnsent(ctxT(t), ch, three); err != nil {
		t.Fatal(err)
	}
	if pos, ok := find(s); ok {
		t.Fatalf("cleared entry still there: %+v", pos)
	}
	// A new epoch replaces an entry whatever its offset.
	if err := s.MarkUnsent(ctxT(t), ch, three); err != nil {
		t.Fatal(err)
	}
	fresh := message.StreamPosition{Offset: 1, Epoch: "e2"}
	if err := s.MarkUnsent(ctxT(t), ch, fresh); err != nil {
		t.Fatal(err)
	}
	if pos, _ := find(s); pos != fresh {
		t.Fatalf("after a new epoch: %+v, want %+v", pos, fresh)
	}
}
