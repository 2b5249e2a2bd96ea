package amqp

// Subscriptions: the routing keys bound to the node's queue (grouped binds,
// lingering unbinds) and what the node is subscribed to.

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/parley-chat/parley/chatserver/broker"
)

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
	return slices.Sorted(func(yield func(string) bool) {
		for ch := range b.subs {
			if !yield(ch) {
				return
			}
		}
		for ch := range b.tracked {
			if _, bound := b.subs[ch]; !bound && !yield(ch) {
				return
			}
		}
	})
}

func (b *Broker) subscribed(channel string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.subs[channel]
	if !ok {
		_, ok = b.tracked[channel]
	}
	return ok
}

// Track implements broker.Directed: the channels pass the delivery filter
// and are reported after a reconnect, but nothing is bound for them.
func (b *Broker) Track(ctx context.Context, channels ...string) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if err := broker.ValidateChannels(channels); err != nil {
		return err
	}
	b.mu.Lock()
	for _, ch := range channels {
		b.tracked[ch] = struct{}{}
	}
	b.mu.Unlock()
	return nil
}

// Untrack implements broker.Directed.
func (b *Broker) Untrack(ctx context.Context, channels ...string) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	b.mu.Lock()
	for _, ch := range channels {
		delete(b.tracked, ch)
	}
	b.mu.Unlock()
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
	keys := slices.Collect(maps.Keys(b.toBind))
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
