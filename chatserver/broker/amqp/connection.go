package amqp

// The connection's life: connect with backoff, declare the node's queue,
// bind what the node subscribes to, and start again when the connection drops.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/broker"
)

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
	keys := slices.Collect(maps.Keys(b.keys))
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
