package amqp

// Publishing with publisher confirms, and the readiness probe that proves a
// publish comes back through the node's own queue.

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/message"
)

// publish sends one message and waits for its confirm. Concurrent callers
// share the confirm-mode channel, so their confirms are pipelined.
func (b *Broker) publish(ctx context.Context, key string, msg amqp.Publishing) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.PublishTimeout)
		defer cancel()
	}
	confirmed, err := b.publishDeferred(ctx, key, msg)
	if err != nil {
		return err
	}
	return confirmed()
}

// publishDeferred sends one message and returns the wait for its confirm,
// so a sender can put the next message on the wire before this one is
// confirmed. The wait ends with ctx, a lost connection or, at the latest,
// PublishTimeout after the send.
func (b *Broker) publishDeferred(ctx context.Context, key string, msg amqp.Publishing) (confirmed func() error, err error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	sess := b.session()
	if sess == nil {
		b.mu.RLock()
		why := b.lastErr
		b.mu.RUnlock()
		if why == nil {
			why = errors.New("not running")
		}
		return nil, fmt.Errorf("%w: not connected: %v", broker.ErrUnavailable, why)
	}
	msg.AppId = "parley"
	dc, err := sess.pub.PublishWithDeferredConfirmWithContext(ctx, exchangeFor(b, msg.Type), key, false, false, msg)
	if err != nil {
		return nil, fmt.Errorf("%w: publish: %v", broker.ErrUnavailable, err)
	}
	sent := time.Now()
	return func() error {
		// Every caller's ctx has a deadline today (publish and the drains
		// set one); a timer per confirm is made only for one that has not.
		var limit <-chan time.Time
		if _, ok := ctx.Deadline(); !ok {
			t := time.NewTimer(b.opts.PublishTimeout - time.Since(sent))
			defer t.Stop()
			limit = t.C
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
		case <-limit:
			return fmt.Errorf("%w: no confirm within %s", broker.ErrUnavailable, b.opts.PublishTimeout)
		}
	}, nil
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

// PublishTo implements broker.Directed: one message routed by the
// channel's key (nodes subscribed by name, if any) and by each listed
// node's key, carried in the CC header (RabbitMQ's sender-selected
// distribution: one publish, one copy per queue however many keys match).
func (b *Broker) PublishTo(ctx context.Context, nodes []string, channel string, pub *message.Publication, sp message.StreamPosition) error {
	if channel == "" || pub == nil {
		return errors.New("amqp broker: publish needs a channel and a publication")
	}
	msg, err := encodePublication(channel, pub, sp)
	if err != nil {
		return err
	}
	return b.publishTo(ctx, nodes, channel, msg)
}

// PublishJoinTo implements broker.Directed.
func (b *Broker) PublishJoinTo(ctx context.Context, nodes []string, channel string, info *message.ClientInfo) error {
	return b.publishInfoTo(ctx, nodes, TypeJoin, channel, info)
}

// PublishLeaveTo implements broker.Directed.
func (b *Broker) PublishLeaveTo(ctx context.Context, nodes []string, channel string, info *message.ClientInfo) error {
	return b.publishInfoTo(ctx, nodes, TypeLeave, channel, info)
}

func (b *Broker) publishInfoTo(ctx context.Context, nodes []string, typ, channel string, info *message.ClientInfo) error {
	if channel == "" || info == nil {
		return errors.New("amqp broker: join/leave needs a channel and client info")
	}
	msg, err := encodeInfo(typ, channel, info)
	if err != nil {
		return err
	}
	return b.publishTo(ctx, nodes, channel, msg)
}

func (b *Broker) publishTo(ctx context.Context, nodes []string, channel string, msg amqp.Publishing) error {
	msg.Headers[HeaderNode] = b.opts.NodeID
	if len(nodes) > 0 {
		cc := make([]any, len(nodes))
		for i, n := range nodes {
			cc[i] = nodeKey(n)
		}
		msg.Headers["CC"] = cc
	}
	return b.publish(ctx, routingKey(channel, b.opts.Partitions), msg)
}

var _ broker.Directed = (*Broker)(nil)

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
