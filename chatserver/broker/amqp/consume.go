package amqp

// Consuming: what arrives in the node's queue is handed to the node, in
// runs of one channel where the handler takes batches.

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/message"
)

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
	case TypePack:
		return b.dispatchPack(h, d)
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

// dispatchPack hands a pack's publications (SendTo) to the handler, each
// run of one subscribed channel together; false when the pack is
// malformed (nothing of it is delivered then).
func (b *Broker) dispatchPack(h broker.Handler, d *amqp.Delivery) bool {
	entries, err := decodePack(d.Body)
	if err != nil {
		b.log.Warn("rejecting a malformed pack", "error", err)
		return false
	}
	bh, _ := h.(broker.BatchHandler)
	for i := 0; i < len(entries); {
		channel := entries[i].channel
		j := i + 1
		for j < len(entries) && entries[j].channel == channel {
			j++
		}
		run := entries[i:j]
		i = j
		if !b.subscribed(channel) {
			continue
		}
		if len(run) == 1 || bh == nil {
			for _, e := range run {
				h.HandlePublication(channel, e.pub, e.sp)
			}
			continue
		}
		pubs := make([]*message.Publication, len(run))
		sps := make([]message.StreamPosition, len(run))
		for k, e := range run {
			pubs[k], sps[k] = e.pub, e.sp
		}
		bh.HandlePublications(channel, pubs, sps)
	}
	return true
}
