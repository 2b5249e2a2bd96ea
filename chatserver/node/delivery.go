package node

// Delivery: what the broker hands over reaches local subscribers in offset
// order, once; gaps are filled from the store off the broker's goroutine.

import (
	"context"
	"sync"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

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

// startAt records pos, read when the node subscribed to the channel, as
// where gap detection starts (never moving back past what was delivered).
func (st *chanState) startAt(pos message.StreamPosition) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if pos.Offset > st.last {
		st.last = pos.Offset
	}
	st.known = true
	if st.epoch == "" {
		st.epoch = pos.Epoch
	}
}

// arrival is a publication as the broker handed it over.
type arrival struct {
	pub *message.Publication
	sp  message.StreamPosition
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
