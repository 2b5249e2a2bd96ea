// Package brokertest is the contract every broker.Broker implementation
// passes: an implementation's tests call Run with a Harness that builds
// brokers of one cluster (they reach each other like replicas do).
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/message"
)

// Harness builds the brokers under test.
type Harness struct {
	// New returns n brokers that reach each other, not yet running. The suite
	// runs them and closes them.
	New func(t *testing.T, n int) []broker.Broker
}

// Wait is how long the suite waits for something that should happen.
const Wait = 15 * time.Second

var seq atomic.Uint64

// Channel returns a channel name unique to this process.
func Channel(prefix string) string {
	return fmt.Sprintf("%s:%d", prefix, seq.Add(1))
}

// Event is one handler call.
type Event struct {
	Kind    string // "pub", "join", "leave", "control"
	Channel string
	Pub     *message.Publication
	SP      message.StreamPosition
	Info    *message.ClientInfo
	Data    []byte
}

// Recorder is a broker.Handler (and ResubscribeHandler) that remembers every
// call and checks that calls for one channel never overlap.
type Recorder struct {
	mu           sync.Mutex
	events       []Event
	resubscribed [][]string
	inFlight     map[string]int
	overlaps     int
	largestBatch int
	changed      chan struct{}

	// OnResubscribed, when set, runs inside Resubscribed (set it before Run).
	OnResubscribed func(channels []string)
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{inFlight: map[string]int{}, changed: make(chan struct{}, 1)}
}

var _ broker.ResubscribeHandler = (*Recorder)(nil)

func (r *Recorder) enter(ch string) {
	r.mu.Lock()
	r.inFlight[ch]++
	if r.inFlight[ch] > 1 {
		r.overlaps++
	}
	r.mu.Unlock()
	// Give an overlapping call the chance to show itself.
	time.Sleep(time.Microsecond)
}

func (r *Recorder) record(e Event) {
	r.mu.Lock()
	r.inFlight[e.Channel]--
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// HandlePublication implements broker.Handler.
func (r *Recorder) HandlePublication(channel string, pub *message.Publication, sp message.StreamPosition) {
	r.enter(channel)
	r.record(Event{Kind: "pub", Channel: channel, Pub: pub, SP: sp})
}

// HandlePublications implements broker.BatchHandler: each publication is
// recorded as HandlePublication records it, so the contract's ordering
// checks hold for brokers that batch.
func (r *Recorder) HandlePublications(channel string, pubs []*message.Publication, sps []message.StreamPosition) {
	r.enter(channel)
	r.mu.Lock()
	r.largestBatch = max(r.largestBatch, len(pubs))
	for i, pub := range pubs[:len(pubs)-1] {
		r.events = append(r.events, Event{Kind: "pub", Channel: channel, Pub: pub, SP: sps[i]})
	}
	r.mu.Unlock()
	r.record(Event{Kind: "pub", Channel: channel, Pub: pubs[len(pubs)-1], SP: sps[len(pubs)-1]})
}

// LargestBatch is the most publications one HandlePublications call carried.
func (r *Recorder) LargestBatch() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.largestBatch
}

var _ broker.BatchHandler = (*Recorder)(nil)

// Gated is a Recorder whose first delivery blocks until Release is closed,
// so what is published meanwhile piles up in the broker (tests of batching).
type Gated struct {
	*Recorder
	once    sync.Once
	Entered chan struct{} // closed when the first delivery is held
	Release chan struct{} // close it to let deliveries go on
}

// NewGated returns a gated recorder.
func NewGated() *Gated {
	return &Gated{Recorder: NewRecorder(), Entered: make(chan struct{}), Release: make(chan struct{})}
}

// HandlePublication implements broker.Handler.
func (g *Gated) HandlePublication(channel string, pub *message.Publication, sp message.StreamPosition) {
	g.once.Do(func() { close(g.Entered); <-g.Release })
	g.Recorder.HandlePublication(channel, pub, sp)
}

// HandleJoin implements broker.Handler.
func (r *Recorder) HandleJoin(channel string, info *message.ClientInfo) {
	r.enter(channel)
	r.record(Event{Kind: "join", Channel: channel, Info: info})
}

// HandleLeave implements broker.Handler.
func (r *Recorder) HandleLeave(channel string, info *message.ClientInfo) {
	r.enter(channel)
	r.record(Event{Kind: "leave", Channel: channel, Info: info})
}

// HandleControl implements broker.Handler.
func (r *Recorder) HandleControl(data []byte) {
	r.enter("")
	r.record(Event{Kind: "control", Data: data})
}

// Resubscribed implements broker.ResubscribeHandler.
func (r *Recorder) Resubscribed(channels []string) {
	if r.OnResubscribed != nil {
		r.OnResubscribed(channels)
	}
	r.mu.Lock()
	r.resubscribed = append(r.resubscribed, append([]string(nil), channels...))
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Resubscriptions returns the channel lists passed to Resubscribed so far.
func (r *Recorder) Resubscriptions() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.resubscribed...)
}

// Events returns the events of kind on channel ("" kind: all kinds).
func (r *Recorder) Events(kind, channel string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if (kind == "" || e.Kind == kind) && e.Channel == channel {
			out = append(out, e)
		}
	}
	return out
}

// Overlaps counts handler calls for one channel that ran concurrently.
func (r *Recorder) Overlaps() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.overlaps
}

// WaitFor waits until cond holds, failing the test after Wait.
func (r *Recorder) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(Wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-r.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Node is a running broker with its recorder.
type Node struct {
	B   broker.Broker
	Rec *Recorder
	// Done is closed when Run returned; Err holds what it returned.
	Done   chan struct{}
	Err    error
	cancel context.CancelFunc
}

// Start runs b with a fresh recorder and waits until it is Ready. The test's
// cleanup stops it, closes it and checks that Run returned.
func Start(t testing.TB, b broker.Broker) *Node {
	t.Helper()
	return StartWith(t, b, NewRecorder())
}

// StartWith is Start with a recorder the caller prepared.
func StartWith(t testing.TB, b broker.Broker, rec *Recorder) *Node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{B: b, Rec: rec, Done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(n.Done)
		n.Err = b.Run(ctx, n.Rec)
	}()
	t.Cleanup(func() {
		cancel()
		_ = b.Close()
		select {
		case <-n.Done:
		case <-time.After(Wait):
			t.Errorf("Run did not return after its context was canceled and Close")
		}
	})
	WaitReady(t, b)
	return n
}

// WaitReady waits until b.Ready returns nil.
func WaitReady(t testing.TB, b broker.Broker) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = b.Ready(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("broker not ready after %v: %v", Wait, err)
}

func startAll(t *testing.T, h Harness, n int) []*Node {
	bs := h.New(t, n)
	if len(bs) != n {
		t.Fatalf("harness returned %d brokers, want %d", len(bs), n)
	}
	nodes := make([]*Node, n)
	for i, b := range bs {
		nodes[i] = Start(t, b)
	}
	return nodes
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return ctx
}

// Pub builds a publication with every field set, binary data included.
func Pub(offset uint64, data string) *message.Publication {
	return &message.Publication{
		Offset: offset,
		Data:   append([]byte(data), 0, 0xff, '"'),
		Info:   &message.ClientInfo{User: "alice", Client: "c-1", ConnInfo: []byte(`{"name":"Alice"}`), ChanInfo: []byte{1, 2, 3}},
		Tags:   map[string]string{"kind": "text", "emoji": "✓"},
		Time:   1700000000123,
	}
}

func samePub(a, b *message.Publication) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Offset != b.Offset || !bytes.Equal(a.Data, b.Data) || a.Time != b.Time || !maps.Equal(a.Tags, b.Tags) {
		return false
	}
	return sameInfo(a.Info, b.Info)
}

func sameInfo(a, b *message.ClientInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.User == b.User && a.Client == b.Client && bytes.Equal(a.ConnInfo, b.ConnInfo) && bytes.Equal(a.ChanInfo, b.ChanInfo)
}

// barrier publishes a marker on a channel every node subscribed to, from
// publisher, and waits until every node has it. Messages that publisher sent
// before the marker have then been delivered, if they were going to be: both
// implementations deliver one publisher's messages to a node in order.
func barrier(t *testing.T, publisher *Node, nodes []*Node, marker string) {
	t.Helper()
	ctx := ctxT(t)
	for _, n := range nodes {
		if err := n.B.Subscribe(ctx, marker); err != nil {
			t.Fatal(err)
		}
	}
	if err := publisher.B.Publish(ctx, marker, Pub(1, "marker"), message.StreamPosition{Offset: 1, Epoch: "m"}); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		n.Rec.WaitFor(t, fmt.Sprintf("marker on node %d", i), func() bool { return len(n.Rec.Events("pub", marker)) > 0 })
	}
}

// Run runs the whole contract.
func Run(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"DeliversToSubscribedNodesOnly", testSubscribedOnly},
		{"SubscribeIsIdempotentAndUnsubscribeStops", testSubscribeIdempotent},
		{"SubscribeManyAtOnce", testSubscribeMany},
		{"SubscribeBeforeRun", testSubscribeBeforeRun},
		{"JoinAndLeave", testJoinLeave},
		{"ControlReachesEveryNodeIncludingSelf", testControl},
		{"OrderFromOnePublisher", testOrder},
		{"ConcurrentPublishersLoseNothing", testConcurrent},
		{"ReadyAndClose", testReadyClose},
		{"BadInput", testBadInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

func testSubscribedOnly(t *testing.T, h Harness) {
	nodes := startAll(t, h, 3)
	ctx := ctxT(t)
	ch := Channel("room")
	for _, n := range nodes[:2] {
		if err := n.B.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	sent := Pub(7, "hello")
	sp := message.StreamPosition{Offset: 7, Epoch: "ep-1"}
	if err := nodes[2].B.Publish(ctx, ch, sent, sp); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[:2] {
		n.Rec.WaitFor(t, fmt.Sprintf("publication on node %d", i), func() bool { return len(n.Rec.Events("pub", ch)) > 0 })
		got := n.Rec.Events("pub", ch)
		if len(got) != 1 || !samePub(got[0].Pub, sent) || got[0].SP != sp {
			t.Fatalf("node %d received %+v (sp %+v), want %+v (sp %+v)", i, got[0].Pub, got[0].SP, sent, sp)
		}
	}
	barrier(t, nodes[2], nodes, Channel("marker"))
	if got := nodes[2].Rec.Events("", ch); len(got) != 0 {
		t.Fatalf("a node that did not subscribe received %d messages", len(got))
	}
	for i, n := range nodes[:2] {
		if got := n.Rec.Events("pub", ch); len(got) != 1 {
			t.Fatalf("node %d received the publication %d times", i, len(got))
		}
	}
}

func testSubscribeIdempotent(t *testing.T, h Harness) {
	nodes := startAll(t, h, 2)
	ctx := ctxT(t)
	ch := Channel("room")
	for i := 0; i < 2; i++ {
		if err := nodes[1].B.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[0].B.Publish(ctx, ch, Pub(1, "a"), message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	barrier(t, nodes[0], nodes, Channel("marker"))
	if got := nodes[1].Rec.Events("pub", ch); len(got) != 1 {
		t.Fatalf("subscribed twice: received %d copies, want 1", len(got))
	}
	// One Unsubscribe undoes any number of Subscribes: counting is the hub's job.
	if err := nodes[1].B.Unsubscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].B.Unsubscribe(ctx, ch); err != nil {
		t.Fatalf("unsubscribing twice: %v", err)
	}
	if err := nodes[0].B.Publish(ctx, ch, Pub(2, "b"), message.StreamPosition{Offset: 2, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	barrier(t, nodes[0], nodes, Channel("marker"))
	if got := nodes[1].Rec.Events("pub", ch); len(got) != 1 {
		t.Fatalf("after Unsubscribe: received %d publications, want still 1", len(got))
	}
	// Subscribing again works.
	if err := nodes[1].B.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].B.Publish(ctx, ch, Pub(3, "c"), message.StreamPosition{Offset: 3, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	nodes[1].Rec.WaitFor(t, "publication after resubscribing", func() bool { return len(nodes[1].Rec.Events("pub", ch)) == 2 })
}

func testSubscribeMany(t *testing.T, h Harness) {
	nodes := startAll(t, h, 2)
	ctx := ctxT(t)
	var chans []string
	for i := 0; i < 50; i++ {
		chans = append(chans, Channel("many"))
	}
	// Names a topic exchange would treat as wildcards or separators must still
	// be exact channels.
	odd := []string{"a.b", "a.*", "a.#", "#", "*", "dm:#alice,bob", string(bytes.Repeat([]byte("x"), 300)), "ünïcode:room"}
	for i := range odd {
		odd[i] = fmt.Sprintf("%s-%d", odd[i], seq.Add(1))
	}
	chans = append(chans, odd...)
	if err := nodes[1].B.Subscribe(ctx, chans...); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		if err := nodes[0].B.Publish(ctx, ch, Pub(uint64(i+1), ch), message.StreamPosition{Offset: uint64(i + 1), Epoch: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range chans {
		nodes[1].Rec.WaitFor(t, "publication on "+ch, func() bool { return len(nodes[1].Rec.Events("pub", ch)) == 1 })
		got := nodes[1].Rec.Events("pub", ch)[0]
		if !bytes.HasPrefix(got.Pub.Data, []byte(ch)) {
			t.Fatalf("channel %q delivered data of another channel: %q", ch, got.Pub.Data)
		}
	}
	// A wildcard-looking channel must not catch others.
	if err := nodes[1].B.Unsubscribe(ctx, chans...); err != nil {
		t.Fatal(err)
	}
	plain := Channel("a")
	if err := nodes[0].B.Publish(ctx, plain, Pub(1, "x"), message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	barrier(t, nodes[0], nodes, Channel("marker"))
	if got := nodes[1].Rec.Events("pub", plain); len(got) != 0 {
		t.Fatalf("an unsubscribed channel was delivered")
	}
	for _, ch := range chans {
		if got := nodes[1].Rec.Events("pub", ch); len(got) != 1 {
			t.Fatalf("channel %q delivered %d times", ch, len(got))
		}
	}
}

func testSubscribeBeforeRun(t *testing.T, h Harness) {
	bs := h.New(t, 2)
	ch := Channel("early")
	if err := bs[1].Subscribe(ctxT(t), ch); err != nil {
		t.Fatalf("Subscribe before Run: %v", err)
	}
	a, b := Start(t, bs[0]), Start(t, bs[1])
	if err := a.B.Publish(ctxT(t), ch, Pub(1, "x"), message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	b.Rec.WaitFor(t, "publication on a channel subscribed before Run", func() bool { return len(b.Rec.Events("pub", ch)) == 1 })
}

func testJoinLeave(t *testing.T, h Harness) {
	nodes := startAll(t, h, 2)
	ctx := ctxT(t)
	ch := Channel("room")
	if err := nodes[1].B.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	info := &message.ClientInfo{User: "bob", Client: "c-9", ConnInfo: []byte("ci"), ChanInfo: []byte("chi")}
	if err := nodes[0].B.PublishJoin(ctx, ch, info); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].B.PublishLeave(ctx, ch, info); err != nil {
		t.Fatal(err)
	}
	nodes[1].Rec.WaitFor(t, "join and leave", func() bool { return len(nodes[1].Rec.Events("", ch)) == 2 })
	got := nodes[1].Rec.Events("", ch)
	if got[0].Kind != "join" || got[1].Kind != "leave" || !sameInfo(got[0].Info, info) || !sameInfo(got[1].Info, info) {
		t.Fatalf("received %+v, %+v", got[0], got[1])
	}
}

func testControl(t *testing.T, h Harness) {
	nodes := startAll(t, h, 3)
	payload := []byte("disconnect user 42\x00\xff")
	if err := nodes[0].B.PublishControl(ctxT(t), payload); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		n.Rec.WaitFor(t, fmt.Sprintf("control on node %d", i), func() bool { return len(n.Rec.Events("control", "")) > 0 })
		if got := n.Rec.Events("control", ""); len(got) != 1 || !bytes.Equal(got[0].Data, payload) {
			t.Fatalf("node %d got control %+v", i, got)
		}
	}
}

func testOrder(t *testing.T, h Harness) {
	nodes := startAll(t, h, 2)
	ctx := ctxT(t)
	ch := Channel("ordered")
	if err := nodes[1].B.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := 1; i <= n; i++ {
		if err := nodes[0].B.Publish(ctx, ch, Pub(uint64(i), fmt.Sprint(i)), message.StreamPosition{Offset: uint64(i), Epoch: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	nodes[1].Rec.WaitFor(t, "all publications", func() bool { return len(nodes[1].Rec.Events("pub", ch)) == n })
	for i, e := range nodes[1].Rec.Events("pub", ch) {
		if e.Pub.Offset != uint64(i+1) || e.SP.Offset != uint64(i+1) {
			t.Fatalf("delivery %d carries offset %d", i, e.Pub.Offset)
		}
	}
}

func testConcurrent(t *testing.T, h Harness) {
	nodes := startAll(t, h, 3)
	ctx := ctxT(t)
	chans := []string{Channel("busy"), Channel("busy")}
	if err := nodes[2].B.Subscribe(ctx, chans...); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publisher := nodes[w%2]
			for i := 0; i < each; i++ {
				off := uint64(w*each + i + 1)
				if err := publisher.B.Publish(ctx, chans[w%2], Pub(off, fmt.Sprint(off)), message.StreamPosition{Offset: off, Epoch: "e"}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent publish: %v", err)
	}
	rec := nodes[2].Rec
	rec.WaitFor(t, "every publication", func() bool {
		return len(rec.Events("pub", chans[0]))+len(rec.Events("pub", chans[1])) == writers*each
	})
	seen := map[uint64]bool{}
	for _, ch := range chans {
		for _, e := range rec.Events("pub", ch) {
			if seen[e.Pub.Offset] {
				t.Fatalf("offset %d delivered twice", e.Pub.Offset)
			}
			seen[e.Pub.Offset] = true
		}
	}
	if o := rec.Overlaps(); o != 0 {
		t.Fatalf("handler calls for one channel overlapped %d times", o)
	}
}

func testReadyClose(t *testing.T, h Harness) {
	bs := h.New(t, 1)
	b := bs[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := NewRecorder()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, rec) }()
	WaitReady(t, b)
	if err := b.Run(ctx, rec); err == nil {
		t.Fatal("a second Run succeeded")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after Close, want nil", err)
		}
	case <-time.After(Wait):
		t.Fatal("Run did not return after Close")
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if err := b.Ready(rctx); err == nil {
		t.Fatal("Ready after Close returned nil")
	}
	if err := b.Publish(context.Background(), "x", Pub(1, "x"), message.StreamPosition{}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := b.Subscribe(context.Background(), "x"); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func testBadInput(t *testing.T, h Harness) {
	nodes := startAll(t, h, 1)
	b := nodes[0].B
	ctx := ctxT(t)
	for what, err := range map[string]error{
		"Subscribe empty channel":   b.Subscribe(ctx, ""),
		"Unsubscribe empty channel": b.Unsubscribe(ctx, ""),
		"Publish empty channel":     b.Publish(ctx, "", Pub(1, "x"), message.StreamPosition{}),
		"Publish nil publication":   b.Publish(ctx, "c", nil, message.StreamPosition{}),
		"PublishJoin nil info":      b.PublishJoin(ctx, "c", nil),
		"PublishLeave empty chan":   b.PublishLeave(ctx, "", &message.ClientInfo{}),
	} {
		if err == nil {
			t.Errorf("%s: no error", what)
		}
	}
	// The broker still works after rejecting bad input.
	WaitReady(t, b)
}
