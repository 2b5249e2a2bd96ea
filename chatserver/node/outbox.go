package node

// The outbox: committed publications the broker did not take, re-published
// by whichever replica can (store.Outbox).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// RebroadcastInterval is how often unsent publications are retried.
const RebroadcastInterval = 250 * time.Millisecond

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
	n.metrics.OutboxUnsent.Set(float64(len(entries)))
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
			if err := n.republish(sctx, u.Channel, pubs[0], u.Position); err != nil {
				return // the broker is still down for this replica: next tick
			}
		}
		if err := n.store.ClearUnsent(sctx, u.Channel, u.Position); err != nil {
			return
		}
	}
}

// fanOut hands a committed publication to this node's subscribers and to
// the broker. In a channel with history this node's subscribers get it at
// once, without the round trip through RabbitMQ: the copy the broker brings
// back is a duplicate that delivery drops by offset, and a publication of
// another replica that overtakes it is a gap filled from the store (offsets
// are committed in order under the channel row's lock, so the gap is
// there). When the broker does not take it, in a namespace with history the
// store's outbox keeps it for whichever replica can re-publish it first
// (rebroadcastLoop); the publisher is told it was sent only once it is in
// one or the other. Without history delivery is at most once and goes
// through the broker only, so nobody gets it twice.
func (n *Node) fanOut(ctx context.Context, channel string, res store.AppendResult) error {
	ordered := n.ordered(channel)
	if ordered {
		n.HandlePublication(channel, res.Publication, res.Position)
	}
	start := time.Now()
	var err error
	sent := true
	if ordered && n.dir != nil { // n.directed, without a second namespace lookup
		sent, err = n.publishDirected(ctx, channel, res)
	} else {
		err = n.broker.Publish(ctx, channel, res.Publication, res.Position)
	}
	if err == nil {
		if sent {
			n.metrics.BrokerPublishSeconds.Observe(time.Since(start).Seconds())
		}
		return nil
	}
	n.metrics.BrokerPublishFailures.Inc()
	if !ordered {
		n.HandlePublication(channel, res.Publication, res.Position)
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
