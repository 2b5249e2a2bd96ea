// Package memory is the in-process Broker. A standalone broker (New) serves a
// single node; brokers made from one Network reach each other the way
// replicas reach each other through RabbitMQ, which lets tests run several
// nodes in one process without a message broker.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/message"
)

// Network connects the brokers made from it.
type Network struct {
	mu    sync.RWMutex
	nodes map[*Broker]struct{}
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{nodes: map[*Broker]struct{}{}}
}

// NewBroker returns a broker attached to the network.
func (n *Network) NewBroker() *Broker {
	b := &Broker{net: n, subs: map[string]struct{}{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	n.mu.Lock()
	n.nodes[b] = struct{}{}
	n.mu.Unlock()
	return b
}

// New returns a standalone broker: a node alone on its own network.
func New() *Broker { return NewNetwork().NewBroker() }

// Broker is one node's in-process broker. Deliveries wait in an unbounded
// queue drained by Run, so a publisher never blocks on a slow node.
type Broker struct {
	net *Network

	mu      sync.Mutex
	subs    map[string]struct{}
	queue   []delivery
	running bool
	closed  bool

	wake chan struct{} // signalled when queue grows or the broker closes
	done chan struct{} // closed by Close
}

type kind uint8

const (
	kindPub kind = iota
	kindJoin
	kindLeave
	kindControl
)

type delivery struct {
	kind    kind
	channel string
	pub     *message.Publication
	sp      message.StreamPosition
	info    *message.ClientInfo
	data    []byte
}

var _ broker.Broker = (*Broker)(nil)

// Run implements broker.Broker.
func (b *Broker) Run(ctx context.Context, h broker.Handler) error {
	if h == nil {
		return errors.New("memory broker: nil handler")
	}
	b.mu.Lock()
	if b.running {
		b.mu.Unlock()
		return errors.New("memory broker: Run called twice")
	}
	if b.closed {
		b.mu.Unlock()
		return broker.ErrClosed
	}
	b.running = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.running = false
		b.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.done:
			return nil
		case <-b.wake:
		}
		for {
			b.mu.Lock()
			batch := b.queue
			b.queue = nil
			b.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			bh, _ := h.(broker.BatchHandler)
			for i := 0; i < len(batch); {
				if ctx.Err() != nil || b.isClosed() {
					return nil
				}
				if n := samePubs(batch[i:]); bh != nil && n > 1 {
					pubs, sps := make([]*message.Publication, n), make([]message.StreamPosition, n)
					for j, d := range batch[i : i+n] {
						pubs[j], sps[j] = d.pub, d.sp
					}
					bh.HandlePublications(batch[i].channel, pubs, sps)
					i += n
					continue
				}
				deliver(h, batch[i])
				i++
			}
		}
	}
}

// samePubs counts the publications of one channel that lead q (at most broker.MaxBatch).
func samePubs(q []delivery) int {
	n := 0
	for n < len(q) && n < broker.MaxBatch && q[n].kind == kindPub && q[n].channel == q[0].channel {
		n++
	}
	return n
}

func deliver(h broker.Handler, d delivery) {
	switch d.kind {
	case kindPub:
		h.HandlePublication(d.channel, d.pub, d.sp)
	case kindJoin:
		h.HandleJoin(d.channel, d.info)
	case kindLeave:
		h.HandleLeave(d.channel, d.info)
	case kindControl:
		h.HandleControl(d.data)
	}
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *Broker) enqueue(d delivery, onlySubscribed bool) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	if onlySubscribed {
		if _, ok := b.subs[d.channel]; !ok {
			b.mu.Unlock()
			return
		}
	}
	b.queue = append(b.queue, d)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
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

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(ctx context.Context, channels ...string) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if err := broker.ValidateChannels(channels); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range channels {
		b.subs[ch] = struct{}{}
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
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range channels {
		delete(b.subs, ch)
	}
	return nil
}

// broadcast hands d to every node on the network (subscribed ones only for channel messages).
func (b *Broker) broadcast(d delivery, onlySubscribed bool) {
	b.net.mu.RLock()
	defer b.net.mu.RUnlock()
	for n := range b.net.nodes {
		c := d
		// Each node gets its own copy so one node's handler cannot change
		// what another node delivers.
		if c.pub != nil {
			c.pub = c.pub.Clone()
		}
		if c.info != nil {
			i := c.info.Clone()
			c.info = &i
		}
		if c.data != nil {
			c.data = append([]byte(nil), c.data...)
		}
		n.enqueue(c, onlySubscribed)
	}
}

// Publish implements broker.Broker.
func (b *Broker) Publish(ctx context.Context, channel string, pub *message.Publication, sp message.StreamPosition) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if channel == "" || pub == nil {
		return fmt.Errorf("memory broker: publish needs a channel and a publication")
	}
	b.broadcast(delivery{kind: kindPub, channel: channel, pub: pub, sp: sp}, true)
	return nil
}

// PublishJoin implements broker.Broker.
func (b *Broker) PublishJoin(ctx context.Context, channel string, info *message.ClientInfo) error {
	return b.publishPresence(ctx, kindJoin, channel, info)
}

// PublishLeave implements broker.Broker.
func (b *Broker) PublishLeave(ctx context.Context, channel string, info *message.ClientInfo) error {
	return b.publishPresence(ctx, kindLeave, channel, info)
}

func (b *Broker) publishPresence(ctx context.Context, k kind, channel string, info *message.ClientInfo) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if channel == "" || info == nil {
		return fmt.Errorf("memory broker: join/leave needs a channel and client info")
	}
	b.broadcast(delivery{kind: k, channel: channel, info: info}, true)
	return nil
}

// PublishControl implements broker.Broker.
func (b *Broker) PublishControl(ctx context.Context, data []byte) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if data == nil {
		data = []byte{}
	}
	b.broadcast(delivery{kind: kindControl, data: data}, false)
	return nil
}

// Ready implements broker.Broker: the memory broker is ready while Run runs.
func (b *Broker) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return broker.ErrClosed
	case !b.running:
		return errors.New("memory broker: not running")
	}
	return nil
}

// Close detaches the broker from its network and stops Run. Pending
// deliveries are dropped.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.queue = nil
	b.mu.Unlock()
	close(b.done)
	b.net.mu.Lock()
	delete(b.net.nodes, b)
	b.net.mu.Unlock()
	return nil
}
