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
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/config"
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
	// tracked are channels subscribed without a binding (Track): routed to
	// this node by its key, by publishers that read a directory.
	tracked map[string]struct{}
	keys    map[string]int // routing key → subscribed channels using it
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

	packs packer // SendTo's queues (pack.go)

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
		tracked:   map[string]struct{}{},
		keys:      map[string]int{},
		lingering: map[string]time.Time{},
		toBind:    map[string]struct{}{},
		probes:    map[string]chan struct{}{},
		packs:     packer{queues: map[string]*packQueue{}},
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

func (b *Broker) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.isClosed() {
		return broker.ErrClosed
	}
	return nil
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
		// Their publishes fail now; each waiting caller hears why.
		b.packs.close()
	})
	return nil
}
