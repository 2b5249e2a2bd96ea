package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/broker/brokertest"
	"github.com/parley-chat/parley/chatserver/internal/leakcheck"
	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/message"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestContract(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T, n int) []broker.Broker {
			top := testenv.NewTopology(t)
			out := make([]broker.Broker, n)
			for i := range out {
				out[i] = newBroker(t, top, "", amqp.Options{})
			}
			return out
		},
	})
}

func TestContractPartitioned(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T, n int) []broker.Broker {
			top := testenv.NewTopology(t)
			out := make([]broker.Broker, n)
			for i := range out {
				out[i] = newBroker(t, top, "", amqp.Options{Partitions: 4})
			}
			return out
		},
	})
}

func TestNewRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]amqp.Options{
		"no exchange":      {URL: testenv.AMQPURL(), ControlExchange: "c"},
		"no control":       {URL: testenv.AMQPURL(), Exchange: "e"},
		"same exchanges":   {URL: testenv.AMQPURL(), Exchange: "e", ControlExchange: "e"},
		"bad url":          {URL: "http://user:s3cret@host/", Exchange: "e", ControlExchange: "c"},
		"node id with dot": {URL: testenv.AMQPURL(), Exchange: "e", ControlExchange: "c", NodeID: "a.b"},
	} {
		_, err := amqp.New(opts)
		if err == nil {
			t.Errorf("%s: New accepted %+v", name, opts)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error reveals the password: %v", name, err)
		}
	}
}

// TestMissingTopologyIsNotReady: the exchanges belong to the operator; until
// they exist the node reports not-ready naming the missing one, and becomes
// ready once they are declared, without a restart.
func TestMissingTopologyIsNotReady(t *testing.T) {
	top := testenv.UndeclaredTopology()
	b := newBroker(t, top, "", amqp.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx, brokertest.NewRecorder()) }()
	defer func() { cancel(); <-done }()

	var err error
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		err = b.Ready(ctxFor(t, time.Second))
		if err != nil && strings.Contains(err.Error(), top.Exchange) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "broker.exchange") || !strings.Contains(err.Error(), top.Exchange) || !errors.Is(err, amqp.ErrTopologyMissing) {
		t.Fatalf("Ready without the exchanges: %v; want an error naming broker.exchange %q", err, top.Exchange)
	}
	if err := b.Publish(ctxFor(t, time.Second), "room:1", brokertest.Pub(1, "x"), message.StreamPosition{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Publish without the exchanges: %v, want ErrUnavailable", err)
	}

	// The publication exchange alone is not enough: the control exchange is named next.
	if err := testenv.DeclareExchange(top.Exchange, "direct"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Delete() })
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		err = b.Ready(ctxFor(t, time.Second))
		if err != nil && strings.Contains(err.Error(), top.ControlExchange) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "broker.controlExchange") {
		t.Fatalf("Ready with only the publication exchange: %v; want an error naming broker.controlExchange", err)
	}

	if err := top.Declare(); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitReady(t, b)
}

// TestSubscriberConnectionDroppedMidStream cuts the subscriber's AMQP
// connection while a publisher streams. The subscriber reconnects, re-creates
// its queue and bindings and reports Resubscribed; every publication started
// after that is delivered, in order, without duplicates.
func TestSubscriberConnectionDroppedMidStream(t *testing.T) {
	top := testenv.NewTopology(t)
	proxy, err := tcpproxy.New(mustHost(t))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	pubB := newBroker(t, top, "", amqp.Options{})
	subB := newBroker(t, top, mustProxyURL(t, proxy), amqp.Options{})
	ch := brokertest.Channel("stream")
	if err := subB.Subscribe(context.Background(), ch); err != nil {
		t.Fatal(err)
	}

	var started atomic.Uint64 // last offset whose publish has started
	var resubAt atomic.Uint64 // started when the subscriber reported Resubscribed
	rec := brokertest.NewRecorder()
	rec.OnResubscribed = func(chans []string) {
		for _, c := range chans {
			if c == ch {
				resubAt.Store(started.Load())
			}
		}
	}
	publisher := brokertest.Start(t, pubB)
	sub := brokertest.StartWith(t, subB, rec)
	initialResubs := len(rec.Resubscriptions()) // the first connection reports the channel subscribed before Run

	var acked sync.Map
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		for off := uint64(1); ; off++ {
			select {
			case <-stop:
				pubDone <- nil
				return
			default:
			}
			started.Store(off)
			err := publisher.B.Publish(context.Background(), ch, brokertest.Pub(off, fmt.Sprint(off)), message.StreamPosition{Offset: off, Epoch: "e"})
			if err != nil {
				pubDone <- err
				return
			}
			acked.Store(off, true)
			time.Sleep(2 * time.Millisecond)
		}
	}()

	sub.Rec.WaitFor(t, "deliveries before the cut", func() bool { return len(sub.Rec.Events("pub", ch)) >= 50 })
	proxy.DropConnections()
	sub.Rec.WaitFor(t, "Resubscribed after the cut", func() bool { return len(rec.Resubscriptions()) > initialResubs })
	from := resubAt.Load()
	sub.Rec.WaitFor(t, "deliveries after reconnecting", func() bool {
		ev := sub.Rec.Events("pub", ch)
		return len(ev) > 0 && ev[len(ev)-1].Pub.Offset > from+50
	})
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatalf("the publisher (not cut) failed: %v", err)
	}
	last := started.Load()
	sub.Rec.WaitFor(t, "the last publication", func() bool {
		ev := sub.Rec.Events("pub", ch)
		return len(ev) > 0 && ev[len(ev)-1].Pub.Offset >= last-1
	})

	got := map[uint64]bool{}
	var prev uint64
	for _, e := range sub.Rec.Events("pub", ch) {
		if e.Pub.Offset <= prev {
			t.Fatalf("delivery out of order or duplicated: %d after %d", e.Pub.Offset, prev)
		}
		prev = e.Pub.Offset
		got[e.Pub.Offset] = true
	}
	sent, lostAfter, missedDuringCut := 0, 0, 0
	acked.Range(func(k, _ any) bool {
		sent++
		off := k.(uint64)
		if !got[off] {
			if off > from {
				lostAfter++
			} else {
				missedDuringCut++
			}
		}
		return true
	})
	t.Logf("acknowledged %d, delivered %d, missed while cut %d (recovered from history by the node), lost after Resubscribed %d",
		sent, len(got), missedDuringCut, lostAfter)
	if lostAfter != 0 {
		t.Fatalf("%d publications acknowledged after Resubscribed were not delivered", lostAfter)
	}
	if got := rec.Resubscriptions(); len(got[len(got)-1]) != 1 || got[len(got)-1][0] != ch {
		t.Fatalf("Resubscribed(%v), want [%s]", got[len(got)-1], ch)
	}
}

// TestPublisherConnectionDroppedMidStream cuts the publisher's connection
// while several goroutines publish: each Publish returns nil or
// ErrUnavailable promptly, and every acknowledged publication is delivered.
func TestPublisherConnectionDroppedMidStream(t *testing.T) {
	top := testenv.NewTopology(t)
	proxy, err := tcpproxy.New(mustHost(t))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	publisher := brokertest.Start(t, newBroker(t, top, mustProxyURL(t, proxy), amqp.Options{}))
	sub := brokertest.Start(t, newBroker(t, top, "", amqp.Options{}))
	ch := brokertest.Channel("pubcut")
	if err := sub.B.Subscribe(context.Background(), ch); err != nil {
		t.Fatal(err)
	}

	const writers = 4
	var next atomic.Uint64
	var acked sync.Map
	var sent, nAcked, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := next.Add(1)
				sent.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				err := publisher.B.Publish(ctx, ch, brokertest.Pub(off, "x"), message.StreamPosition{Offset: off, Epoch: "e"})
				cancel()
				switch {
				case err == nil:
					nAcked.Add(1)
					acked.Store(off, true)
				case errors.Is(err, broker.ErrUnavailable):
					failed.Add(1)
					if d := time.Since(start); d > 6*time.Second {
						t.Errorf("a failed publish took %v", d)
					}
					time.Sleep(10 * time.Millisecond)
				default:
					t.Errorf("publish: %v, want nil or ErrUnavailable", err)
					return
				}
			}
		}()
	}
	waitCount := func(what string, n int64, c *atomic.Int64) {
		deadline := time.Now().Add(brokertest.Wait)
		for c.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitCount("acks before the cut", 200, &nAcked)
	for i := 0; i < 3; i++ {
		proxy.DropConnections()
		before := nAcked.Load()
		waitCount("acks after the cut", before+100, &nAcked)
	}
	close(stop)
	wg.Wait()

	sub.Rec.WaitFor(t, "every acknowledged publication", func() bool {
		got := map[uint64]bool{}
		for _, e := range sub.Rec.Events("pub", ch) {
			got[e.Pub.Offset] = true
		}
		missing := 0
		acked.Range(func(k, _ any) bool {
			if !got[k.(uint64)] {
				missing++
			}
			return true
		})
		return missing == 0
	})
	t.Logf("sent %d, acknowledged %d, failed with ErrUnavailable %d, delivered %d, acknowledged but lost 0",
		sent.Load(), nAcked.Load(), failed.Load(), len(sub.Rec.Events("pub", ch)))
}

// TestBrokerOutage makes RabbitMQ unreachable: Ready fails, publishes fail
// fast with ErrUnavailable, subscriptions made meanwhile are recorded; when
// RabbitMQ is back the node is ready again and gets what it subscribed to.
func TestBrokerOutage(t *testing.T) {
	top := testenv.NewTopology(t)
	proxy, err := tcpproxy.New(mustHost(t))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	node := brokertest.Start(t, newBroker(t, top, mustProxyURL(t, proxy), amqp.Options{}))
	other := brokertest.Start(t, newBroker(t, top, "", amqp.Options{}))

	proxy.Disable()
	deadline := time.Now().Add(5 * time.Second)
	for node.B.Ready(ctxFor(t, time.Second)) == nil {
		if time.Now().After(deadline) {
			t.Fatal("still ready with RabbitMQ unreachable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := node.B.Publish(context.Background(), "room:x", brokertest.Pub(1, "x"), message.StreamPosition{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("publish during the outage: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publish during the outage took %v to fail", d)
	}
	ch := brokertest.Channel("during-outage")
	if err := node.B.Subscribe(context.Background(), ch); err != nil {
		t.Fatalf("subscribe during the outage: %v", err)
	}
	resubs := len(node.Rec.Resubscriptions())

	proxy.Enable()
	brokertest.WaitReady(t, node.B)
	node.Rec.WaitFor(t, "Resubscribed", func() bool { return len(node.Rec.Resubscriptions()) > resubs })
	if err := other.B.Publish(context.Background(), ch, brokertest.Pub(1, "after"), message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	node.Rec.WaitFor(t, "a publication on the channel subscribed during the outage", func() bool { return len(node.Rec.Events("pub", ch)) == 1 })
}

// TestExchangeDeletedWhileRunning: if the operator's exchange disappears the
// probe fails and readiness names it; redeclared, the node recovers.
func TestExchangeDeletedWhileRunning(t *testing.T) {
	top := testenv.NewTopology(t)
	node := brokertest.Start(t, newBroker(t, top, "", amqp.Options{}))
	ch := brokertest.Channel("room")
	if err := node.B.Subscribe(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if err := top.Delete(); err != nil {
		t.Fatal(err)
	}
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err = node.B.Ready(ctxFor(t, time.Second)); err != nil && strings.Contains(err.Error(), top.Exchange) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), top.Exchange) {
		t.Fatalf("Ready after the exchange was deleted: %v", err)
	}
	if err := top.Declare(); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitReady(t, node.B)
	other := brokertest.Start(t, newBroker(t, top, "", amqp.Options{}))
	if err := other.B.Publish(context.Background(), ch, brokertest.Pub(1, "x"), message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	node.Rec.WaitFor(t, "delivery after the topology came back", func() bool { return len(node.Rec.Events("pub", ch)) == 1 })
}

// TestMalformedMessagesAreDeadLettered: foreign or corrupt messages on the
// exchange never crash a node, which keeps delivering; they are rejected to
// the operator's dead-letter exchange.
func TestMalformedMessagesAreDeadLettered(t *testing.T) {
	top := testenv.NewTopology(t)
	dlx, dlq := top.Exchange+".dlx", top.Exchange+".dead-letter"
	withRaw(t, func(ch *amqp091.Channel) error {
		if err := ch.ExchangeDeclare(dlx, "fanout", true, false, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(dlq, false, false, false, false, nil); err != nil {
			return err
		}
		return ch.QueueBind(dlq, "", dlx, false, nil)
	})
	t.Cleanup(func() {
		withRaw(t, func(ch *amqp091.Channel) error {
			if _, err := ch.QueueDelete(dlq, false, false, false); err != nil {
				return err
			}
			return ch.ExchangeDelete(dlx, false, false)
		})
	})
	nb := newBroker(t, top, "", amqp.Options{DeadLetterExchange: dlx})
	node := brokertest.Start(t, nb)
	ch := brokertest.Channel("room")
	if err := node.B.Subscribe(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp091.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	key := nb.RoutingKey(ch)
	for _, msg := range []amqp091.Publishing{
		{Type: amqp.TypePublication, Headers: amqp091.Table{amqp.HeaderChannel: ch}, Body: []byte{0xff, 0xff, 0xff}},
		{Type: amqp.TypePublication, Headers: amqp091.Table{amqp.HeaderChannel: ch, amqp.HeaderOffset: "not a number"}, Body: nil},
		{Type: amqp.TypeJoin, Headers: amqp091.Table{amqp.HeaderChannel: ch}, Body: []byte{0x0a, 0xff}},
		{Type: amqp.TypePublication, Body: []byte("no channel header")},
		{Type: "unknown", Headers: amqp091.Table{amqp.HeaderChannel: ch}},
		// A pack cut short in its first channel name.
		{Type: amqp.TypePack, Body: []byte{1, 9, 'r', 'o'}},
	} {
		if err := raw.PublishWithContext(context.Background(), top.Exchange, key, false, false, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := node.B.Publish(context.Background(), ch, brokertest.Pub(9, "valid"), message.StreamPosition{Offset: 9, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	node.Rec.WaitFor(t, "the valid publication", func() bool { return len(node.Rec.Events("pub", ch)) > 0 })
	if ev := node.Rec.Events("", ch); len(ev) != 1 || ev[0].Pub.Offset != 9 {
		t.Fatalf("delivered %+v, want only the valid publication", ev)
	}
	brokertest.WaitReady(t, node.B)
	deadline := time.Now().Add(brokertest.Wait)
	for {
		var n int
		withRaw(t, func(ch *amqp091.Channel) error {
			q, err := ch.QueueDeclarePassive(dlq, false, false, false, false, nil)
			n = q.Messages
			return err
		})
		if n == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages dead-lettered, want the 6 malformed ones", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A dead-letter exchange named in the config but missing makes the node not ready.
	missing := newBroker(t, top, "", amqp.Options{DeadLetterExchange: dlx + "-missing"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = missing.Run(ctx, brokertest.NewRecorder()) }()
	defer func() { cancel(); <-done }()
	var readyErr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if readyErr = missing.Ready(ctxFor(t, time.Second)); readyErr != nil && strings.Contains(readyErr.Error(), "broker.deadLetterExchange") {
			return
		}
	}
	t.Fatalf("Ready with a missing dead-letter exchange: %v", readyErr)
}

func withRaw(t testing.TB, fn func(ch *amqp091.Channel) error) {
	t.Helper()
	conn, err := amqp091.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(ch); err != nil {
		t.Fatal(err)
	}
}

func mustHost(t testing.TB) string {
	h, err := testenv.Host(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustProxyURL(t testing.TB, p *tcpproxy.Proxy) string {
	u, err := testenv.WithHost(testenv.AMQPURL(), p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUnbindLinger: a routing key stays bound for UnbindLinger after its last
// channel left, so a quick resubscribe costs no binding; deliveries for the
// unsubscribed channel are dropped meanwhile; then it is unbound.
func TestUnbindLinger(t *testing.T) {
	top := testenv.NewTopology(t)
	nb := newBroker(t, top, "", amqp.Options{UnbindLinger: 400 * time.Millisecond})
	node := brokertest.Start(t, nb)
	other := brokertest.Start(t, newBroker(t, top, "", amqp.Options{}))
	ctx := context.Background()
	ch := brokertest.Channel("linger")
	if err := node.B.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := node.B.Unsubscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if n := nb.Bindings(); n != 1 {
		t.Fatalf("bindings right after Unsubscribe = %d, want 1 (lingering)", n)
	}
	if err := other.B.Publish(ctx, ch, brokertest.Pub(1, "x"), message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	marker := brokertest.Channel("marker")
	if err := node.B.Subscribe(ctx, marker); err != nil {
		t.Fatal(err)
	}
	if err := other.B.Publish(ctx, marker, brokertest.Pub(1, "m"), message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	node.Rec.WaitFor(t, "marker", func() bool { return len(node.Rec.Events("pub", marker)) == 1 })
	if got := node.Rec.Events("pub", ch); len(got) != 0 {
		t.Fatalf("a lingering binding delivered %d publications of an unsubscribed channel", len(got))
	}
	deadline := time.Now().Add(5 * time.Second)
	for nb.Bindings() != 1 { // only the marker's
		if time.Now().After(deadline) {
			t.Fatalf("the lingering key was not unbound: %d bindings", nb.Bindings())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Resubscribing after the unbind binds again and delivers.
	if err := node.B.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := other.B.Publish(ctx, ch, brokertest.Pub(2, "y"), message.StreamPosition{Offset: 2, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	node.Rec.WaitFor(t, "delivery after resubscribing", func() bool { return len(node.Rec.Events("pub", ch)) == 1 })
}

// Publications that piled up while the node was busy are handed over in
// runs (one channel's, in order); a malformed one in the middle ends a run
// and is rejected alone, and nothing else is lost.
func TestPiledUpPublicationsAreHandedOverTogether(t *testing.T) {
	top := testenv.NewTopology(t)
	nb := newBroker(t, top, "", amqp.Options{})
	h := brokertest.NewGated()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = nb.Run(ctx, h) }()
	defer func() { cancel(); <-done }()
	brokertest.WaitReady(t, nb)
	ch := brokertest.Channel("room")
	if err := nb.Subscribe(ctxFor(t, 10*time.Second), ch); err != nil {
		t.Fatal(err)
	}
	publish := func(off uint64) {
		if err := nb.Publish(ctxFor(t, 10*time.Second), ch, brokertest.Pub(off, "p"), message.StreamPosition{Offset: off, Epoch: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	publish(1)
	<-h.Entered
	for off := uint64(2); off <= 100; off++ {
		publish(off)
		if off == 50 {
			withRaw(t, func(raw *amqp091.Channel) error {
				return raw.PublishWithContext(context.Background(), top.Exchange, nb.RoutingKey(ch), false, false,
					amqp091.Publishing{Type: amqp.TypePublication, Headers: amqp091.Table{amqp.HeaderChannel: ch}, Body: []byte{0xff, 0xff}})
			})
		}
	}
	time.Sleep(200 * time.Millisecond) // let the deliveries reach the consumer
	close(h.Release)
	h.WaitFor(t, "100 publications", func() bool { return len(h.Events("pub", ch)) == 100 })
	for i, e := range h.Events("pub", ch) {
		if e.Pub.Offset != uint64(i+1) {
			t.Fatalf("publication %d has offset %d", i, e.Pub.Offset)
		}
	}
	if got := h.LargestBatch(); got < 2 {
		t.Fatalf("largest batch %d: nothing was handed over together", got)
	}
}

// PublishNode reaches the addressed node only, through its own binding on
// the publication exchange; a node that is not connected gets nothing and the
// publish still succeeds (RabbitMQ drops what no queue binds).
func TestPublishNodeReachesOnlyThatNode(t *testing.T) {
	top := testenv.NewTopology(t)
	ids := []string{"node-a", "node-b", "node-c"}
	nodes := make([]*brokertest.Node, len(ids))
	for i, id := range ids {
		nodes[i] = brokertest.Start(t, newBroker(t, top, "", amqp.Options{NodeID: id}))
	}
	ctx := ctxFor(t, 10*time.Second)
	b := nodes[0].B.(*amqp.Broker)
	if err := b.PublishNode(ctx, "node-b", []byte("for b")); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishNode(ctx, "node-gone", []byte("for nobody")); err != nil {
		t.Fatal(err)
	}
	// A fanout after it: once every node has it, the addressed message (sent
	// first, on the same channel) has been routed too.
	if err := b.PublishControl(ctx, []byte("for all")); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		want := []string{"for all"}
		if ids[i] == "node-b" {
			want = []string{"for all", "for b"}
		}
		received := func() []string {
			var got []string
			for _, e := range n.Rec.Events("control", "") {
				got = append(got, string(e.Data))
			}
			slices.Sort(got)
			return got
		}
		n.Rec.WaitFor(t, "control messages on "+ids[i], func() bool { return len(received()) >= len(want) })
		if got := received(); !slices.Equal(got, want) {
			t.Errorf("%s received %q, want %q", ids[i], got, want)
		}
	}
	if err := b.PublishNode(ctx, "", []byte("x")); err == nil {
		t.Error("PublishNode without a node id: no error")
	}
}

// Many first subscriptions at once (a connect storm) are bound in groups;
// each Subscribe still returns only once its own binding is in place: a
// publication sent the moment it returns reaches the node. Half the
// channels are unsubscribed again while others subscribe, so a key queued
// for binding and dropped before its turn is exercised too.
func TestConcurrentSubscribesAreBoundOnReturn(t *testing.T) {
	top := testenv.NewTopology(t)
	// No lingering: an unsubscribed key is unbound (or never bound) at once.
	sub := brokertest.Start(t, newBroker(t, top, "", amqp.Options{UnbindLinger: -1}))
	pub := brokertest.Start(t, newBroker(t, top, "", amqp.Options{}))
	ctx := ctxFor(t, 30*time.Second)
	const n = 200
	chans := make([]string, n)
	for i := range chans {
		chans[i] = brokertest.Channel(fmt.Sprintf("storm%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sub.B.Subscribe(ctx, ch); err != nil {
				errs <- err
				return
			}
			if i%2 == 1 {
				errs <- sub.B.Unsubscribe(ctx, ch)
				return
			}
			errs <- pub.B.Publish(ctx, ch, brokertest.Pub(1, ch), message.StreamPosition{Offset: 1, Epoch: "e"})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range chans {
		if i%2 == 1 {
			continue
		}
		sub.Rec.WaitFor(t, "the publication in "+ch, func() bool { return len(sub.Rec.Events("pub", ch)) == 1 })
	}
	if got := sub.B.(*amqp.Broker).Bindings(); got != n/2 {
		t.Errorf("%d routing keys bound, want %d", got, n/2)
	}
}

// TestPublishToReachesListedNodes: a message addressed to nodes (the
// directory's routing) reaches each listed node that tracks the channel,
// once, with no binding for it; a listed node that does not track the
// channel drops it; a node subscribed by name (an older release) gets it
// whether listed or not; nodes neither listed nor subscribed get nothing.
func TestPublishToReachesListedNodes(t *testing.T) {
	top := testenv.NewTopology(t)
	ids := []string{"pub", "tracks", "tracks-too", "untracked", "binds", "bystander"}
	nodes := map[string]*brokertest.Node{}
	for _, id := range ids {
		nodes[id] = brokertest.Start(t, newBroker(t, top, "", amqp.Options{NodeID: id}))
	}
	ctx := ctxFor(t, 10*time.Second)
	const ch = "room:1"
	for _, id := range []string{"tracks", "tracks-too", "bystander"} {
		if err := nodes[id].B.(*amqp.Broker).Track(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes["binds"].B.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if got := nodes["tracks"].B.(*amqp.Broker).Bindings(); got != 0 {
		t.Fatalf("tracking bound %d keys", got)
	}
	pub := nodes["pub"].B.(*amqp.Broker)
	to := []string{"tracks", "tracks-too", "untracked", "binds", "gone"}
	if err := pub.PublishTo(ctx, to, ch, &message.Publication{Data: []byte(`1`), Offset: 1}, message.StreamPosition{Offset: 1, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishJoinTo(ctx, to[:1], ch, &message.ClientInfo{User: "u", Client: "c"}); err != nil {
		t.Fatal(err)
	}
	// Empty list: only nodes subscribed by name.
	if err := pub.PublishTo(ctx, nil, ch, &message.Publication{Data: []byte(`2`), Offset: 2}, message.StreamPosition{Offset: 2, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	// A control fanout after them: once a node has it, what was addressed
	// to it before has arrived too.
	if err := pub.PublishControl(ctx, []byte("end")); err != nil {
		t.Fatal(err)
	}
	want := map[string][]uint64{"tracks": {1}, "tracks-too": {1}, "binds": {1, 2}}
	for _, id := range ids {
		n := nodes[id]
		n.Rec.WaitFor(t, "the fanout on "+id, func() bool { return len(n.Rec.Events("control", "")) > 0 })
		var got []uint64
		for _, e := range n.Rec.Events("pub", ch) {
			got = append(got, e.Pub.Offset)
		}
		if !slices.Equal(got, want[id]) {
			t.Errorf("%s received offsets %v, want %v", id, got, want[id])
		}
		joins := len(n.Rec.Events("join", ch))
		if wantJoin := map[string]int{"tracks": 1, "binds": 1}[id]; joins != wantJoin {
			t.Errorf("%s received %d joins, want %d", id, joins, wantJoin)
		}
	}
	// Untrack forgets a tracked channel.
	tr := nodes["tracks"]
	if err := tr.B.(*amqp.Broker).Untrack(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishTo(ctx, []string{"tracks"}, ch, &message.Publication{Data: []byte(`3`), Offset: 3}, message.StreamPosition{Offset: 3, Epoch: "e"}); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishNode(ctx, "tracks", []byte("end2")); err != nil {
		t.Fatal(err)
	}
	tr.Rec.WaitFor(t, "the second marker", func() bool { return len(tr.Rec.Events("control", "")) > 1 })
	if n := len(tr.Rec.Events("pub", ch)); n != 1 {
		t.Errorf("after Untrack the node received %d publications in all, want still 1", n)
	}
}

// TestSendToPacksWhatPilesUp: publications sent to the same nodes while a
// message to them awaits its confirm travel together; each listed node
// that tracks the channel gets every one once, each channel's in the order
// sent, and a node bound to the channel by name (an older release) gets
// none: packs are addressed, never routed by a channel's key.
func TestSendToPacksWhatPilesUp(t *testing.T) {
	top := testenv.NewTopology(t)
	nodes := map[string]*brokertest.Node{}
	for _, id := range []string{"pub", "a", "b", "binds"} {
		nodes[id] = brokertest.Start(t, newBroker(t, top, "", amqp.Options{NodeID: id}))
	}
	ctx := ctxFor(t, 30*time.Second)
	const channels, each = 8, 60
	for c := range channels {
		ch := fmt.Sprint("room:", c)
		for _, id := range []string{"a", "b"} {
			if err := nodes[id].B.(*amqp.Broker).Track(ctx, ch); err != nil {
				t.Fatal(err)
			}
		}
		if err := nodes["binds"].B.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	pub := nodes["pub"].B.(*amqp.Broker)
	var wg sync.WaitGroup
	errs := make(chan error, channels*each)
	for c := range channels {
		wg.Go(func() {
			ch := fmt.Sprint("room:", c)
			for i := 1; i <= each; i++ {
				p := &message.Publication{Data: []byte(fmt.Sprint(i)), Offset: uint64(i)}
				// The list in another order each time: the same nodes.
				to := []string{"a", "b"}
				if i%2 == 0 {
					to = []string{"b", "a", "b"}
				}
				if err := pub.SendTo(ctx, to, ch, p, message.StreamPosition{Offset: uint64(i), Epoch: "e"}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := pub.PublishControl(ctx, []byte("end")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "binds"} {
		n := nodes[id]
		n.Rec.WaitFor(t, "the fanout on "+id, func() bool { return len(n.Rec.Events("control", "")) > 0 })
		for c := range channels {
			ch := fmt.Sprint("room:", c)
			var got []uint64
			for _, e := range n.Rec.Events("pub", ch) {
				got = append(got, e.Pub.Offset)
			}
			var want []uint64
			if id != "binds" {
				for i := 1; i <= each; i++ {
					want = append(want, uint64(i))
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s received offsets %v in %s, want %v", id, got, ch, want)
			}
		}
	}
	packs, packed := pub.Packed()
	t.Logf("%d publications: %d went in %d packs", channels*each, packed, packs)
	if packs == 0 || packed < 2*packs {
		t.Errorf("%d packs carrying %d publications: %d concurrent senders packed nothing", packs, packed, channels)
	}
	// Nothing for a listed node is also nothing at all.
	if err := pub.SendTo(ctx, nil, "room:0", brokertest.Pub(99, "x"), message.StreamPosition{Offset: 99}); err != nil {
		t.Fatal(err)
	}
}

// TestSendToAfterClose: a closed broker refuses at once, and Close waits
// for no pack forever.
func TestSendToAfterClose(t *testing.T) {
	top := testenv.NewTopology(t)
	n := brokertest.Start(t, newBroker(t, top, "", amqp.Options{NodeID: "pub"}))
	b := n.B.(*amqp.Broker)
	ctx := ctxFor(t, 10*time.Second)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_ = b.SendTo(ctx, []string{"gone"}, "room", brokertest.Pub(uint64(i+1), "x"), message.StreamPosition{Offset: uint64(i + 1)})
		})
	}
	_ = b.Close()
	wg.Wait()
	if err := b.SendTo(ctx, []string{"gone"}, "room", brokertest.Pub(1, "x"), message.StreamPosition{}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("SendTo after Close: %v, want ErrClosed", err)
	}
}
