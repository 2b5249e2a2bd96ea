package node

// Directory routing: in channels with history, a replica registers in the
// store's subscription directory (store.Directory) at its first local
// subscriber instead of binding a RabbitMQ routing key, and a publisher
// sends each publication to the replicas its append found registered
// (broker.Directed), not to itself: its own subscribers got it at commit
// (fanOut). That saves RabbitMQ the copy the publisher would drop, the
// binding per channel and replica (docs/scaling.md: binding churn is the
// first limit at scale), and the round trip of a bind on the first
// subscription: registration and the position read are one statement batch.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// DirectoryHeartbeat is how often a node tells the directory it is
// alive (well inside the store's node TTL, a minute for PostgreSQL) and
// looks for clients of an older release.
const DirectoryHeartbeat = 10 * time.Second

// directory is set when both the store and the broker can route by it.
type directory struct {
	store  store.Directory
	broker broker.Directed
	// forced is broker.routing: bindings.
	forced bool
	// compat: channels are also bound by name, and a publication goes out
	// even when no other replica is registered, because a replica of an
	// older release may be listening (it hears only bindings) or
	// publishing (heard only through them). On while the store has such
	// clients (LegacyClients) or when forced; on until the first check.
	compat atomic.Bool
	// clean counts heartbeats in a row without legacy clients; heartbeatMu
	// serialises heartbeats (the loop's and tests').
	clean       int
	heartbeatMu sync.Mutex
	// alive: the directory has seen this node alive; lost: it had swept
	// the node's registrations, which are being made again.
	alive, lost atomic.Bool
	// aliveMu serialises the first NodeAlive and legacy check (ensureAlive).
	aliveMu sync.Mutex
}

func newDirectory(cfg config.Config, b broker.Broker, s store.Store, id string) *directory {
	ds, ok1 := s.(store.Directory)
	db, ok2 := b.(broker.Directed)
	if !ok1 || !ok2 || db.NodeID() != id {
		return nil
	}
	d := &directory{store: ds, broker: db, forced: cfg.Broker.Routing == config.RoutingBindings}
	d.compat.Store(true)
	return d
}

// directed reports whether channel is routed by the directory.
func (n *Node) directed(channel string) bool {
	return n.dir != nil && n.ordered(channel)
}

// ensureAlive records the node in the directory before its first
// registration, so the store's sweep knows when it dies, and decides
// whether channels must also be bound by name. Registrations wait for it,
// so none is made under a mode it then changes.
func (n *Node) ensureAlive(ctx context.Context) error {
	if n.dir.alive.Load() {
		return nil
	}
	n.dir.aliveMu.Lock()
	defer n.dir.aliveMu.Unlock()
	if n.dir.alive.Load() {
		return nil
	}
	if _, err := n.dir.store.NodeAlive(ctx, n.id); err != nil {
		return err
	}
	legacy, err := n.dir.store.LegacyClients(ctx)
	if err != nil {
		return err
	}
	n.dir.compat.Store(n.dir.forced || legacy > 0)
	n.dir.alive.Store(true)
	return nil
}

// register subscribes the node to channel through the directory and
// records the position gaps are detected from. The broker learns of the
// channel first, so a publication addressed to the node as soon as the
// registration commits is not filtered out.
func (n *Node) register(ctx context.Context, channel string, st *chanState) error {
	if err := n.ensureAlive(ctx); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	err := n.dir.broker.Track(ctx, channel)
	if err == nil && n.dir.compat.Load() {
		err = n.broker.Subscribe(ctx, channel)
	}
	if err != nil {
		n.unsubscribeBroker(ctx, channel)
		return fmt.Errorf("broker subscribe %q: %w", channel, err)
	}
	pos, err := n.dir.store.Register(ctx, channel, n.id)
	if err != nil {
		n.unsubscribeBroker(ctx, channel)
		return fmt.Errorf("register %q in the directory: %w", channel, err)
	}
	st.startAt(pos)
	return nil
}

// unregister undoes register after the channel's last local subscriber.
func (n *Node) unregister(ctx context.Context, channel string) {
	if err := n.dir.store.Unregister(ctx, channel, n.id); err != nil {
		// Messages keep coming until the node's registrations expire or it
		// registers the channel again; the broker drops them meanwhile.
		n.log.Warn("directory unregister", "channel", channel, "error", err)
	}
	n.unsubscribeBroker(ctx, channel)
}

// unsubscribeBroker unbinds channel (when bound) and untracks it.
func (n *Node) unsubscribeBroker(ctx context.Context, channel string) {
	if err := n.broker.Unsubscribe(ctx, channel); err != nil {
		n.log.Warn("broker unsubscribe", "channel", channel, "error", err)
	}
	if err := n.dir.broker.Untrack(ctx, channel); err != nil {
		n.log.Warn("broker untrack", "channel", channel, "error", err)
	}
}

// publishDirected sends a committed publication to the other replicas
// registered for its channel: those its append read (res), or, when the
// store could not say, those registered now (as exact: a registration
// after the commit reads a position that counts the publication).
// It reports whether anything went to the broker.
func (n *Node) publishDirected(ctx context.Context, channel string, res store.AppendResult) (sent bool, err error) {
	nodes := res.Nodes
	if !res.Routed {
		if nodes, err = n.dir.store.Nodes(ctx, channel); err != nil {
			return false, err
		}
	}
	others := slices.DeleteFunc(slices.Clone(nodes), func(id string) bool { return id == n.id })
	if n.dir.compat.Load() {
		return true, n.dir.broker.PublishTo(ctx, others, channel, res.Publication, res.Position)
	}
	if len(others) == 0 {
		n.metrics.DirectedSkipped.Inc()
		return false, nil
	}
	// Only this release's replicas listen: under load the broker packs
	// publications for the same replicas into one message.
	return true, n.dir.broker.SendTo(ctx, others, channel, res.Publication, res.Position)
}

// sendDirected hands a message of a directed channel to every replica
// registered for it, this one included (its subscribers get it back
// through the broker).
func (n *Node) sendDirected(ctx context.Context, channel string, send func(nodes []string) error) error {
	nodes, err := n.dir.store.Nodes(ctx, channel)
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if len(nodes) == 0 && !n.dir.compat.Load() {
		return nil
	}
	return send(nodes)
}

// sendEphemeral hands an ephemeral publication, a join or a leave of a
// directed channel to this replica's subscribers (local) and to the other
// replicas registered for it (send), as fanOut does with publications.
// While channels are also bound by name (compat), this replica's own
// copy comes back through its binding, and nothing without an offset could
// tell it from the first: it goes through the broker then, as before.
func (n *Node) sendEphemeral(ctx context.Context, channel string, local func(), send func(nodes []string) error) error {
	if n.dir.compat.Load() {
		return n.sendDirected(ctx, channel, send)
	}
	nodes, err := n.dir.store.Nodes(ctx, channel)
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	local()
	others := slices.DeleteFunc(slices.Clone(nodes), func(id string) bool { return id == n.id })
	if len(others) == 0 {
		return nil
	}
	return send(others)
}

// directoryLoop keeps the node alive in the directory and follows the
// legacy clients: it binds channels by name when one appears, and unbinds
// them once none was seen for two heartbeats in a row. When the store had
// taken the node for dead (an outage longer than the store's node TTL)
// and swept its registrations, it registers its channels again and
// recovers from history what it was not sent meanwhile.
func (n *Node) directoryLoop(ctx context.Context) {
	t := time.NewTicker(DirectoryHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.DirectoryHeartbeat(ctx)
	}
}

// DirectoryHeartbeat is one turn of directoryLoop, which runs it every
// DirectoryHeartbeat; tests call it to move on without waiting. Nothing
// without a directory.
func (n *Node) DirectoryHeartbeat(ctx context.Context) {
	if n.dir == nil {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	known, err := n.dir.store.NodeAlive(hctx, n.id)
	var legacy int
	if err == nil {
		legacy, err = n.dir.store.LegacyClients(hctx)
	}
	cancel()
	if err != nil {
		n.log.Debug("directory heartbeat", "error", err)
		return
	}
	n.dir.heartbeatMu.Lock()
	defer n.dir.heartbeatMu.Unlock()
	if !known && n.dir.alive.Load() {
		n.log.Warn("the directory had taken this node for dead; registering its channels again")
		n.dir.lost.Store(true)
	}
	n.dir.aliveMu.Lock()
	if !n.dir.alive.Swap(true) {
		// No registration yet (they wait for aliveMu): nothing is
		// bound, whatever compat said.
		n.dir.compat.Store(n.dir.forced || legacy > 0)
	}
	n.dir.aliveMu.Unlock()
	if n.dir.lost.Load() && n.reregister(ctx) {
		n.dir.lost.Store(false)
	}
	if legacy > 0 {
		n.dir.clean = 0
	} else {
		n.dir.clean++
	}
	switch compat := n.dir.compat.Load(); {
	case !compat && (legacy > 0 || n.dir.forced):
		n.log.Info("a client of an older release is connected to the database: binding channels by name too", "clients", legacy)
		n.setCompat(ctx, true)
	case compat && !n.dir.forced && n.dir.clean >= 2:
		n.log.Info("no client of an older release is connected to the database: routing by the directory alone")
		n.setCompat(ctx, false)
	}
}

// setCompat turns the binding of directed channels by name on or off and
// binds or unbinds those held now. The flag changes first, so a
// registration from now on follows it; each channel is switched under its
// subscribe lock. Unbinding keeps the channel tracked: addressed messages
// keep arriving throughout.
func (n *Node) setCompat(ctx context.Context, on bool) {
	n.dir.compat.Store(on)
	for _, ch := range n.directedChannels() {
		i := n.lockIndex(ch)
		n.subLocks[i].Lock()
		if n.hub.NumSubscribers(ch) > 0 {
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			if on {
				err = n.broker.Subscribe(bctx, ch)
			} else {
				err = n.broker.Unsubscribe(bctx, ch)
			}
			cancel()
			if err != nil {
				n.log.Warn("switch channel binding", "channel", ch, "bind", on, "error", err)
			}
		}
		n.subLocks[i].Unlock()
	}
}

// directedChannels lists the directed channels the node holds state for.
func (n *Node) directedChannels() []string {
	var channels []string
	for i := range n.chans {
		n.chanMu[i].Lock()
		for ch := range n.chans[i] {
			if n.directed(ch) {
				channels = append(channels, ch)
			}
		}
		n.chanMu[i].Unlock()
	}
	return channels
}

// reregister registers every directed channel with local subscribers
// again, then fills what was committed since each one's last delivery. It
// reports whether every registration succeeded (else the next heartbeat
// tries again).
func (n *Node) reregister(ctx context.Context) bool {
	channels := n.directedChannels()
	var done []string
	ok := true
	for _, ch := range channels {
		i := n.lockIndex(ch)
		n.subLocks[i].Lock()
		if n.hub.NumSubscribers(ch) > 0 {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := n.dir.store.Register(rctx, ch, n.id)
			cancel()
			if err != nil {
				n.log.Warn("directory register again", "channel", ch, "error", err)
				ok = false
			} else {
				done = append(done, ch)
			}
		}
		n.subLocks[i].Unlock()
	}
	if len(done) > 0 {
		n.Resubscribed(done)
	}
	return ok
}

// republish sends an outbox entry again: in a directed channel to every
// replica registered, this one included (the replica sweeping may not be
// the one whose subscribers got the publication at commit).
func (n *Node) republish(ctx context.Context, channel string, pub *message.Publication, pos message.StreamPosition) error {
	if !n.directed(channel) {
		return n.broker.Publish(ctx, channel, pub, pos)
	}
	return n.sendDirected(ctx, channel, func(nodes []string) error {
		return n.dir.broker.PublishTo(ctx, nodes, channel, pub, pos)
	})
}
