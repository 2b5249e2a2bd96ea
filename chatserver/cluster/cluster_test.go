package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/internal/leakcheck"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/store"
)

func TestMain(m *testing.M) { leakcheck.Main(m, servertest.LeakOptions()...) }

var channelSeq int

func channel(t *testing.T) string {
	channelSeq++
	return fmt.Sprintf("room:%s-%d", t.Name(), channelSeq)
}

// Publications made on one replica reach subscribers on every replica, in
// offset order, through both wire formats.
func TestCrossReplicaDelivery(t *testing.T) {
	c := startCluster(t, 3)
	ch := channel(t)
	var cols []*collector
	for i, nd := range c.nodes {
		cl := client(t, nd.srv.WS, servertest.Protocols[i%2], fmt.Sprintf("sub%d", i))
		cols = append(cols, subscribe(t, cl, fmt.Sprintf("node%d", i), ch))
	}
	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "publisher"), "publisher", ch)
	tl := newTally()
	for i := 0; i < 20; i++ {
		if !tl.publish(pub.sub, fmt.Sprintf("m-%d", i)) {
			t.Fatalf("publish %d failed: %v", i, tl.errs)
		}
	}
	for _, col := range append(cols, pub) {
		col.waitFor(t, "20 publications", func() bool { return len(col.publications()) == 20 })
		for i, p := range col.publications() {
			if p.Offset != uint64(i+1) || string(p.Data) != js(fmt.Sprintf("m-%d", i)) {
				t.Fatalf("%s: publication %d is offset %d %q", col.name, i, p.Offset, p.Data)
			}
		}
	}
	report(t, tl, append(cols, pub)...)
}

// Two replicas publishing to one channel at once produce one order, seen
// identically by every subscriber on every replica.
func TestConcurrentPublishersOneOrder(t *testing.T) {
	c := startCluster(t, 3)
	ch := channel(t)
	var cols []*collector
	for i, nd := range c.nodes {
		for j := 0; j < 2; j++ {
			cl := client(t, nd.srv.WS, servertest.Protocols[j], fmt.Sprintf("sub%d%d", i, j))
			cols = append(cols, subscribe(t, cl, fmt.Sprintf("node%d/%d", i, j), ch))
		}
	}
	pubA := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "alice"), "alice@node0", ch)
	pubB := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "bob"), "bob@node1", ch)
	tl := newTally()
	const each = 60
	var wg sync.WaitGroup
	for _, p := range []*collector{pubA, pubB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				tl.publish(p.sub, fmt.Sprintf("%s-%d", p.name, i))
			}
		}()
	}
	wg.Wait()
	if tl.acked.Load() != 2*each {
		t.Fatalf("only %d of %d publishes acknowledged: %v", tl.acked.Load(), 2*each, tl.errs)
	}
	all := append(cols, pubA, pubB)
	for _, col := range all {
		col.waitFor(t, "every publication", func() bool { return len(col.publications()) == 2*each })
	}
	var want []string
	for _, p := range all[0].publications() {
		want = append(want, string(p.Data))
	}
	for _, col := range all[1:] {
		var got []string
		for _, p := range col.publications() {
			got = append(got, string(p.Data))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s saw another order than %s", col.name, all[0].name)
		}
	}
	// The order interleaves both publishers: they really raced.
	switches := 0
	for i := 1; i < len(want); i++ {
		if want[i][1] != want[i-1][1] {
			switches++
		}
	}
	t.Logf("the agreed order switches publisher %d times", switches)
	report(t, tl, all...)
}

// The test closes replicas' AMQP connections while a publisher streams:
// nothing acknowledged is lost, subscribers catch up, order holds.
func TestAMQPConnectionClosedMidStream(t *testing.T) {
	c := startCluster(t, 3)
	ch := channel(t)
	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "publisher"), "publisher@node0", ch)
	sub1 := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "s1"), "sub@node1", ch)
	sub2 := subscribe(t, client(t, c.nodes[2].srv.WS, "json", "s2"), "sub@node2", ch)
	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tl.run(pub.sub, "p", 2*time.Millisecond, stop, &wg)

	waitAcked := func(n int64) {
		deadline := time.Now().Add(wait)
		for tl.acked.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("publishing stalled at %d acknowledged: %v", tl.acked.Load(), tl.errs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcked(50)
	c.nodes[1].amqpLink.DropConnections() // a subscriber's replica
	waitAcked(tl.acked.Load() + 50)
	c.nodes[0].amqpLink.DropConnections() // the publisher's replica
	waitAcked(tl.acked.Load() + 50)
	c.nodes[2].amqpLink.DropConnections()
	c.nodes[1].amqpLink.DropConnections()
	waitAcked(tl.acked.Load() + 50)
	close(stop)
	wg.Wait()
	fence(t, tl, pub.sub, pub, sub1, sub2)
	report(t, tl, pub, sub1, sub2)
}

// The test terminates every PostgreSQL backend of its database while
// publishing: publishes fail with an error or are acknowledged, nothing
// acknowledged is lost, and the cluster resumes without a restart.
func TestPostgresBackendsTerminated(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "publisher"), "publisher@node0", ch)
	sub1 := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "s1"), "sub@node1", ch)
	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tl.run(pub.sub, "p", 2*time.Millisecond, stop, &wg)
	time.Sleep(200 * time.Millisecond)
	for round := 0; round < 3; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := c.db.TerminateBackends(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no backend to terminate")
		}
		time.Sleep(300 * time.Millisecond)
	}
	before := tl.acked.Load()
	deadline := time.Now().Add(wait)
	for tl.acked.Load() < before+50 {
		if time.Now().After(deadline) {
			t.Fatalf("publishing did not resume after the terminations: %v", tl.errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	fence(t, tl, pub.sub, pub, sub1)
	report(t, tl, pub, sub1)
}

// RabbitMQ unreachable (through the proxy) for one replica, then for all:
// every replica stays ready (the outage is within broker.readinessGrace, and
// a broker outage shared by every replica must not empty the Service), its
// readiness saying the broker is degraded; publishes keep being committed and
// acknowledged everywhere; when RabbitMQ is back, every subscriber catches up
// from history and nothing acknowledged is lost.
func TestBrokerOutage(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "publisher"), "publisher@node0", ch)
	sub0 := subscribe(t, client(t, c.nodes[0].srv.WS, "protobuf", "s0"), "sub@node0", ch)
	sub1 := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "s1"), "sub@node1", ch)
	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tl.run(pub.sub, "p", 5*time.Millisecond, stop, &wg)

	// Only the subscriber's replica loses RabbitMQ.
	c.nodes[1].amqpLink.Disable()
	degraded(t, c, 1)
	ackedBefore := tl.acked.Load()
	time.Sleep(time.Second)
	if tl.acked.Load() <= ackedBefore {
		t.Fatalf("publishing on a healthy replica stopped while another lost RabbitMQ: %v", tl.errs)
	}
	c.nodes[1].amqpLink.Enable()
	c.waitReady(1)

	// Every replica loses RabbitMQ: first refusing connections, then
	// accepting and never answering (a blackhole), where each check must
	// still answer within the kubelet probe's 2 s timeout.
	for _, nd := range c.nodes {
		nd.amqpLink.Disable()
	}
	degraded(t, c, 0)
	degraded(t, c, 1)
	// PostgreSQL still commits, so publishes keep being acknowledged; they
	// reach every subscriber once RabbitMQ is back (the fence below).
	ackedBefore = tl.acked.Load()
	stayReady(t, c, 2*time.Second)
	for _, nd := range c.nodes {
		nd.amqpLink.Enable()
		nd.amqpLink.Stall()
		nd.amqpLink.DropConnections()
	}
	stayReady(t, c, 3*time.Second)
	if tl.acked.Load() <= ackedBefore {
		t.Fatalf("committed publishes were not acknowledged with RabbitMQ unreachable from every replica: %v", tl.errs)
	}
	for _, nd := range c.nodes {
		nd.amqpLink.Unstall()
	}
	for _, nd := range c.nodes {
		nd.amqpLink.Enable()
	}
	c.waitReady(0)
	c.waitReady(1)
	close(stop)
	wg.Wait()
	fence(t, tl, pub.sub, pub, sub0, sub1)
	report(t, tl, pub, sub0, sub1)
}

// A replica whose RabbitMQ stays unreachable longer than
// broker.readinessGrace goes unready (its clients are better served by a
// replica with a link), and ready again when the link is back; the other
// replica is not affected.
func TestBrokerOutageLongerThanGrace(t *testing.T) {
	const grace = 2 * time.Second
	c := startClusterWithGrace(t, 2, grace)
	c.nodes[1].amqpLink.Disable()
	degraded(t, c, 1)
	cut := time.Now()
	err := notReady(t, c, 1)
	if held := time.Since(cut); held < grace-200*time.Millisecond {
		t.Errorf("replica unready %s after the broker check first failed, before the %s grace", held, grace)
	}
	if !strings.Contains(err.Error(), "broker.readinessGrace") {
		t.Errorf("not ready for %q, want the broker outage past broker.readinessGrace", err)
	}
	// The admin listener's /readyz says why; the public one does not.
	if code, body := get(t, c.nodes[1].srv.Admin+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "broker.readinessGrace") {
		t.Errorf("admin /readyz = %d %q", code, body)
	}
	if code, body := get(t, c.nodes[1].srv.HTTP+"/readyz"); code != http.StatusServiceUnavailable || body != "not ready\n" {
		t.Errorf("public /readyz = %d %q", code, body)
	}
	if v := testutil.ToFloat64(c.nodes[1].srv.Node.Metrics().Ready); v != 0 {
		t.Errorf("parley_ready = %v on the unready replica", v)
	}
	c.waitReady(0) // the other replica has its link: ready, nothing degraded
	c.nodes[1].amqpLink.Enable()
	c.waitReady(1)
	if v := testutil.ToFloat64(c.nodes[1].srv.Node.Metrics().Ready); v != 1 {
		t.Errorf("parley_ready = %v once the link is back", v)
	}
}

// degraded waits until replica i reports ready with its broker unreachable,
// through the node, the gauges and the admin listener's /readyz.
func degraded(t *testing.T, c *cluster, i int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	nd := c.nodes[i].srv
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		why, err := nd.Node.Readiness(ctx)
		cancel()
		if err != nil {
			t.Fatalf("node %d not ready with only RabbitMQ unreachable: %v", i, err)
		}
		if why != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d does not see RabbitMQ unreachable", i)
		}
		time.Sleep(25 * time.Millisecond)
	}
	if up, ready := testutil.ToFloat64(nd.Node.Metrics().BrokerUp), testutil.ToFloat64(nd.Node.Metrics().Ready); up != 0 || ready != 1 {
		t.Errorf("node %d: parley_broker_up=%v parley_ready=%v, want 0 and 1", i, up, ready)
	}
	if code, body := get(t, nd.Admin+"/readyz"); code != http.StatusOK || !strings.HasPrefix(body, "ok, degraded: broker unreachable") {
		t.Errorf("node %d admin /readyz = %d %q", i, code, body)
	}
	if code, body := get(t, nd.HTTP+"/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("node %d public /readyz = %d %q", i, code, body)
	}
}

// stayReady probes every replica's /readyz as the kubelet does (2 s timeout)
// for d and fails on any answer but 200: the Service keeps its endpoints.
func stayReady(t *testing.T, c *cluster, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for i, nd := range c.nodes {
			start := time.Now()
			code, body := get(t, nd.srv.HTTP+"/readyz")
			if code != http.StatusOK {
				t.Fatalf("node %d went unready in a broker outage shorter than the grace: %d %q", i, code, body)
			}
			if took := time.Since(start); took > 1800*time.Millisecond {
				t.Errorf("node %d /readyz took %s: a kubelet probe (2 s timeout) would fail", i, took)
			}
		}
	}
}

// notReady waits until replica i is not ready and returns why.
func notReady(t *testing.T, c *cluster, i int) error {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.nodes[i].srv.Node.Ready(ctx)
		cancel()
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d still ready with RabbitMQ unreachable past the grace", i)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// get fetches url with a kubelet probe's timeout.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// A client whose replica dies (connections cut as by SIGKILL) reconnects
// through the load balancer to another replica and recovers exactly what it
// missed (recovered=true); when the history it held is gone it is told so
// (recovered=false), never given a silent gap.
func TestRecoveryOnDifferentReplica(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	lb, lbURL := wsProxy(t, c.nodes[0].srv)
	mover := subscribe(t, client(t, lbURL, "protobuf", "mover"), "mover", ch)
	pub := subscribe(t, client(t, c.nodes[1].srv.WS, "json", "publisher"), "publisher@node1", ch)
	tl := newTally()
	for i := 0; i < 10; i++ {
		tl.publish(pub.sub, fmt.Sprintf("before-%d", i))
	}
	mover.waitFor(t, "the first 10", func() bool { return len(mover.publications()) == 10 })

	// Replica 0 "dies": the balancer stops sending to it, its client
	// connections and its RabbitMQ connection are cut.
	lb.Disable()
	c.nodes[0].amqpLink.Disable()
	for i := 0; i < 15; i++ {
		tl.publish(pub.sub, fmt.Sprintf("while-away-%d", i))
	}
	lb.SetTarget(c.nodes[1].srv.Addr)
	lb.Enable()
	mover.waitFor(t, "the missed 15 after recovering on replica 1", func() bool { return len(mover.publications()) == 25 })
	subs := mover.subscribedEvents()
	last := subs[len(subs)-1]
	if !last.WasRecovering || !last.Recovered {
		t.Fatalf("resubscribe on replica 1: wasRecovering=%v recovered=%v, want both true", last.WasRecovering, last.Recovered)
	}
	c.nodes[0].amqpLink.Enable()
	report(t, tl, mover, pub)

	// History lost while the client is away: recovered=false, no silent gap.
	lb.Disable()
	if err := c.nodes[1].store.RemoveHistory(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	lb.SetTarget(c.nodes[0].srv.Addr)
	lb.Enable()
	mover.waitFor(t, "a resubscribe after the history was lost", func() bool { return len(mover.subscribedEvents()) > len(subs) })
	subs = mover.subscribedEvents()
	last = subs[len(subs)-1]
	if !last.WasRecovering || last.Recovered {
		t.Fatalf("resubscribe after losing history: wasRecovering=%v recovered=%v, want true, false", last.WasRecovering, last.Recovered)
	}
	if last.StreamPosition == nil || last.StreamPosition.Offset != 0 {
		t.Fatalf("position after losing history: %+v, want offset 0 of a new epoch", last.StreamPosition)
	}
}

// Publications committed while their replica could not reach RabbitMQ are
// acknowledged (the store has them) and reach subscribers on the other
// replicas once RabbitMQ is back, even if nothing else is published.
func TestCommittedDuringOutageReachOtherReplicas(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "publisher"), "publisher@node0", ch)
	sub1 := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "s1"), "sub@node1", ch)
	tl := newTally()
	if !tl.publish(pub.sub, "before") {
		t.Fatal(tl.errs)
	}
	c.nodes[0].amqpLink.Disable()
	degraded(t, c, 0)
	for i := 0; i < 5; i++ {
		tl.publish(pub.sub, fmt.Sprintf("during-%d", i))
	}
	pos, err := c.nodes[1].store.Position(context.Background(), ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("committed during the outage: %d (acknowledged %d, failed %d)", pos.Offset-1, tl.acked.Load()-1, tl.failed.Load())
	if got := uint64(tl.acked.Load()); got != pos.Offset {
		t.Fatalf("acknowledged %d publications, the store committed %d: a committed publication must be acknowledged", got, pos.Offset)
	}
	c.nodes[0].amqpLink.Enable()
	c.waitReady(0)
	for _, col := range []*collector{pub, sub1} {
		col.waitFor(t, "every committed publication", func() bool { return uint64(len(col.publications())) == pos.Offset })
	}
	report(t, tl, pub, sub1)
}

// A replica that commits publications while it cannot reach RabbitMQ and
// then dies (or is drained) before RabbitMQ comes back does not take them
// with it: they are in the store's outbox, and another replica re-publishes
// them, so subscribers elsewhere get them without waiting for the channel's
// next publication. The publisher's retry with the same key on another
// replica (a committed publication whose replica died before it could even
// write the outbox) is broadcast again too.
func TestUnsentSurvivesReplicaDeath(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "publisher"), "publisher@node0", ch)
	sub1 := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "s1"), "sub@node1", ch)
	tl := newTally()
	if !tl.publish(pub.sub, "before") {
		t.Fatal(tl.errs)
	}
	sub1.waitFor(t, "the first publication", func() bool { return len(sub1.publications()) == 1 })
	c.nodes[0].amqpLink.Disable()
	degraded(t, c, 0)
	for i := range 3 {
		if !tl.publish(pub.sub, fmt.Sprintf("during-%d", i)) {
			t.Fatalf("publish during the outage: %v", tl.errs)
		}
	}
	c.nodes[0].srv.Stop(t) // the replica goes, its memory with it
	sub1.waitFor(t, "the publications committed on the dead replica", func() bool { return len(sub1.publications()) == 4 })

	// A publication committed with a key but never fanned out, as if its
	// replica died between the commit and anything else: the publisher's
	// retry on a live replica is answered as a duplicate and broadcast.
	res, err := c.nodes[1].store.Append(context.Background(), ch, &message.Publication{Data: []byte(`"orphan"`)},
		store.AppendOptions{HistorySize: 10000, HistoryTTL: time.Hour, IdempotencyKey: "orphan-key"})
	if err != nil {
		t.Fatal(err)
	}
	retry := client(t, c.nodes[1].srv.WS, "json", "publisher")
	subscribe(t, retry, "publisher@node1", ch) // room: publishers are subscribers
	if _, err := retry.RPC(context.Background(), "publish", []byte(`{"channel":"`+ch+`","data":"orphan","key":"orphan-key"}`)); err != nil {
		t.Fatal(err)
	}
	sub1.waitFor(t, "the orphan after its retry", func() bool {
		pubs := sub1.publications()
		return len(pubs) == 5 && pubs[4].Offset == res.Publication.Offset
	})
}

// lossy wraps a broker so its node sees what RabbitMQ may do under stress:
// every 7th publication dropped, every 5th delivered after the next one.
type lossy struct {
	broker.Broker
	on                 atomic.Bool
	dropped, reordered atomic.Int64
	// batches counts runs of several publications handed over at once (the
	// path RabbitMQ's consumer takes under load).
	batches atomic.Int64
}

func (l *lossy) Run(ctx context.Context, h broker.Handler) error {
	return l.Broker.Run(ctx, &lossyHandler{Handler: h, l: l})
}

// The wrapped broker routes by the directory as the replica's own would.
func (l *lossy) directed() broker.Directed { return l.Broker.(broker.Directed) }
func (l *lossy) NodeID() string            { return l.directed().NodeID() }
func (l *lossy) PublishNode(ctx context.Context, node string, data []byte) error {
	return l.directed().PublishNode(ctx, node, data)
}
func (l *lossy) Track(ctx context.Context, channels ...string) error {
	return l.directed().Track(ctx, channels...)
}
func (l *lossy) Untrack(ctx context.Context, channels ...string) error {
	return l.directed().Untrack(ctx, channels...)
}
func (l *lossy) PublishTo(ctx context.Context, nodes []string, ch string, pub *message.Publication, sp message.StreamPosition) error {
	return l.directed().PublishTo(ctx, nodes, ch, pub, sp)
}
func (l *lossy) SendTo(ctx context.Context, nodes []string, ch string, pub *message.Publication, sp message.StreamPosition) error {
	return l.directed().SendTo(ctx, nodes, ch, pub, sp)
}
func (l *lossy) PublishJoinTo(ctx context.Context, nodes []string, ch string, info *message.ClientInfo) error {
	return l.directed().PublishJoinTo(ctx, nodes, ch, info)
}
func (l *lossy) PublishLeaveTo(ctx context.Context, nodes []string, ch string, info *message.ClientInfo) error {
	return l.directed().PublishLeaveTo(ctx, nodes, ch, info)
}

type lossyHandler struct {
	broker.Handler
	l    *lossy
	n    int
	held func()
}

func (h *lossyHandler) HandlePublication(ch string, pub *message.Publication, sp message.StreamPosition) {
	if h.l.on.Load() && pub.Offset > 0 {
		h.n++
		switch {
		case h.n%7 == 0:
			h.l.dropped.Add(1)
			return
		case h.n%5 == 0 && h.held == nil:
			h.l.reordered.Add(1)
			h.held = func() { h.Handler.HandlePublication(ch, pub, sp) }
			return
		}
	}
	h.Handler.HandlePublication(ch, pub, sp)
	if h.held != nil {
		held := h.held
		h.held = nil
		held()
	}
}

// HandlePublications tampers with a run as HandlePublication does with
// single deliveries and hands what is left on as a run: the node's batched
// path sees the gaps and the reordering too.
func (h *lossyHandler) HandlePublications(ch string, pubs []*message.Publication, sps []message.StreamPosition) {
	bh := h.Handler.(broker.BatchHandler)
	if len(pubs) > 1 {
		h.l.batches.Add(1)
	}
	held := h.held
	h.held = nil
	var outP []*message.Publication
	var outS []message.StreamPosition
	for i, pub := range pubs {
		if h.l.on.Load() && pub.Offset > 0 {
			h.n++
			switch {
			case h.n%7 == 0:
				h.l.dropped.Add(1)
				continue
			case h.n%5 == 0 && h.held == nil && held == nil:
				h.l.reordered.Add(1)
				p, sp := pub, sps[i]
				h.held = func() { bh.HandlePublications(ch, []*message.Publication{p}, []message.StreamPosition{sp}) }
				continue
			}
		}
		outP, outS = append(outP, pub), append(outS, sps[i])
	}
	if len(outP) > 0 {
		bh.HandlePublications(ch, outP, outS)
	}
	if held != nil {
		held() // held back from an earlier run: now after this one
	}
}

func (h *lossyHandler) Resubscribed(channels []string) {
	if rh, ok := h.Handler.(broker.ResubscribeHandler); ok {
		rh.Resubscribed(channels)
	}
}

// A replica whose deliveries arrive with gaps and out of order still gives
// its subscribers every publication once, in offset order, filling the gaps
// from history.
func TestDroppedAndReorderedDeliveries(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	// Replace replica 1 by one whose deliveries are tampered with.
	c.nodes[1].srv.Stop(t)
	l := &lossy{}
	c.nodes[1] = c.startNodeWith(1, func(b broker.Broker) broker.Broker { l.Broker = b; return l })
	c.waitReady(1)
	l.on.Store(true)

	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "publisher"), "publisher@node0", ch)
	subs := []*collector{
		subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "s1"), "sub@node1", ch),
		subscribe(t, client(t, c.nodes[1].srv.WS, "json", "s2"), "sub2@node1", ch),
	}
	tl := newTally()
	// Publishers in parallel, so deliveries pile up and RabbitMQ's consumer
	// hands them over in runs (the batched path) as well as one by one.
	publishers := []*centrifuge.Subscription{pub.sub}
	for i := range 3 {
		publishers = append(publishers, subscribe(t, client(t, c.nodes[0].srv.WS, "json", fmt.Sprint("publisher", i)), fmt.Sprint("publisher", i), ch).sub)
	}
	var wg sync.WaitGroup
	for p, ps := range publishers {
		wg.Go(func() {
			for i := 0; i < 75; i++ {
				tl.publish(ps, fmt.Sprintf("m-%d-%d", p, i))
			}
		})
	}
	wg.Wait()
	for _, s := range subs {
		s.waitFor(t, "all but the tail", func() bool { return len(s.publications()) >= 280 })
	}
	l.on.Store(false) // a dropped last publication waits for the next one: end with a clean fence
	fence(t, tl, pub.sub, append(subs, pub)...)
	t.Logf("the broker wrapper dropped %d and reordered %d deliveries, saw %d runs", l.dropped.Load(), l.reordered.Load(), l.batches.Load())
	if l.dropped.Load() == 0 || l.reordered.Load() == 0 {
		t.Fatal("the wrapper did not tamper with anything")
	}
	if l.batches.Load() == 0 {
		t.Fatal("no run of publications was handed over at once: the batched path went untested")
	}
	report(t, tl, append(subs, pub)...)
}

// Subscribers joining a channel while two replicas publish into it get a
// subscribe reply whose offset is exactly where their live stream starts: the
// first publication after it is offset+1, then no gap, no duplicate. The
// replicas answer later subscribers from what they delivered (no store read),
// so this is what proves that position is never behind what the hub already
// handed out, nor ahead of what the subscriber will get.
func TestSubscribeWhilePublishing(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	// A subscriber on each replica first: those after it take the path
	// that answers from the replica's own position.
	anchors := []*collector{
		subscribe(t, client(t, c.nodes[0].srv.WS, "json", "anchor0"), "anchor@node0", ch),
		subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "anchor1"), "anchor@node1", ch),
	}
	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tl.run(anchors[0].sub, "a", time.Millisecond, stop, &wg)
	tl.run(anchors[1].sub, "b", time.Millisecond, stop, &wg)
	anchors[0].waitFor(t, "the stream to flow", func() bool { return len(anchors[0].publications()) >= 5 })
	var late []*collector
	for i := 0; i < 16; i++ {
		nd := c.nodes[i%2]
		name := fmt.Sprintf("late%d@node%d", i, i%2)
		late = append(late, subscribe(t, client(t, nd.srv.WS, servertest.Protocols[i%2], fmt.Sprintf("late%d", i)), name, ch))
		time.Sleep(15 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if tl.failed.Load() > 0 {
		t.Fatalf("%d publishes failed: %v", tl.failed.Load(), tl.errs)
	}
	fence(t, tl, anchors[0].sub, append(late, anchors...)...)
	for _, col := range late {
		evs := col.subscribedEvents()
		if len(evs) != 1 || evs[0].StreamPosition == nil {
			t.Fatalf("%s: subscribed %d times, position %+v", col.name, len(evs), evs)
		}
		start := evs[0].StreamPosition.Offset
		pubs := col.publications()
		for i, p := range pubs {
			if p.Offset != start+uint64(i)+1 {
				t.Fatalf("%s: subscribed at offset %d, publication %d has offset %d (want %d)", col.name, start, i, p.Offset, start+uint64(i)+1)
			}
		}
		t.Logf("%s: subscribed at offset %d, then %d publications in order", col.name, start, len(pubs))
	}
	if started := late[0].subscribedEvents()[0].StreamPosition.Offset; started == 0 {
		t.Fatal("the first late subscriber came before any publication: the test raced nothing")
	}
	report(t, tl, anchors...)
}
