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
	"github.com/parley-chat/parley/chatserver/hub"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/metrics"
	"github.com/parley-chat/parley/chatserver/store"
)

// IdempotencyTTL is how long a publish key deduplicates retries.
const IdempotencyTTL = 5 * time.Minute

const numLocks = 64

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
}

// RebroadcastInterval is how often unsent publications are retried.
const RebroadcastInterval = 250 * time.Millisecond

// chanState is what the node delivered last in a channel, for gap detection.
type chanState struct {
	mu   sync.Mutex
	last uint64
	// known says last is a real position (read from the store or delivered),
	// not "nothing known yet": 0 of a fresh channel is a position too.
	known bool
	epoch string
	// filling says a goroutine is filling a gap from the store (fill): what
	// arrives meanwhile waits in pending, to be delivered after the gap.
	filling bool
	pending []arrival
	// fillTo is the offset the running fill delivers up to (excluded);
	// catchUp an offset a broker reconnect found in the store, to fill to
	// (included) once the running fill is done.
	fillTo, catchUp uint64
}

// arrival is a publication as the broker handed it over.
type arrival struct {
	pub *message.Publication
	sp  message.StreamPosition
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
	n := &Node{cfg: cfg, broker: b, store: s, hub: hub.New(), authz: auth.NewAuthorizer(cfg), seed: maphash.MakeSeed()}
	for i := range n.chans {
		n.chans[i] = map[string]*chanState{}
	}
	n.id = NewID()
	for _, o := range opts {
		o(n)
	}
	n.log = logger.With("node", n.id)
	n.reads = newReceiptBatcher(ReceiptInterval, n.publishReceipts)
	refreshDelay := MaxPresenceRefreshDelay
	if ping := cfg.HTTP.PingInterval.D(); ping > 0 {
		refreshDelay = min(refreshDelay, ping/4)
	}
	n.presence = newPresenceBatcher(refreshDelay, s.AddPresences, n.log)
	if n.metrics == nil {
		n.metrics = metrics.New()
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
		n.rebroadcastLoop(retryCtx)
	}()
	defer func() {
		stop()
		<-retried
		n.fills.Wait() // each bounded by its store timeout
		n.reads.stop()
		n.presence.stop()
		if n.ownVerifier {
			n.verifier.Close() // its JWKS refresh
		}
	}()
	return n.broker.Run(ctx, n)
}

// UnsentBatch bounds the outbox entries one sweep re-publishes.
const UnsentBatch = 100

// rebroadcastLoop sweeps the store's outbox (store.Outbox): publications
// committed while their replica could not reach the broker, whichever
// replica that was. Re-publishing a channel's newest one lets the other
// replicas see the gap before it and fill it from history, even if nothing
// else is published in the channel and its replica is gone.
func (n *Node) rebroadcastLoop(ctx context.Context) {
	t := time.NewTicker(RebroadcastInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.sweepUnsent(ctx)
	}
}

func (n *Node) sweepUnsent(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	entries, err := n.store.Unsent(sctx, UnsentBatch)
	if err != nil {
		n.log.Debug("read outbox", "error", err)
		return
	}
	for _, u := range entries {
		pubs, _, err := n.store.History(sctx, u.Channel, store.HistoryOptions{
			Since: &message.StreamPosition{Offset: u.Position.Offset - 1, Epoch: u.Position.Epoch}, Limit: 1,
		})
		switch {
		case errors.Is(err, store.ErrEpochMismatch), err == nil && (len(pubs) == 0 || pubs[0].Offset != u.Position.Offset):
			// History was removed or trimmed past it: nothing left to deliver.
		case err != nil:
			return // the store is failing: next tick
		default:
			if err := n.broker.Publish(sctx, u.Channel, pubs[0], u.Position); err != nil {
				return // the broker is still down for this replica: next tick
			}
		}
		if err := n.store.ClearUnsent(sctx, u.Channel, u.Position); err != nil {
			return
		}
	}
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

// Ready reports whether the node can serve: not draining, broker delivering,
// store answering.
func (n *Node) Ready(ctx context.Context) error {
	if n.shuttingDown.Load() {
		return errors.New("shutting down")
	}
	if err := n.broker.Ready(ctx); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if _, err := n.store.Position(ctx, "__parley_readyz"); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

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
	st.mu.Lock()
	if pos.Offset > st.last {
		st.last = pos.Offset
	}
	st.known = true
	if st.epoch == "" {
		st.epoch = pos.Epoch
	}
	st.mu.Unlock()
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

// HandlePublication implements broker.Handler: deliver in offset order, fill
// gaps from the store, drop duplicates.
func (n *Node) HandlePublication(channel string, pub *message.Publication, sp message.StreamPosition) {
	n.HandlePublications(channel, []*message.Publication{pub}, []message.StreamPosition{sp})
}

// HandlePublications implements broker.BatchHandler: HandlePublication for
// each, with what is deliverable handed to the hub together. It never waits
// for the store: a gap is filled by a goroutine of its own (fill), and the
// channel's publications arriving meanwhile wait behind it.
func (n *Node) HandlePublications(channel string, pubs []*message.Publication, sps []message.StreamPosition) {
	if !n.ordered(channel) {
		// Nothing to fill a gap from: at most once, as it comes.
		n.deliver(channel, pubs)
		return
	}
	st := n.state(channel)
	if st == nil {
		return
	}
	items := make([]arrival, len(pubs))
	for i, pub := range pubs {
		items[i] = arrival{pub, sps[i]}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.filling {
		st.pending = append(st.pending, items...)
		return
	}
	if rest := n.orderLocked(channel, st, items); len(rest) > 0 {
		n.startFillLocked(channel, st, rest[0].pub.Offset, rest)
	}
}

// orderLocked delivers items in offset order, dropping what was delivered
// already, and stops at the first gap: it returns the items from the one
// after the gap on (nil when there was none). Called with st.mu held.
func (n *Node) orderLocked(channel string, st *chanState, items []arrival) []arrival {
	ready := make([]*message.Publication, 0, len(items))
	for i, it := range items {
		pub, sp := it.pub, it.sp
		if pub.Offset == 0 { // never stored (typing indicator): nothing to order
			ready = append(ready, pub)
			continue
		}
		if st.epoch != "" && sp.Epoch != "" && sp.Epoch != st.epoch {
			// The stream was reset: positions from the old epoch mean nothing.
			st.epoch, st.last = sp.Epoch, 0
		}
		if st.epoch == "" {
			st.epoch = sp.Epoch
		}
		switch {
		case !st.known:
		case pub.Offset <= st.last:
			continue // already delivered (duplicate or filled earlier)
		case pub.Offset > st.last+1:
			n.deliver(channel, ready) // what came before the gap goes first
			return items[i:]
		}
		ready = append(ready, pub)
		st.last, st.known = pub.Offset, true
	}
	n.deliver(channel, ready)
	return nil
}

// startFillLocked starts filling the gap (st.last, to) from the store, with
// pending delivered after it. Called with st.mu held and no fill running.
func (n *Node) startFillLocked(channel string, st *chanState, to uint64, pending []arrival) {
	st.filling, st.fillTo, st.pending = true, to, pending
	n.fills.Add(1)
	go func() {
		defer n.fills.Done()
		n.fill(channel, st)
	}()
}

// fill fills st's gaps from the store until none is left: the query runs
// without the channel's lock, so the broker keeps handing over (and the
// channel queues behind the gap). A gap the store cannot fill disconnects
// the channel's subscribers with "insufficient state" so their clients
// recover from history when they reconnect; delivery then goes on after it.
func (n *Node) fill(channel string, st *chanState) {
	for {
		st.mu.Lock()
		from, epoch, to := st.last, st.epoch, st.fillTo
		st.mu.Unlock()
		var (
			pubs []*message.Publication
			err  error
		)
		missing := int(to - from - 1)
		if missing > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			pubs, _, err = n.store.History(ctx, channel, store.HistoryOptions{
				Since: &message.StreamPosition{Offset: from, Epoch: epoch}, Limit: missing,
			})
			cancel()
			n.metrics.GapFills.Inc()
		}
		st.mu.Lock()
		if missing > 0 && st.epoch == epoch {
			if err != nil || len(pubs) != missing {
				n.log.Warn("fill publication gap", "channel", channel, "from", from+1, "to", to-1, "got", len(pubs), "error", err)
				for _, s := range n.hub.Subscribers(channel) {
					s.Disconnect(codes.DisconnectInsufficientState)
				}
			} else {
				var ready []*message.Publication
				for _, p := range pubs {
					if p.Offset > st.last && p.Offset < to {
						ready = append(ready, p)
						st.last = p.Offset
					}
				}
				n.deliver(channel, ready)
			}
			st.last = max(st.last, to-1)
		}
		items := st.pending
		st.pending = nil
		if rest := n.orderLocked(channel, st, items); len(rest) > 0 {
			st.fillTo, st.pending = rest[0].pub.Offset, rest
			st.mu.Unlock()
			continue
		}
		if st.catchUp > st.last {
			st.fillTo, st.catchUp = st.catchUp+1, 0
			st.mu.Unlock()
			continue
		}
		st.filling, st.catchUp = false, 0
		st.mu.Unlock()
		return
	}
}

// ordered reports whether the node orders channel's publications and fills
// their gaps: only in namespaces with history (docs/guarantees.md). Without
// history, offsets still count publications but nothing is kept to fill a
// gap from, so reordering between two publishers must not look like a loss.
func (n *Node) ordered(channel string) bool {
	ns, err := n.authz.Namespace(channel)
	return err == nil && ns.History.Size > 0
}

func (n *Node) deliver(channel string, pubs []*message.Publication) {
	var count int
	switch len(pubs) {
	case 0:
		return
	case 1:
		count = n.hub.BroadcastPublication(channel, ToProtoPublication(pubs[0]))
	default:
		wire := make([]*protocol.Publication, len(pubs))
		for i, p := range pubs {
			wire[i] = ToProtoPublication(p)
		}
		count = n.hub.BroadcastPublications(channel, wire)
	}
	n.metrics.BroadcastReceivers.Add(float64(count * len(pubs)))
	for _, pub := range pubs {
		if pub.Time > 0 {
			n.metrics.PublishLatency.Observe(time.Since(time.UnixMilli(pub.Time)).Seconds())
		}
	}
}

// HandleJoin implements broker.Handler.
func (n *Node) HandleJoin(channel string, info *message.ClientInfo) {
	n.metrics.BroadcastReceivers.Add(float64(n.hub.BroadcastJoin(channel, ToProtoInfo(info))))
}

// HandleLeave implements broker.Handler.
func (n *Node) HandleLeave(channel string, info *message.ClientInfo) {
	n.metrics.BroadcastReceivers.Add(float64(n.hub.BroadcastLeave(channel, ToProtoInfo(info))))
}

// Resubscribed implements broker.ResubscribeHandler: after a broker
// reconnect, deliver what was missed in each channel from the store. It
// reads the positions in a goroutine of its own (the broker's must not wait
// for the store); a channel whose position cannot be read disconnects its
// subscribers with "insufficient state": what it missed is unknown, and a
// gap is never passed over silently.
func (n *Node) Resubscribed(channels []string) {
	n.fills.Add(1)
	go func() {
		defer n.fills.Done()
		for _, ch := range channels {
			st := n.state(ch)
			if st == nil || !n.ordered(ch) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			pos, err := n.store.Position(ctx, ch)
			cancel()
			if err != nil {
				n.log.Warn("position after broker resubscribe", "channel", ch, "error", err)
				for _, s := range n.hub.Subscribers(ch) {
					s.Disconnect(codes.DisconnectInsufficientState)
				}
				continue
			}
			st.mu.Lock()
			switch {
			case !st.known || pos.Epoch != st.epoch || pos.Offset <= st.last:
			case st.filling:
				st.catchUp = max(st.catchUp, pos.Offset)
			default:
				n.startFillLocked(ch, st, pos.Offset+1, nil)
			}
			st.mu.Unlock()
		}
	}()
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
	res, err := n.store.Append(ctx, channel, &message.Publication{Data: data, Info: info, Tags: opts.Tags}, store.AppendOptions{
		HistorySize: ns.History.Size, HistoryTTL: ns.History.TTL.D(),
		IdempotencyKey: opts.IdempotencyKey, IdempotencyTTL: IdempotencyTTL,
	})
	if err != nil {
		return store.AppendResult{}, fmt.Errorf("append to %q: %w", channel, err)
	}
	if res.Duplicate && !n.ordered(channel) {
		return res, nil
	}
	// A duplicate is fanned out again: the first attempt may have committed
	// and died before anything else (its replica gone between the commit and
	// the broker); receivers drop what they delivered already.
	if err := n.fanOut(ctx, channel, res); err != nil {
		return store.AppendResult{}, err
	}
	return res, nil
}

// fanOut hands a committed publication to the broker. When the broker does
// not take it, this node's subscribers get it now and, in a namespace with
// history, the store's outbox keeps it for whichever replica can re-publish
// it first (rebroadcastLoop); the publisher is told it was sent only once it
// is in one or the other. Without history delivery is at most once.
func (n *Node) fanOut(ctx context.Context, channel string, res store.AppendResult) error {
	err := n.broker.Publish(ctx, channel, res.Publication, res.Position)
	if err == nil {
		return nil
	}
	n.HandlePublication(channel, res.Publication, res.Position)
	if !n.ordered(channel) {
		n.log.Warn("broker publish failed; other replicas miss this publication", "channel", channel, "error", err)
		return nil
	}
	if merr := n.store.MarkUnsent(ctx, channel, res.Position); merr != nil {
		// Committed, but nobody would re-send it: not acknowledged, so the
		// publisher retries (with its key, answered as a duplicate and fanned out).
		return fmt.Errorf("publication %d of %q committed but neither the broker (%v) nor the outbox took it: %w", res.Position.Offset, channel, err, merr)
	}
	n.log.Warn("broker publish failed; the outbox will re-send it", "channel", channel, "offset", res.Publication.Offset, "error", err)
	return nil
}

// PublishEphemeral fans out a publication that is never stored (offset 0),
// such as a typing indicator.
func (n *Node) PublishEphemeral(ctx context.Context, channel string, data []byte, info *message.ClientInfo, tags map[string]string) error {
	pub := &message.Publication{Data: data, Info: info, Tags: tags, Time: time.Now().UnixMilli()}
	return n.broker.Publish(ctx, channel, pub, message.StreamPosition{})
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
