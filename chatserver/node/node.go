// Package node ties one chat server replica together: the hub of local
// connections, the broker that routes between replicas and the store that keeps
// history, presence and receipts. It implements broker.Handler, so everything a
// subscriber receives (even what this node published) comes back through the
// broker, and it fills offset gaps from the store before delivering.
//
// Build one with New(cfg, broker, store, logger), start it with Run, and hand
// it to transport.NewHandler and httpapi.New. Any Broker/Store implementation
// works; the node never closes them (their creator does).
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/groups"
	"github.com/parley-chat/parley/chatserver/hub"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/metrics"
	"github.com/parley-chat/parley/chatserver/store"
)

// IdempotencyTTL is how long a publish key deduplicates retries.
const IdempotencyTTL = 5 * time.Minute

// numLocks shards the per-channel subscribe locks and channel state. A
// channel's first local subscriber holds its shard's lock through its
// registration (directory.go: one store round trip) or, in channels without
// history, a broker bind; every other subscribe in the shard waits that long,
// so in a connect storm the shards must outnumber the channels being bound
// at once (with 64, a storm into 500 rooms queued subscribers of bound rooms
// behind binds of others).
const numLocks = 1024

// Node is one replica. It is safe for concurrent use.
type Node struct {
	cfg      config.Config
	broker   broker.Broker
	store    store.Store
	hub      *hub.Hub
	verifier *auth.Verifier
	// ownVerifier says New built verifier (from cfg.Auth), so Run closes it.
	ownVerifier bool
	authz       *auth.Authorizer
	metrics     *metrics.Metrics
	log         *slog.Logger
	id          string

	seed     maphash.Seed
	subLocks [numLocks]sync.Mutex // serialise broker subscribe/unsubscribe per channel
	chanMu   [numLocks]sync.Mutex // guards chans shard
	chans    [numLocks]map[string]*chanState

	running      atomic.Bool
	shuttingDown atomic.Bool

	// reads merges read receipts per channel before broadcasting them.
	reads *receiptBatcher
	// presence batches the periodic presence refreshes (presence.go).
	presence *presenceBatcher
	// budgets are the per-user command budgets (budgets.go).
	budgets userBudgets
	// fills are the goroutines filling gaps from the store, off the
	// broker's delivery path; Run waits for them.
	fills sync.WaitGroup
	// emu routes bidirectional-emulation requests (emulation.go).
	emu emulation
	// brokerDown is when the broker was first seen unreachable in the
	// current outage (readiness.go); zero while it is reachable.
	brokerDownMu sync.Mutex
	brokerDown   time.Time
	// now is the clock of readiness (tests move it).
	now func() time.Time
	// groups are the rules of group namespaces, inboxes and search (groups.go).
	groups *groups.Service
	// dir routes channels with history by the store's directory
	// (directory.go); nil when the store or broker cannot.
	dir *directory
}

// Option customises a Node.
type Option func(*Node)

// WithMetrics uses m instead of a fresh set of collectors.
func WithMetrics(m *metrics.Metrics) Option { return func(n *Node) { n.metrics = m } }

// WithID sets the node's identity (the one its broker was given).
func WithID(id string) Option { return func(n *Node) { n.id = id } }

// NewID returns a random node identity.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WithVerifier replaces the token verifier built from cfg.Auth (tests).
func WithVerifier(v *auth.Verifier) Option { return func(n *Node) { n.verifier = v } }

// New builds a node. It reads the auth key files named in cfg (a missing
// current key is an error naming the config key).
func New(cfg config.Config, b broker.Broker, s store.Store, logger *slog.Logger, opts ...Option) (*Node, error) {
	if logger == nil {
		logger = slog.Default()
	}
	n := &Node{cfg: cfg, broker: b, store: s, hub: hub.New(), authz: auth.NewAuthorizer(cfg), seed: maphash.MakeSeed(), now: time.Now}
	for i := range n.chans {
		n.chans[i] = map[string]*chanState{}
	}
	n.id = NewID()
	for _, o := range opts {
		o(n)
	}
	// A broker that addresses nodes knows this node by its own id (the
	// server gives both the same one; a broker built apart has its own).
	if np, ok := b.(broker.NodePublisher); ok && np.NodeID() != "" {
		n.id = np.NodeID()
	}
	n.log = logger.With("node", n.id)
	n.dir = newDirectory(cfg, b, s, n.id)
	n.groups = groups.New(cfg, n.authz, s, groupEffects{n}, n.log)
	n.reads = newReceiptBatcher(ReceiptInterval, n.publishReceipts)
	refreshDelay := MaxPresenceRefreshDelay
	if ping := cfg.HTTP.PingInterval.D(); ping > 0 {
		refreshDelay = min(refreshDelay, ping/4)
	}
	n.presence = newPresenceBatcher(refreshDelay, s.AddPresences, n.log)
	if n.metrics == nil {
		n.metrics = metrics.New()
	}
	if sr, ok := b.(broker.SendReporter); ok {
		sr.ReportSends(n.metrics.Sent)
	}
	if n.verifier == nil {
		v, err := auth.NewVerifier(cfg.Auth)
		if err != nil {
			return nil, err
		}
		n.verifier, n.ownVerifier = v, true
	}
	return n, nil
}

// Run runs the broker's delivery, and the retry of publications the broker
// did not accept, until ctx is cancelled; then it stops the node's
// background work (batchers, the JWKS refresh of a verifier it built).
func (n *Node) Run(ctx context.Context) error {
	n.running.Store(true)
	defer n.running.Store(false)
	retryCtx, stop := context.WithCancel(ctx)
	retried := make(chan struct{})
	go func() {
		defer close(retried)
		if n.dir == nil {
			n.rebroadcastLoop(retryCtx)
			return
		}
		var wg sync.WaitGroup
		wg.Go(func() { n.directoryLoop(retryCtx) })
		n.rebroadcastLoop(retryCtx)
		wg.Wait()
	}()
	defer func() {
		stop()
		<-retried
		n.fills.Wait()       // each bounded by its store timeout
		n.groups.Wait()      // inbox pushes, each bounded by its timeout
		n.emu.running.Wait() // each bounded by emulationWait
		n.reads.stop()
		n.presence.stop()
		if n.ownVerifier {
			n.verifier.Close() // its JWKS refresh
		}
	}()
	return n.broker.Run(ctx, n)
}

// ID is this node's random identity (shown to clients in the connect result).
func (n *Node) ID() string                   { return n.id }
func (n *Node) Config() *config.Config       { return &n.cfg }
func (n *Node) Hub() *hub.Hub                { return n.hub }
func (n *Node) Metrics() *metrics.Metrics    { return n.metrics }
func (n *Node) Logger() *slog.Logger         { return n.log }
func (n *Node) Verifier() *auth.Verifier     { return n.verifier }
func (n *Node) Authorizer() *auth.Authorizer { return n.authz }
func (n *Node) Store() store.Store           { return n.store }

// SetShuttingDown marks the node as draining: /readyz fails and new
// connections are refused.
func (n *Node) SetShuttingDown() { n.shuttingDown.Store(true) }

// ShuttingDown reports whether the node is draining.
func (n *Node) ShuttingDown() bool { return n.shuttingDown.Load() }

func (n *Node) lockIndex(channel string) int { return int(maphash.String(n.seed, channel) % numLocks) }

func (n *Node) state(channel string) *chanState {
	i := n.lockIndex(channel)
	n.chanMu[i].Lock()
	defer n.chanMu[i].Unlock()
	return n.chans[i][channel]
}

// Subscribe adds s to channel's local subscribers and, for the channel's first
// local subscriber, subscribes this node in the broker and records the stream
// position from which gaps are detected.
func (n *Node) Subscribe(ctx context.Context, channel string, s hub.Subscriber) error {
	i := n.lockIndex(channel)
	n.subLocks[i].Lock()
	defer n.subLocks[i].Unlock()
	n.chanMu[i].Lock()
	st := n.chans[i][channel]
	if st == nil {
		st = &chanState{}
		n.chans[i][channel] = st
	}
	n.chanMu[i].Unlock()
	if !n.hub.AddSub(channel, s) {
		n.metrics.Subscriptions.Inc()
		return nil
	}
	if n.directed(channel) {
		if err := n.register(ctx, channel, st); err != nil {
			n.hub.RemoveSub(channel, s)
			n.dropState(channel)
			return err
		}
		n.metrics.Subscriptions.Inc()
		return nil
	}
	if err := n.broker.Subscribe(ctx, channel); err != nil {
		n.hub.RemoveSub(channel, s)
		n.dropState(channel)
		return fmt.Errorf("broker subscribe %q: %w", channel, err)
	}
	n.metrics.Subscriptions.Inc()
	if !n.ordered(channel) {
		return nil // no gap detection, no position to read
	}
	pos, err := n.store.Position(ctx, channel)
	if err != nil {
		n.log.Warn("read position for gap detection", "channel", channel, "error", err)
		return nil
	}
	st.startAt(pos)
	return nil
}

func (n *Node) dropState(channel string) {
	i := n.lockIndex(channel)
	n.chanMu[i].Lock()
	delete(n.chans[i], channel)
	n.chanMu[i].Unlock()
}

// Unsubscribe removes s from channel and unsubscribes the node in the broker
// after the channel's last local subscriber.
func (n *Node) Unsubscribe(ctx context.Context, channel string, s hub.Subscriber) {
	i := n.lockIndex(channel)
	n.subLocks[i].Lock()
	defer n.subLocks[i].Unlock()
	if n.hub.NumSubscribers(channel) == 0 {
		return
	}
	before := n.hub.NumSubscribers(channel)
	last := n.hub.RemoveSub(channel, s)
	if n.hub.NumSubscribers(channel) < before {
		n.metrics.Subscriptions.Dec()
	}
	if !last {
		return
	}
	n.dropState(channel)
	if n.directed(channel) {
		n.unregister(ctx, channel)
		return
	}
	if err := n.broker.Unsubscribe(ctx, channel); err != nil {
		n.log.Warn("broker unsubscribe", "channel", channel, "error", err)
	}
}

// ToProtoPublication converts a stored publication to its wire form.
func ToProtoPublication(p *message.Publication) *protocol.Publication {
	return &protocol.Publication{Data: p.Data, Info: ToProtoInfo(p.Info), Offset: p.Offset, Tags: p.Tags, Time: p.Time}
}

// ToProtoInfo converts client info to its wire form (nil stays nil).
func ToProtoInfo(i *message.ClientInfo) *protocol.ClientInfo {
	if i == nil {
		return nil
	}
	return &protocol.ClientInfo{User: i.User, Client: i.Client, ConnInfo: i.ConnInfo, ChanInfo: i.ChanInfo}
}

// HandleJoin implements broker.Handler.
func (n *Node) HandleJoin(channel string, info *message.ClientInfo) {
	n.metrics.BroadcastReceivers.Add(float64(n.hub.BroadcastJoin(channel, ToProtoInfo(info))))
}

// HandleLeave implements broker.Handler.
func (n *Node) HandleLeave(channel string, info *message.ClientInfo) {
	n.metrics.BroadcastReceivers.Add(float64(n.hub.BroadcastLeave(channel, ToProtoInfo(info))))
}

var (
	_ broker.Handler            = (*Node)(nil)
	_ broker.ResubscribeHandler = (*Node)(nil)
)

// ErrDataNotJSON answers a publish of data that is not JSON in a namespace
// without allowBinary.
var ErrDataNotJSON = &codes.Error{Code: codes.ErrBadRequest.Code, Message: "bad request: data must be JSON (the namespace does not set allowBinary)"}

// JSONCarries reports whether a JSON-protocol client can be sent pub (its
// data is embedded raw, so it must be JSON). Binary
// publications (namespaces with allowBinary) are left out of what JSON
// clients get, never a reason to disconnect them.
func JSONCarries(pub *message.Publication) bool {
	return json.Valid(pub.Data)
}

// PublishOptions tune one publish.
type PublishOptions struct {
	// IdempotencyKey deduplicates retries of the same publish.
	IdempotencyKey string
	Tags           map[string]string
}

// Publish stores a publication and fans it out through the broker. A
// duplicate (same idempotency key) returns the first result and is not
// broadcast again.
func (n *Node) Publish(ctx context.Context, channel string, data []byte, info *message.ClientInfo, opts PublishOptions) (store.AppendResult, error) {
	ns, err := n.authz.Namespace(channel)
	if err != nil {
		return store.AppendResult{}, err
	}
	if !ns.AllowBinary && !json.Valid(data) {
		// Every publish path (client command, rpc, HTTP API, edit) comes
		// here: data a JSON client cannot carry never enters a JSON room.
		return store.AppendResult{}, ErrDataNotJSON
	}
	start := time.Now()
	res, err := n.store.Append(ctx, channel, &message.Publication{Data: data, Info: info, Tags: opts.Tags}, store.AppendOptions{
		HistorySize: ns.History.Size, HistoryTTL: ns.History.TTL.D(),
		IdempotencyKey: opts.IdempotencyKey, IdempotencyTTL: IdempotencyTTL,
	})
	if err != nil {
		return store.AppendResult{}, fmt.Errorf("append to %q: %w", channel, err)
	}
	n.metrics.AppendSeconds.Observe(time.Since(start).Seconds())
	if res.Duplicate && !n.ordered(channel) {
		return res, nil
	}
	// A duplicate is fanned out again: the first attempt may have committed
	// and died before anything else (its replica gone between the commit and
	// the broker); receivers drop what they delivered already.
	if err := n.fanOut(ctx, channel, res); err != nil {
		return store.AppendResult{}, err
	}
	if !res.Duplicate {
		// Inboxes and the search index follow the publication; it is
		// committed and delivered whatever happens to them.
		n.groups.Published(ctx, channel, res.Publication)
	}
	return res, nil
}

// PublishEphemeral fans out a publication that is never stored (offset 0),
// such as a typing indicator.
func (n *Node) PublishEphemeral(ctx context.Context, channel string, data []byte, info *message.ClientInfo, tags map[string]string) error {
	pub := &message.Publication{Data: data, Info: info, Tags: tags, Time: time.Now().UnixMilli()}
	if n.directed(channel) {
		return n.sendEphemeral(ctx, channel, func() { n.HandlePublication(channel, pub, message.StreamPosition{}) }, func(nodes []string) error {
			return n.dir.broker.PublishTo(ctx, nodes, channel, pub, message.StreamPosition{})
		})
	}
	return n.broker.Publish(ctx, channel, pub, message.StreamPosition{})
}

// SubscribedPosition is the position a new subscription's reply carries in a
// channel this node is subscribed to (Subscribe returned): what the node has
// delivered in it so far, with no store round trip. That is exact enough:
// the subscriber is in the hub before this is read under the channel's lock,
// and delivery updates the position and hands to the hub under the same
// lock, so every publication past the returned offset still reaches the
// subscriber, and none at or before it is owed. One committed but still in
// flight is delivered live rather than counted in the reply. When the node
// knows no position (the read at the channel's first subscription failed,
// or the channel is not ordered), it asks the store.
func (n *Node) SubscribedPosition(ctx context.Context, channel string) (message.StreamPosition, error) {
	if n.ordered(channel) {
		if st := n.state(channel); st != nil {
			st.mu.Lock()
			pos, known := message.StreamPosition{Epoch: st.epoch, Offset: st.last}, st.known
			st.mu.Unlock()
			if known {
				return pos, nil
			}
		}
	}
	return n.store.Position(ctx, channel)
}

// History reads a channel's history. A Since position with an empty epoch
// (what the SDKs send for a position the app built itself) matches the
// stream's current epoch, as in Centrifugo: the epoch check is skipped.
func (n *Node) History(ctx context.Context, channel string, opts store.HistoryOptions) ([]*message.Publication, message.StreamPosition, error) {
	if opts.Since != nil && opts.Since.Epoch == "" {
		pos, err := n.store.Position(ctx, channel)
		if err != nil {
			return nil, pos, err
		}
		since := *opts.Since
		since.Epoch = pos.Epoch
		opts.Since = &since
	}
	return n.store.History(ctx, channel, opts)
}

// Join records presence and, when the namespace wants join/leave and this is
// the user's first connection in the channel, announces the join. A user with
// three tabs joins once.
func (n *Node) Join(ctx context.Context, channel string, ns config.Namespace, info message.ClientInfo) error {
	if !ns.Presence && !ns.JoinLeave {
		return nil
	}
	if err := n.store.AddPresence(ctx, channel, info); err != nil {
		return fmt.Errorf("add presence: %w", err)
	}
	if !ns.JoinLeave {
		return nil
	}
	if others, err := n.userConnections(ctx, channel, info.User, info.Client); err != nil || others > 0 {
		return err
	}
	if n.directed(channel) {
		return n.sendEphemeral(ctx, channel, func() { n.HandleJoin(channel, &info) }, func(nodes []string) error {
			return n.dir.broker.PublishJoinTo(ctx, nodes, channel, &info)
		})
	}
	return n.broker.PublishJoin(ctx, channel, &info)
}

// RefreshPresence keeps a connection's presence entry from expiring. The
// refresh is queued and written with others within MaxPresenceRefreshDelay;
// the store's errors are logged there.
func (n *Node) RefreshPresence(_ context.Context, channel string, info message.ClientInfo) error {
	n.presence.add(channel, info)
	return nil
}

// Leave removes presence and announces the leave after the user's last
// connection in the channel.
func (n *Node) Leave(ctx context.Context, channel string, ns config.Namespace, info message.ClientInfo) error {
	if !ns.Presence && !ns.JoinLeave {
		return nil
	}
	n.presence.forget(channel, info.Client)
	if err := n.store.RemovePresence(ctx, channel, info.Client); err != nil {
		return fmt.Errorf("remove presence: %w", err)
	}
	if !ns.JoinLeave {
		return nil
	}
	if others, err := n.userConnections(ctx, channel, info.User, info.Client); err != nil || others > 0 {
		return err
	}
	if n.directed(channel) {
		return n.sendEphemeral(ctx, channel, func() { n.HandleLeave(channel, &info) }, func(nodes []string) error {
			return n.dir.broker.PublishLeaveTo(ctx, nodes, channel, &info)
		})
	}
	return n.broker.PublishLeave(ctx, channel, &info)
}

func (n *Node) userConnections(ctx context.Context, channel, user, except string) (int, error) {
	p, err := n.store.Presence(ctx, channel)
	if err != nil {
		return 0, fmt.Errorf("read presence: %w", err)
	}
	count := 0
	for client, e := range p {
		if client != except && e.User == user {
			count++
		}
	}
	return count, nil
}

// Presence lists who is in a channel.
func (n *Node) Presence(ctx context.Context, channel string) (map[string]message.ClientInfo, error) {
	return n.store.Presence(ctx, channel)
}

// PresenceStats counts connections and distinct users in a channel.
func (n *Node) PresenceStats(ctx context.Context, channel string) (int, int, error) {
	return n.store.PresenceStats(ctx, channel)
}

// UserConnectionsAllowed reports whether the user may open another connection
// on this node: the fast check, without the store. AdmitConnection then
// applies limits.connectionsPerUser across the cluster.
func (n *Node) UserConnectionsAllowed(user string) bool {
	limit := n.cfg.Limits.ConnectionsPerUser
	return limit <= 0 || len(n.hub.UserConns(user)) < limit
}

// ErrorCode maps an error to the protocol error a client should see.
func ErrorCode(err error) *codes.Error {
	var pe *codes.Error
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, store.ErrEpochMismatch) {
		return codes.ErrUnrecoverablePosition
	}
	return codes.ErrInternal
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
