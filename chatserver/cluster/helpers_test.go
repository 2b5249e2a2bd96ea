package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/store/postgres"
	"github.com/parley-chat/parley/chatserver/transport"
)

// wait bounds every wait for the cluster to converge.
const wait = 20 * time.Second

// node is one chat server replica with its own connections to RabbitMQ and
// PostgreSQL, each through a proxy the test controls, and a proxy in front of
// its WebSocket listener standing for a load balancer's path to it.
type node struct {
	srv      *servertest.Server
	broker   *amqp.Broker
	store    *postgres.Store
	amqpLink *tcpproxy.Proxy
	pgLink   *tcpproxy.Proxy
}

type cluster struct {
	t     *testing.T
	top   testenv.Topology
	db    testenv.Database
	nodes []*node
	// readinessGrace, when set, is the replicas' broker.readinessGrace.
	readinessGrace time.Duration
	// unbindLinger is the amqp broker's UnbindLinger for replicas started
	// from now on (0: its default).
	unbindLinger time.Duration
}

func logger() *slog.Logger {
	level := slog.LevelError + 1
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func newProxy(t *testing.T, rawURL string) *tcpproxy.Proxy {
	t.Helper()
	host, err := testenv.Host(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func via(t *testing.T, rawURL string, p *tcpproxy.Proxy) string {
	t.Helper()
	u, err := testenv.WithHost(rawURL, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startCluster starts n replicas sharing fresh exchanges and a fresh database.
func startCluster(t *testing.T, n int) *cluster { t.Helper(); return startClusterWithGrace(t, n, 0) }

// startClusterWithGrace starts n replicas with broker.readinessGrace grace
// (0: the default).
func startClusterWithGrace(t *testing.T, n int, grace time.Duration) *cluster {
	t.Helper()
	c := &cluster{t: t, top: testenv.NewTopology(t), db: testenv.NewDatabase(t, "parley_cluster"), readinessGrace: grace}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, c.startNode(i))
	}
	for i := range c.nodes {
		c.waitReady(i)
	}
	return c
}

func (c *cluster) startNode(i int) *node { return c.startNodeWith(i, nil) }

// startNodeWith starts replica i; wrap, when set, wraps its broker.
func (c *cluster) startNodeWith(i int, wrap func(broker.Broker) broker.Broker) *node {
	return c.startNodeConfigured(i, wrap, nil)
}

// startNodeConfigured is startNodeWith whose edit, when set, changes the
// replica's config last.
func (c *cluster) startNodeConfigured(i int, wrap func(broker.Broker) broker.Broker, edit func(*config.Config)) *node {
	t := c.t
	nd := &node{amqpLink: newProxy(t, testenv.AMQPURL()), pgLink: newProxy(t, c.db.URL)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := fmt.Sprintf("n%d-%s", i, testenv.Name("")[1:])
	var err error
	nd.store, err = postgres.New(ctx, via(t, c.db.URL, nd.pgLink), postgres.Options{MaxConns: 6, RetentionInterval: -1, OpTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	nd.broker, err = amqp.New(amqp.Options{
		URL: via(t, testenv.AMQPURL(), nd.amqpLink), Exchange: c.top.Exchange, ControlExchange: c.top.ControlExchange,
		NodeID: id, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond, Logger: logger(),
		UnbindLinger: c.unbindLinger,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := servertest.Config()
	cfg.Broker.Type, cfg.Broker.Exchange, cfg.Broker.ControlExchange = "amqp", c.top.Exchange, c.top.ControlExchange
	cfg.Store.Type = "postgres"
	cfg.Broker.ReadinessGrace = config.Duration(c.readinessGrace)
	cfg.Limits.PublishesPerSecond = 0 // the tests stream faster than a person types
	cfg.Limits.CommandCostPerSecond, cfg.Limits.UserCommandCostPerSecond = 0, 0
	for i := range cfg.Namespaces {
		if cfg.Namespaces[i].Name == "room" {
			// Recovery is guaranteed within the history window: make it hold
			// everything a test publishes during an outage.
			cfg.Namespaces[i].History.Size = 10000
		}
	}
	if edit != nil {
		edit(&cfg)
	}
	var b broker.Broker = nd.broker
	if wrap != nil {
		b = wrap(b)
	}
	// The server closes the broker and the store when it stops.
	nd.srv = servertest.Start(t, cfg, b, nd.store)
	return nd
}

// waitReady waits until replica i is ready with nothing degraded (its
// broker reachable too).
func (c *cluster) waitReady(i int) {
	c.t.Helper()
	deadline := time.Now().Add(wait)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var degraded string
		degraded, err = c.nodes[i].srv.Node.Readiness(ctx)
		cancel()
		if err == nil && degraded == "" {
			return
		}
		if err == nil {
			err = fmt.Errorf("degraded: %s", degraded)
		}
		time.Sleep(25 * time.Millisecond)
	}
	c.t.Fatalf("node %d not ready: %v", i, err)
}

// client connects a centrifuge-go client to url as user.
func client(t *testing.T, url, proto, user string) *centrifuge.Client {
	t.Helper()
	return servertest.Connect(t, url, proto, servertest.Token(t, user))
}

// collector records, without ever dropping one, what a subscription delivers.
type collector struct {
	name string
	sub  *centrifuge.Subscription

	mu         sync.Mutex
	pubs       []centrifuge.PublicationEvent
	subscribed []centrifuge.SubscribedEvent
	changed    chan struct{}
}

func subscribe(t *testing.T, c *centrifuge.Client, name, channel string) *collector {
	t.Helper()
	col := &collector{name: name, changed: make(chan struct{}, 1)}
	sub, err := c.NewSubscription(channel, centrifuge.SubscriptionConfig{Recoverable: true, MinResubscribeDelay: 50 * time.Millisecond, MaxResubscribeDelay: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	col.sub = sub
	sub.OnPublication(func(e centrifuge.PublicationEvent) {
		col.mu.Lock()
		col.pubs = append(col.pubs, e)
		col.mu.Unlock()
		col.poke()
	})
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) {
		col.mu.Lock()
		col.subscribed = append(col.subscribed, e)
		col.mu.Unlock()
		col.poke()
	})
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, "subscribed", func() bool { return len(col.subscribedEvents()) > 0 })
	return col
}

func (c *collector) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *collector) publications() []centrifuge.PublicationEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]centrifuge.PublicationEvent(nil), c.pubs...)
}

func (c *collector) subscribedEvents() []centrifuge.SubscribedEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]centrifuge.SubscribedEvent(nil), c.subscribed...)
}

func (c *collector) has(data string) bool {
	for _, p := range c.publications() {
		if string(p.Data) == js(data) {
			return true
		}
	}
	return false
}

func (c *collector) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-c.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: timed out waiting for %s (has %d publications)", c.name, what, len(c.publications()))
		}
	}
}

// tally counts what publishers did.
type tally struct {
	sent, acked, failed atomic.Int64
	mu                  sync.Mutex
	ackedData           map[string]bool // data the server acknowledged
	errs                map[string]int
}

func newTally() *tally { return &tally{ackedData: map[string]bool{}, errs: map[string]int{}} }

// js is data as the JSON string every publication carries (JSON clients
// may only publish JSON).
func js(data string) string { return strconv.Quote(data) }

// publish publishes js(data) through sub and records the outcome.
func (tl *tally) publish(sub *centrifuge.Subscription, data string) bool {
	data = js(data)
	tl.sent.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	_, err := sub.Publish(ctx, []byte(data))
	if err != nil {
		tl.failed.Add(1)
		tl.mu.Lock()
		msg := err.Error()
		if i := strings.IndexByte(msg, ':'); i > 0 && i < 40 {
			msg = msg[:i]
		}
		tl.errs[msg]++
		tl.mu.Unlock()
		return false
	}
	tl.acked.Add(1)
	tl.mu.Lock()
	tl.ackedData[data] = true
	tl.mu.Unlock()
	return true
}

// run publishes "<prefix>-<n>" through sub every pace until stop is closed.
func (tl *tally) run(sub *centrifuge.Subscription, prefix string, pace time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if !tl.publish(sub, fmt.Sprintf("%s-%d", prefix, i)) {
				time.Sleep(20 * time.Millisecond) // a failing replica: do not spin
			}
			time.Sleep(pace)
		}
	}()
}

// fence publishes a last message, retrying until it is acknowledged, and
// waits until every collector delivered it: whatever was committed before it
// has then been delivered (or filled from history) everywhere.
func fence(t *testing.T, tl *tally, sub *centrifuge.Subscription, cols ...*collector) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !tl.publish(sub, "fence") {
		if time.Now().After(deadline) {
			t.Fatalf("the fence publication was never acknowledged: %v", tl.errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range cols {
		c.waitFor(t, "the fence", func() bool { return c.has("fence") })
	}
}

// check asserts a collector's publications are in offset order without gaps
// or duplicates, and that every acknowledged publication reached it. It
// returns what it counted.
func check(t *testing.T, tl *tally, c *collector) (delivered, lost int) {
	t.Helper()
	pubs := c.publications()
	for _, e := range c.subscribedEvents() {
		if e.WasRecovering && !e.Recovered {
			t.Errorf("%s: a resubscribe could not recover (recovered=false)", c.name)
		}
	}
	seen := map[string]bool{}
	for i, p := range pubs {
		if i > 0 && p.Offset != pubs[i-1].Offset+1 {
			t.Errorf("%s: offset %d follows %d (a gap, a duplicate or a reordering)", c.name, p.Offset, pubs[i-1].Offset)
		}
		seen[string(p.Data)] = true
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var missing []string
	for data := range tl.ackedData {
		if !seen[data] {
			missing = append(missing, data)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: %d acknowledged publications never delivered: %v", c.name, len(missing), missing[:min(len(missing), 10)])
	}
	return len(pubs), len(missing)
}

// report logs the counts and asserts nothing acknowledged was lost.
func report(t *testing.T, tl *tally, cols ...*collector) {
	t.Helper()
	totalLost := 0
	var parts []string
	for _, c := range cols {
		d, l := check(t, tl, c)
		totalLost += l
		parts = append(parts, fmt.Sprintf("%s=%d", c.name, d))
	}
	tl.mu.Lock()
	errs := fmt.Sprint(tl.errs)
	tl.mu.Unlock()
	t.Logf("sent %d, acknowledged %d, failed %d %s; delivered %s; lost %d",
		tl.sent.Load(), tl.acked.Load(), tl.failed.Load(), errs, strings.Join(parts, " "), totalLost)
	if totalLost != 0 {
		t.Fatalf("lost = %d, want 0", totalLost)
	}
}

// wsProxy stands for a load balancer in front of the replicas.
func wsProxy(t *testing.T, target *servertest.Server) (*tcpproxy.Proxy, string) {
	t.Helper()
	p, err := tcpproxy.New(target.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, "ws://" + p.Addr() + transport.Path
}
