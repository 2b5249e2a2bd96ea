// Package amqp is the Broker that connects chat server replicas through
// RabbitMQ (amqp091-go). Each node owns an exclusive, auto-delete queue bound
// to the operator's durable direct exchange with one routing key per channel
// its local clients subscribe to, and to the operator's fanout exchange for
// node-to-node commands. Publishes wait for publisher confirms, which many
// goroutines may have outstanding at once. When the connection drops, the
// broker reconnects with backoff, re-creates its queue and bindings and tells
// the node (ResubscribeHandler) so it recovers missed publications from the
// store. docs/topology.md describes the exchanges and the message format.
package amqp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/message"
)

// URLEnv overrides config.Broker.URLFile.
const URLEnv = "PARLEY_BROKER_URL"

// Defaults for Options left zero.
const (
	DefaultPrefetch       = 512
	DefaultMaxQueueLength = 100000
	DefaultReconnectMin   = 100 * time.Millisecond
	DefaultReconnectMax   = 5 * time.Second
	DefaultPublishTimeout = 5 * time.Second
	DefaultProbeTimeout   = 3 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultHeartbeat      = 10 * time.Second
	DefaultUnbindLinger   = 10 * time.Second
)

// Message types (the AMQP "type" property).
const (
	TypePublication = "publication"
	TypeJoin        = "join"
	TypeLeave       = "leave"
	TypeControl     = "control"
	TypeProbe       = "probe"
	// TypeNode is a control message for one node (PublishNode), routed on the
	// publication exchange by the node's key.
	TypeNode = "node"
)

// Header names.
const (
	HeaderChannel = "channel"
	HeaderEpoch   = "epoch"
	HeaderOffset  = "offset"
	HeaderNode    = "node"
)

// Options configure a Broker.
type Options struct {
	// URL is the AMQP URI (it may hold a password: it never appears in errors or logs).
	URL string
	// Exchange is the durable direct exchange for publications (config broker.exchange).
	Exchange string
	// ControlExchange is the durable fanout exchange for commands (config broker.controlExchange).
	ControlExchange string
	// DeadLetterExchange, when set (config broker.deadLetterExchange), becomes
	// the queue's x-dead-letter-exchange: malformed messages are rejected to it
	// and overflow drops land there, for the operator to inspect.
	DeadLetterExchange string
	// NodeID names this node in queue names and probe keys; random when empty.
	NodeID string
	// Partitions, when > 0, routes channels by "p.<hash mod Partitions>" instead
	// of one key per channel (see docs/topology.md for the measurement behind
	// the default of 0).
	Partitions int
	// Prefetch bounds unacknowledged deliveries in flight to this node.
	Prefetch int
	// MaxQueueLength bounds the node's queue; past it RabbitMQ drops the oldest
	// messages, which the node then fills from history.
	MaxQueueLength int
	// ReconnectMin and ReconnectMax bound the exponential reconnection backoff.
	ReconnectMin, ReconnectMax time.Duration
	// PublishTimeout bounds a publish (and its confirm) when ctx has no deadline.
	PublishTimeout time.Duration
	// ProbeTimeout bounds Ready's probe round trip when ctx has no deadline.
	ProbeTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval (detects dead connections).
	Heartbeat time.Duration
	// UnbindLinger keeps a routing key bound this long after its last channel
	// was unsubscribed, so a subscriber that comes back (a page reload, a
	// reconnect) costs no binding round trip; deliveries for it are dropped
	// meanwhile. Negative unbinds at once.
	UnbindLinger time.Duration
	// RootCAs, when set, are the only CAs trusted for an amqps:// URL (config
	// broker.caFile, see LoadCAFile); the server name is the URL's host.
	// Nil: the system's roots.
	RootCAs *x509.CertPool
	// Logger receives connection events; slog.Default() when nil.
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.NodeID == "" {
		o.NodeID = randomID()
	}
	if o.Prefetch <= 0 {
		o.Prefetch = DefaultPrefetch
	}
	if o.MaxQueueLength <= 0 {
		o.MaxQueueLength = DefaultMaxQueueLength
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = max(DefaultReconnectMax, o.ReconnectMin)
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.UnbindLinger == 0 {
		o.UnbindLinger = DefaultUnbindLinger
	}
}

// Broker is the RabbitMQ broker.
type Broker struct {
	opts Options
	log  *slog.Logger

	// subMu serialises changes to the bindings (Subscribe, Unsubscribe and
	// the rebinding after a reconnect) so the broker's view and RabbitMQ's agree.
	subMu sync.Mutex

	mu   sync.RWMutex
	subs map[string]struct{} // channels the node asked for
	keys map[string]int      // routing key → subscribed channels using it
	// lingering are keys still bound on the current session although no
	// channel uses them any more, with when their last channel left.
	lingering map[string]time.Time
	// toBind are keys a Subscribe counted but nobody has bound yet: the
	// next goroutine to hold subMu binds them all (see Subscribe).
	toBind  map[string]struct{}
	sess    *session // nil while disconnected
	lastErr error    // why the broker is not connected
	running bool
	closed  bool

	probeMu sync.Mutex
	probes  map[string]chan struct{}

	done      chan struct{}
	closeOnce sync.Once
	sessions  atomic.Uint64
}

// session is one AMQP connection and what was set up on it.
type session struct {
	conn  *amqp.Connection
	pub   *amqp.Channel // confirm mode; safe for concurrent publishes
	topo  *amqp.Channel // bindings; used under Broker.subMu
	cons  *amqp.Channel
	queue string
	lost  chan struct{} // closed when the connection is gone
	why   atomic.Value  // error: why the server closed a channel or the connection
}

func (s *session) reason() any {
	if e := s.why.Load(); e != nil {
		return e
	}
	return "connection closed"
}

var _ broker.Broker = (*Broker)(nil)

// URLFromConfig returns the AMQP URL: the PARLEY_BROKER_URL environment
// variable, else the contents of cfg.URLFile.
func URLFromConfig(cfg config.Broker) (string, error) {
	if u := os.Getenv(URLEnv); u != "" {
		return u, nil
	}
	if cfg.URLFile == "" {
		return "", errors.New("broker.urlFile: required for type amqp (or set " + URLEnv + ")")
	}
	b, err := os.ReadFile(cfg.URLFile)
	if err != nil {
		return "", fmt.Errorf("broker.urlFile: %w", err)
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("broker.urlFile: %s is empty", cfg.URLFile)
	}
	return u, nil
}

// Open builds a Broker from the server config.
func Open(cfg config.Broker, nodeID string, log *slog.Logger) (*Broker, error) {
	url, err := URLFromConfig(cfg)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if cfg.CAFile != "" {
		if roots, err = LoadCAFile(cfg.CAFile); err != nil {
			return nil, err
		}
	}
	return New(Options{URL: url, Exchange: cfg.Exchange, ControlExchange: cfg.ControlExchange, DeadLetterExchange: cfg.DeadLetterExchange, NodeID: nodeID, RootCAs: roots, Logger: log})
}

// LoadCAFile reads the PEM certificates of config broker.caFile. A file
// with none is an error here, at startup, rather than an "unknown
// authority" at every connection attempt.
func LoadCAFile(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("broker.caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("broker.caFile: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// New validates opts and returns a broker; it connects in Run.
func New(opts Options) (*Broker, error) {
	if opts.Exchange == "" {
		return nil, errors.New("amqp broker: broker.exchange is required")
	}
	if opts.ControlExchange == "" {
		return nil, errors.New("amqp broker: broker.controlExchange is required")
	}
	if opts.Exchange == opts.ControlExchange {
		return nil, errors.New("amqp broker: broker.exchange and broker.controlExchange must differ")
	}
	if _, err := amqp.ParseURI(opts.URL); err != nil {
		// The parse error may quote the URI, password included.
		return nil, errors.New("amqp broker: cannot parse the broker URL")
	}
	if opts.Partitions < 0 {
		return nil, errors.New("amqp broker: partitions must not be negative")
	}
	if strings.ContainsAny(opts.NodeID, ".*# ") {
		return nil, fmt.Errorf("amqp broker: node id %q must not contain '.', '*', '#' or spaces", opts.NodeID)
	}
	opts.defaults()
	return &Broker{
		opts:      opts,
		log:       opts.Logger.With("component", "amqp-broker", "node", opts.NodeID),
		subs:      map[string]struct{}{},
		keys:      map[string]int{},
		lingering: map[string]time.Time{},
		toBind:    map[string]struct{}{},
		probes:    map[string]chan struct{}{},
		done:      make(chan struct{}),
	}, nil
}

// NodeID returns the node's id (random unless set in Options).
func (b *Broker) NodeID() string { return b.opts.NodeID }

func randomID() string {
	var buf [8]byte
	_, _ = rand.Read(buf[:])
	return hex.EncodeToString(buf[:])
}

// RoutingKey returns the routing key publications on channel carry: "c." and
// 32 hex digits of the channel name's SHA-256 (names may hold '.', '*', '#'
// or exceed the 255-byte key limit), or "p.<n>" in partitioned mode.
func (b *Broker) RoutingKey(channel string) string {
	return routingKey(channel, b.opts.Partitions)
}

func routingKey(channel string, partitions int) string {
	if partitions > 0 {
		h := fnv.New32a()
		_, _ = h.Write([]byte(channel))
		return fmt.Sprintf("p.%d", h.Sum32()%uint32(partitions))
	}
	sum := sha256.Sum256([]byte(channel))
	return "c." + hex.EncodeToString(sum[:16])
}

// queueArgs are the arguments of the node's queue (docs/topology.md).
func (b *Broker) queueArgs() amqp.Table {
	args := amqp.Table{
		"x-queue-type": "classic",
		"x-max-length": int64(b.opts.MaxQueueLength),
		"x-overflow":   "drop-head",
	}
	if b.opts.DeadLetterExchange != "" {
		args["x-dead-letter-exchange"] = b.opts.DeadLetterExchange
	}
	return args
}

func (b *Broker) probeKey() string { return "probe." + b.opts.NodeID }

// nodeKey routes messages addressed to one node (PublishNode).
func nodeKey(nodeID string) string { return "node." + nodeID }

// QueueName is the node's queue on its n-th connection: "<exchange>.node.<id>.<n>".
func (b *Broker) queueName(n uint64) string {
	return fmt.Sprintf("%s.node.%s.%d", b.opts.Exchange, b.opts.NodeID, n)
}

func (b *Broker) session() *session {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.sess
}

func (b *Broker) isClosed() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.closed
}

// Run implements broker.Broker: it connects, and reconnects with backoff
// whenever the connection is lost, until ctx is done or Close is called.
func (b *Broker) Run(ctx context.Context, h broker.Handler) error {
	if h == nil {
		return errors.New("amqp broker: nil handler")
	}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return broker.ErrClosed
	case b.running:
		b.mu.Unlock()
		return errors.New("amqp broker: Run called twice")
	}
	b.running = true
	b.lastErr = errors.New("connecting")
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.running = false
		b.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.done:
			cancel()
		case <-ctx.Done():
		}
	}()

	delay := b.opts.ReconnectMin
	for attempt := 0; ; attempt++ {
		sess, err := b.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			b.setDisconnected(err)
			if attempt == 0 || attempt%10 == 0 {
				b.log.Warn("cannot connect to RabbitMQ; retrying", "error", err, "attempt", attempt+1)
			}
			if !sleep(ctx, jitter(delay)) {
				return nil
			}
			delay = min(2*delay, b.opts.ReconnectMax)
			continue
		}
		if attempt > 0 {
			b.log.Info("connected to RabbitMQ", "queue", sess.queue, "attempts", attempt+1)
		}
		attempt, delay = -1, b.opts.ReconnectMin
		b.serve(ctx, sess, h)
		closeConn(sess.conn)
		if ctx.Err() != nil || b.isClosed() {
			return nil
		}
		b.log.Warn("lost the RabbitMQ connection; reconnecting", "queue", sess.queue, "reason", sess.reason())
	}
}

func (b *Broker) setDisconnected(err error) {
	b.mu.Lock()
	b.sess = nil
	b.lastErr = err
	b.mu.Unlock()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d/2)))
	if err != nil {
		return d
	}
	return d/2 + time.Duration(n.Int64())
}

// ErrTopologyMissing says an exchange the operator should have declared is absent.
var ErrTopologyMissing = errors.New("broker topology missing")

// connect dials, checks the operator's exchanges, declares the node's queue,
// binds it and starts consuming. On success the session is live and published.
func (b *Broker) connect(ctx context.Context) (*session, error) {
	cfg := amqp.Config{
		Heartbeat:  b.opts.Heartbeat,
		Locale:     "en_US",
		Dial:       amqp.DefaultDial(DefaultConnectTimeout),
		Properties: amqp.NewConnectionProperties(),
	}
	if b.opts.RootCAs != nil {
		// amqp091 sets ServerName to the URL's host.
		cfg.TLSClientConfig = &tls.Config{RootCAs: b.opts.RootCAs, MinVersion: tls.VersionTLS12}
	}
	cfg.Properties.SetClientConnectionName("parley-node-" + b.opts.NodeID)
	conn, err := amqp.DialConfig(b.opts.URL, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: dial: %v", broker.ErrUnavailable, err)
	}
	sess := &session{conn: conn, lost: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			closeConn(conn)
		}
	}()
	// Passive checks, each on its own channel: a missing exchange closes the channel.
	exchanges := []struct{ key, name, kind string }{
		{"broker.exchange", b.opts.Exchange, "direct"},
		{"broker.controlExchange", b.opts.ControlExchange, "fanout"},
	}
	if b.opts.DeadLetterExchange != "" {
		exchanges = append(exchanges, struct{ key, name, kind string }{"broker.deadLetterExchange", b.opts.DeadLetterExchange, "fanout"})
	}
	for _, ex := range exchanges {
		ch, err := conn.Channel()
		if err != nil {
			return nil, fmt.Errorf("%w: open channel: %v", broker.ErrUnavailable, err)
		}
		if err := ch.ExchangeDeclarePassive(ex.name, ex.kind, true, false, false, false, nil); err != nil {
			var aerr *amqp.Error
			if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
				return nil, fmt.Errorf("%w: %s %q (a durable %s exchange) does not exist in RabbitMQ; the operator declares it (see docs/topology.md)", ErrTopologyMissing, ex.key, ex.name, ex.kind)
			}
			return nil, fmt.Errorf("%w: check %s %q: %v", broker.ErrUnavailable, ex.key, ex.name, err)
		}
		_ = ch.Close()
	}
	if sess.topo, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("%w: open channel: %v", broker.ErrUnavailable, err)
	}
	if sess.pub, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("%w: open channel: %v", broker.ErrUnavailable, err)
	}
	if err := sess.pub.Confirm(false); err != nil {
		return nil, fmt.Errorf("%w: enable publisher confirms: %v", broker.ErrUnavailable, err)
	}
	if sess.cons, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("%w: open channel: %v", broker.ErrUnavailable, err)
	}
	// A channel-level error (an exchange deleted under a publish, a refused
	// binding) closes only that channel: close the connection so the session
	// is rebuilt as a whole.
	for _, ch := range []*amqp.Channel{sess.topo, sess.pub, sess.cons} {
		notify := ch.NotifyClose(make(chan *amqp.Error, 1))
		go func() {
			if e, ok := <-notify; ok && e != nil {
				sess.why.CompareAndSwap(nil, error(e))
			}
			closeConn(conn)
		}()
	}
	if err := sess.cons.Qos(b.opts.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("%w: set prefetch: %v", broker.ErrUnavailable, err)
	}
	n := b.sessions.Add(1)
	q, err := sess.topo.QueueDeclare(b.queueName(n), false, true, true, false, b.queueArgs())
	if err != nil {
		return nil, fmt.Errorf("%w: declare queue: %v", broker.ErrUnavailable, err)
	}
	sess.queue = q.Name
	if err := sess.topo.QueueBind(sess.queue, "", b.opts.ControlExchange, false, nil); err != nil {
		return nil, fmt.Errorf("%w: bind to %q: %v", broker.ErrUnavailable, b.opts.ControlExchange, err)
	}
	if err := sess.topo.QueueBind(sess.queue, b.probeKey(), b.opts.Exchange, false, nil); err != nil {
		return nil, fmt.Errorf("%w: bind probe key: %v", broker.ErrUnavailable, err)
	}
	if err := sess.topo.QueueBind(sess.queue, nodeKey(b.opts.NodeID), b.opts.Exchange, false, nil); err != nil {
		return nil, fmt.Errorf("%w: bind node key: %v", broker.ErrUnavailable, err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		if e, ok := <-closed; ok && e != nil {
			sess.why.CompareAndSwap(nil, error(e))
		}
		close(sess.lost)
	}()

	// Bind every subscribed channel, then publish the session, under subMu so
	// no Subscribe slips between the two.
	b.subMu.Lock()
	defer b.subMu.Unlock()
	b.mu.Lock()
	keys := make([]string, 0, len(b.keys))
	for k := range b.keys {
		keys = append(keys, k)
	}
	// The new queue starts without bindings: nothing lingers on it, and
	// what waited to be bound is in keys.
	clear(b.lingering)
	clear(b.toBind)
	b.mu.Unlock()
	if err := b.bind(sess, keys); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrClosed
	}
	b.sess, b.lastErr = sess, nil
	ok = true
	return sess, nil
}

// bind binds keys to the session's queue, pipelined: every bind but the last
// is sent without waiting; the last waits, and since a channel handles
// methods in order its reply (or the channel's closure) covers them all.
func (b *Broker) bind(sess *session, keys []string) error {
	for i, k := range keys {
		last := i == len(keys)-1
		if err := sess.topo.QueueBind(sess.queue, k, b.opts.Exchange, !last, nil); err != nil {
			closeConn(sess.conn)
			return fmt.Errorf("%w: bind %d routing keys: %v", broker.ErrUnavailable, len(keys), err)
		}
	}
	return nil
}

func (b *Broker) unbind(sess *session, keys []string) error {
	for _, k := range keys {
		if err := sess.topo.QueueUnbind(sess.queue, k, b.opts.Exchange, nil); err != nil {
			closeConn(sess.conn)
			return fmt.Errorf("%w: unbind: %v", broker.ErrUnavailable, err)
		}
	}
	return nil
}

// serve tells the node about the re-established subscriptions, then delivers
// until the connection is lost or ctx is done.
func (b *Broker) serve(ctx context.Context, sess *session, h broker.Handler) {
	deliveries, err := sess.cons.Consume(sess.queue, "", false, true, false, false, nil)
	if err != nil {
		b.setDisconnected(fmt.Errorf("%w: consume: %v", broker.ErrUnavailable, err))
		return
	}
	if rh, ok := h.(broker.ResubscribeHandler); ok {
		if chans := b.channels(); len(chans) > 0 {
			rh.Resubscribed(chans)
		}
	}
	defer b.setDisconnected(fmt.Errorf("%w: connection lost; reconnecting", broker.ErrUnavailable))
	if b.opts.UnbindLinger > 0 {
		reaped := make(chan struct{})
		stop := make(chan struct{})
		go func() {
			defer close(reaped)
			b.reapLingering(sess, stop)
		}()
		defer func() { close(stop); <-reaped }()
	}
	const ackEvery = 64
	ackTick := time.NewTicker(25 * time.Millisecond)
	defer ackTick.Stop()
	var unacked uint64
	var pending int
	bh, _ := h.(broker.BatchHandler)
	var group []amqp.Delivery
	ack := func() {
		if pending > 0 {
			_ = sess.cons.Ack(unacked, true)
			pending = 0
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.lost:
			return
		case <-ackTick.C:
			ack()
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			// Take what else is already waiting (never wait for more): runs
			// of one channel's publications go to the handler together.
			group = append(group[:0], d)
			closed := false
		drain:
			for len(group) < broker.MaxBatch {
				select {
				case d, ok := <-deliveries:
					if !ok {
						closed = true
						break drain
					}
					group = append(group, d)
				default:
					break drain
				}
			}
			for i := 0; i < len(group); {
				if n := b.dispatchRun(bh, group[i:]); n > 0 {
					unacked = group[i+n-1].DeliveryTag
					pending += n
					i += n
				} else {
					d := &group[i]
					i++
					if !b.dispatch(h, d) {
						// Settle what came before, then reject this one (dead-lettered
						// when the queue has a dead-letter exchange). A tag must not be
						// both rejected and covered by a later multiple ack.
						ack()
						_ = sess.cons.Nack(d.DeliveryTag, false, false)
						continue
					}
					unacked = d.DeliveryTag
					pending++
				}
				if pending >= ackEvery {
					ack()
				}
			}
			if closed {
				return
			}
		}
	}
}

// dispatchRun hands the publications of one subscribed channel that lead ds
// to bh together and returns how many it took; 0 when there are fewer than
// two (or no batch handler): the first is then dispatched alone.
func (b *Broker) dispatchRun(bh broker.BatchHandler, ds []amqp.Delivery) int {
	if bh == nil || len(ds) < 2 || ds[0].Type != TypePublication || ds[1].Type != TypePublication {
		return 0
	}
	channel, _ := ds[0].Headers[HeaderChannel].(string)
	if next, _ := ds[1].Headers[HeaderChannel].(string); channel == "" || next != channel || !b.subscribed(channel) {
		return 0
	}
	var pubs []*message.Publication
	var sps []message.StreamPosition
	for i := range ds {
		if ch, _ := ds[i].Headers[HeaderChannel].(string); ds[i].Type != TypePublication || ch != channel {
			break
		}
		pub, sp, err := decodePublication(&ds[i])
		if err != nil {
			break // dispatched alone, and rejected there
		}
		pubs, sps = append(pubs, pub), append(sps, sp)
	}
	if len(pubs) < 2 {
		return 0
	}
	bh.HandlePublications(channel, pubs, sps)
	return len(pubs)
}

// reapLingering unbinds keys that lingered longer than UnbindLinger, off the
// delivery goroutine, until stop is closed or the session is lost.
func (b *Broker) reapLingering(sess *session, stop <-chan struct{}) {
	t := time.NewTicker(max(b.opts.UnbindLinger/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-sess.lost:
			return
		case <-t.C:
		}
		b.subMu.Lock()
		var expired []string
		b.mu.Lock()
		if b.sess == sess {
			now := time.Now()
			for k, since := range b.lingering {
				if now.Sub(since) >= b.opts.UnbindLinger {
					expired = append(expired, k)
					delete(b.lingering, k)
				}
			}
		}
		b.mu.Unlock()
		if len(expired) > 0 {
			if err := b.unbind(sess, expired); err != nil {
				b.log.Warn("unbind failed; the reconnect drops the binding", "error", err)
			}
		}
		b.subMu.Unlock()
	}
}

// Bindings returns how many routing keys for channels are bound to the
// node's queue now (lingering ones included), 0 while disconnected.
func (b *Broker) Bindings() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sess == nil {
		return 0
	}
	return len(b.keys) + len(b.lingering)
}

func (b *Broker) channels() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]string, 0, len(b.subs))
	for ch := range b.subs {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}

func (b *Broker) subscribed(channel string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.subs[channel]
	return ok
}

// dispatch hands d to the handler; false means d is malformed and must be rejected.
func (b *Broker) dispatch(h broker.Handler, d *amqp.Delivery) bool {
	switch d.Type {
	case TypeProbe:
		b.probeMu.Lock()
		if ch, ok := b.probes[d.MessageId]; ok {
			close(ch)
			delete(b.probes, d.MessageId)
		}
		b.probeMu.Unlock()
	case TypeControl, TypeNode:
		h.HandleControl(d.Body)
	case TypePublication, TypeJoin, TypeLeave:
		channel, _ := d.Headers[HeaderChannel].(string)
		if channel == "" {
			b.log.Warn("rejecting a message without a channel header", "type", d.Type)
			return false
		}
		// Only channels subscribed now: a message routed before an Unsubscribe,
		// or for a channel sharing the routing key (partitions), stops here.
		if !b.subscribed(channel) {
			return true
		}
		switch d.Type {
		case TypePublication:
			pub, sp, err := decodePublication(d)
			if err != nil {
				b.log.Warn("rejecting a malformed publication", "channel", channel, "error", err)
				return false
			}
			h.HandlePublication(channel, pub, sp)
		default:
			info, err := decodeInfo(d.Body)
			if err != nil {
				b.log.Warn("rejecting a malformed join/leave", "channel", channel, "error", err)
				return false
			}
			if d.Type == TypeJoin {
				h.HandleJoin(channel, info)
			} else {
				h.HandleLeave(channel, info)
			}
		}
	default:
		b.log.Warn("rejecting a message of unknown type", "type", d.Type)
		return false
	}
	return true
}

func (b *Broker) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.isClosed() {
		return broker.ErrClosed
	}
	return nil
}

// Subscribe implements broker.Broker. When connected it returns once the
// bindings are in place; when not, it records the channels, which are bound
// on (re)connection and reported to ResubscribeHandler.
func (b *Broker) Subscribe(ctx context.Context, channels ...string) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if err := broker.ValidateChannels(channels); err != nil {
		return err
	}
	b.mu.Lock()
	queued := false
	for _, ch := range channels {
		if _, ok := b.subs[ch]; ok {
			continue
		}
		b.subs[ch] = struct{}{}
		k := routingKey(ch, b.opts.Partitions)
		if b.keys[k] == 0 {
			if _, ok := b.lingering[k]; ok {
				delete(b.lingering, k) // still bound
			} else {
				b.toBind[k] = struct{}{}
				queued = true
			}
		}
		b.keys[k]++
	}
	b.mu.Unlock()
	if !queued {
		return nil
	}
	// Group binding: one goroutine at a time binds every key queued so far,
	// all but the last without waiting for RabbitMQ's reply, so first
	// subscriptions arriving together (a connect storm) share one round trip
	// instead of queueing for one each. When this goroutine gets subMu, a
	// binder before it may have bound this key already: it held subMu until
	// its binds were answered, so the key is bound either way on return.
	b.subMu.Lock()
	defer b.subMu.Unlock()
	b.mu.Lock()
	keys := make([]string, 0, len(b.toBind))
	for k := range b.toBind {
		keys = append(keys, k)
	}
	clear(b.toBind)
	sess := b.sess
	b.mu.Unlock()
	if sess == nil || len(keys) == 0 {
		return nil // not connected: the reconnect binds every subscribed key
	}
	if err := b.bind(sess, keys); err != nil {
		// The subscription stays recorded; the reconnect binds it and calls
		// Resubscribed, so the node recovers from history.
		b.log.Warn("bind failed; will rebind after reconnecting", "error", err)
	}
	return nil
}

// Unsubscribe implements broker.Broker.
func (b *Broker) Unsubscribe(ctx context.Context, channels ...string) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if err := broker.ValidateChannels(channels); err != nil {
		return err
	}
	b.subMu.Lock()
	defer b.subMu.Unlock()
	var oldKeys []string
	b.mu.Lock()
	for _, ch := range channels {
		if _, ok := b.subs[ch]; !ok {
			continue
		}
		delete(b.subs, ch)
		k := routingKey(ch, b.opts.Partitions)
		b.keys[k]--
		if b.keys[k] <= 0 {
			delete(b.keys, k)
			if _, queued := b.toBind[k]; queued {
				delete(b.toBind, k) // never bound: nothing to undo
				continue
			}
			if b.sess != nil && b.opts.UnbindLinger > 0 {
				b.lingering[k] = time.Now()
			} else {
				oldKeys = append(oldKeys, k)
			}
		}
	}
	sess := b.sess
	b.mu.Unlock()
	if sess == nil || len(oldKeys) == 0 {
		return nil
	}
	if err := b.unbind(sess, oldKeys); err != nil {
		// Deliveries for the channel are already filtered out; the reconnect
		// binds only what is subscribed.
		b.log.Warn("unbind failed; the reconnect drops the binding", "error", err)
	}
	return nil
}

// publish sends one message and waits for its confirm. Concurrent callers
// share the confirm-mode channel, so their confirms are pipelined.
func (b *Broker) publish(ctx context.Context, key string, msg amqp.Publishing) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	sess := b.session()
	if sess == nil {
		b.mu.RLock()
		why := b.lastErr
		b.mu.RUnlock()
		if why == nil {
			why = errors.New("not running")
		}
		return fmt.Errorf("%w: not connected: %v", broker.ErrUnavailable, why)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.PublishTimeout)
		defer cancel()
	}
	msg.AppId = "parley"
	dc, err := sess.pub.PublishWithDeferredConfirmWithContext(ctx, exchangeFor(b, msg.Type), key, false, false, msg)
	if err != nil {
		return fmt.Errorf("%w: publish: %v", broker.ErrUnavailable, err)
	}
	select {
	case <-dc.Done():
		if !dc.Acked() {
			return fmt.Errorf("%w: RabbitMQ did not confirm the message", broker.ErrUnavailable)
		}
		return nil
	case <-sess.lost:
		return fmt.Errorf("%w: connection lost before the confirm", broker.ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the confirm: %v", broker.ErrUnavailable, ctx.Err())
	}
}

func exchangeFor(b *Broker, typ string) string {
	if typ == TypeControl {
		return b.opts.ControlExchange
	}
	return b.opts.Exchange
}

// Publish implements broker.Broker.
func (b *Broker) Publish(ctx context.Context, channel string, pub *message.Publication, sp message.StreamPosition) error {
	if channel == "" || pub == nil {
		return errors.New("amqp broker: publish needs a channel and a publication")
	}
	msg, err := encodePublication(channel, pub, sp)
	if err != nil {
		return err
	}
	msg.Headers[HeaderNode] = b.opts.NodeID
	return b.publish(ctx, routingKey(channel, b.opts.Partitions), msg)
}

// PublishJoin implements broker.Broker.
func (b *Broker) PublishJoin(ctx context.Context, channel string, info *message.ClientInfo) error {
	return b.publishInfo(ctx, TypeJoin, channel, info)
}

// PublishLeave implements broker.Broker.
func (b *Broker) PublishLeave(ctx context.Context, channel string, info *message.ClientInfo) error {
	return b.publishInfo(ctx, TypeLeave, channel, info)
}

func (b *Broker) publishInfo(ctx context.Context, typ, channel string, info *message.ClientInfo) error {
	if channel == "" || info == nil {
		return errors.New("amqp broker: join/leave needs a channel and client info")
	}
	msg, err := encodeInfo(typ, channel, info)
	if err != nil {
		return err
	}
	msg.Headers[HeaderNode] = b.opts.NodeID
	return b.publish(ctx, routingKey(channel, b.opts.Partitions), msg)
}

// PublishControl implements broker.Broker.
func (b *Broker) PublishControl(ctx context.Context, data []byte) error {
	return b.publish(ctx, "", amqp.Publishing{
		Type:         TypeControl,
		ContentType:  "application/octet-stream",
		DeliveryMode: amqp.Transient,
		Headers:      amqp.Table{HeaderNode: b.opts.NodeID},
		Body:         data,
	})
}

// PublishNode implements broker.NodePublisher: the message goes to the
// publication exchange with the node's key, which only that node's queue binds.
// Nothing is delivered when no such node is connected.
func (b *Broker) PublishNode(ctx context.Context, nodeID string, data []byte) error {
	if nodeID == "" {
		return errors.New("amqp broker: publish to a node needs its id")
	}
	return b.publish(ctx, nodeKey(nodeID), amqp.Publishing{
		Type:         TypeNode,
		ContentType:  "application/octet-stream",
		DeliveryMode: amqp.Transient,
		Headers:      amqp.Table{HeaderNode: b.opts.NodeID},
		Body:         data,
	})
}

var _ broker.NodePublisher = (*Broker)(nil)

// Ready implements broker.Broker: it publishes a probe to the publication exchange
// with this node's probe key and waits for it to come back through the
// node's queue, proving publishing, routing and consuming all work.
func (b *Broker) Ready(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	b.mu.RLock()
	running, sess, why := b.running, b.sess, b.lastErr
	b.mu.RUnlock()
	if !running {
		return errors.New("amqp broker: not running")
	}
	if sess == nil {
		return fmt.Errorf("amqp broker: not connected: %w", why)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.ProbeTimeout)
		defer cancel()
	}
	id := randomID()
	arrived := make(chan struct{})
	b.probeMu.Lock()
	b.probes[id] = arrived
	b.probeMu.Unlock()
	defer func() {
		b.probeMu.Lock()
		delete(b.probes, id)
		b.probeMu.Unlock()
	}()
	if err := b.publish(ctx, b.probeKey(), amqp.Publishing{Type: TypeProbe, MessageId: id, DeliveryMode: amqp.Transient}); err != nil {
		return fmt.Errorf("amqp broker: probe: %w", err)
	}
	select {
	case <-arrived:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("amqp broker: probe sent to %q did not come back through queue %q: %w", b.opts.Exchange, sess.queue, ctx.Err())
	}
}

// closeTimeout bounds closing a connection: RabbitMQ behind a partition
// never answers connection.close, and a replica's shutdown (or reconnect)
// must not wait for the heartbeats to notice.
const closeTimeout = 2 * time.Second

func closeConn(c *amqp.Connection) { _ = c.CloseDeadline(time.Now().Add(closeTimeout)) }

// Close stops Run, closes the connection and makes later calls fail with ErrClosed.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		sess := b.sess
		b.mu.Unlock()
		close(b.done)
		if sess != nil {
			closeConn(sess.conn)
		}
	})
	return nil
}
