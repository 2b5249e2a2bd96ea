package node_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/centrifugal/protocol"
	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/broker"
	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// recorder is a local subscriber that decodes what the hub hands it.
type recorder struct {
	mu           sync.Mutex
	offsets      []uint64
	disconnected []codes.Disconnect
}

func (r *recorder) ID() string              { return "rec" }
func (r *recorder) UserID() string          { return "u" }
func (r *recorder) Protocol() protocol.Type { return protocol.TypeProtobuf }
func (r *recorder) DeliverPush([]byte)      {}
func (r *recorder) Disconnect(d codes.Disconnect) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disconnected = append(r.disconnected, d)
}
func (r *recorder) DeliverPublication(_ string, offset uint64, data []byte) {
	var rep protocol.Reply
	if err := rep.UnmarshalCF(data); err != nil || rep.Push == nil || rep.Push.Pub == nil || rep.Push.Pub.Offset != offset {
		panic("hub delivered something that is not the publication it announced")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offsets = append(r.offsets, offset)
}

func (r *recorder) DeliverPublications(channel string, offsets []uint64, data [][]byte) {
	for i, d := range data {
		r.DeliverPublication(channel, offsets[i], d)
	}
}

func newNode(t *testing.T, b broker.Broker, s store.Store) *node.Node {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.AllowAnonymous = true
	n, err := node.New(cfg, b, s, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// subscribedNode is a node on a memory store and broker (closed with the
// test) with one recorder subscribed to ch.
func subscribedNode(t *testing.T, ch string) (*node.Node, *storememory.Store, *recorder) {
	t.Helper()
	s := storememory.New(storememory.Options{})
	t.Cleanup(func() { _ = s.Close() })
	b := brokermemory.New()
	t.Cleanup(func() { _ = b.Close() })
	n := newNode(t, b, s)
	rec := &recorder{}
	if err := n.Subscribe(context.Background(), ch, rec); err != nil {
		t.Fatal(err)
	}
	return n, s, rec
}

// A publication whose offset skips ahead of what the node delivered last is
// preceded by the missing ones, read from the store; duplicates are dropped.
func TestGapFilledFromStore(t *testing.T) {
	ctx := context.Background()
	const ch = "room:gap"
	n, s, rec := subscribedNode(t, ch)
	var last store.AppendResult
	for i := 0; i < 5; i++ {
		res, err := s.Append(ctx, ch, &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 100, HistoryTTL: 3600e9})
		if err != nil {
			t.Fatal(err)
		}
		last = res
		if i == 0 {
			n.HandlePublication(ch, res.Publication, res.Position) // offset 1 arrives
		}
	}
	// 2, 3, 4 were lost in transit; 5 arrives, then 3 arrives late, then 5 again.
	n.HandlePublication(ch, last.Publication, last.Position)
	pubs, pos, err := s.History(ctx, ch, store.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	n.HandlePublication(ch, pubs[2], pos)
	n.HandlePublication(ch, last.Publication, last.Position)
	// An ephemeral publication (typing) passes without touching the order.
	n.HandlePublication(ch, &message.Publication{Data: []byte(`{}`)}, message.StreamPosition{})
	n.WaitGapFills()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []uint64{1, 2, 3, 4, 5, 0}
	if len(rec.offsets) != len(want) {
		t.Fatalf("delivered %v, want %v", rec.offsets, want)
	}
	for i := range want {
		if rec.offsets[i] != want[i] {
			t.Fatalf("delivered %v, want %v", rec.offsets, want)
		}
	}
}

// A gap the store cannot fill (history trimmed) disconnects local subscribers
// with "insufficient state" so their clients recover on reconnect.
func TestUnfillableGapDisconnects(t *testing.T) {
	ctx := context.Background()
	const ch = "room:trimmed"
	n, s, rec := subscribedNode(t, ch)
	var res store.AppendResult
	for i := 0; i < 5; i++ {
		var err error
		res, err = s.Append(ctx, ch, &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 1, HistoryTTL: 3600e9})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			n.HandlePublication(ch, res.Publication, res.Position)
		}
	}
	n.HandlePublication(ch, res.Publication, res.Position)
	n.WaitGapFills()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.disconnected) == 0 || rec.disconnected[0] != codes.DisconnectInsufficientState {
		t.Fatalf("disconnects %v, want insufficient state", rec.disconnected)
	}
}

// The broker subscription follows the channel's first and last local subscriber.
func TestBrokerSubscriptionFollowsLocalSubscribers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := storememory.New(storememory.Options{})
	defer s.Close()
	b := brokermemory.New()
	defer b.Close()
	n := newNode(t, b, s)
	done := make(chan error)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rec := &recorder{}
	const ch = "room:follow"
	if err := n.Subscribe(ctx, ch, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Publish(ctx, ch, []byte(`{}`), nil, node.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	n.Unsubscribe(ctx, ch, rec)
	if _, err := n.Publish(ctx, ch, []byte(`{}`), nil, node.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if n.Hub().NumSubscribers(ch) != 0 {
		t.Fatal("subscriber left behind")
	}
}

// Each stored publication is timed in both stages before its publisher is
// answered (parley_publish_stage_seconds): the store's append and the
// broker's publish. An ephemeral one (never stored) is in neither.
func TestPublishStagesAreTimed(t *testing.T) {
	n, _, _ := subscribedNode(t, "room:stages")
	ctx := context.Background()
	for range 3 {
		if _, err := n.Publish(ctx, "room:stages", []byte(`{}`), nil, node.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.PublishEphemeral(ctx, "room:stages", []byte(`{}`), nil, nil); err != nil {
		t.Fatal(err)
	}
	families, err := n.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "parley_publish_stage_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" {
					got[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if got["append"] != 3 || got["broker"] != 3 {
		t.Fatalf("stage samples %v, want 3 appends and 3 broker publishes", got)
	}
}
