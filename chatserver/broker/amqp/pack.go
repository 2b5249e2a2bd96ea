package amqp

// Packing: publications a node sends to the same other nodes (SendTo)
// while earlier messages to them await their confirms (maxInFlight) travel
// together, as one AMQP message. RabbitMQ's cost is mostly per message, not per byte
// (BenchmarkRabbitMQCost: ≈ 47 µs to take, route, confirm and deliver one
// message at full speed, several times that at low rates), so under load a
// pack of k publications costs it about what one did. Nothing waits for a
// pack to fill: a call that finds room in flight to its nodes sends at
// once, alone; calls arriving while there is none go together as soon as
// a confirm makes room (group commit, as the store's appends).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/message"
)

// TypePack is a message holding several publications, possibly of several
// channels (encodePack). Only SendTo sends it, and only to nodes that
// asked for it by name (CC), never by a channel's binding: a replica of an
// older release cannot decode it, and is never addressed while one runs
// (the node's directory falls back to bindings then).
const TypePack = "pack"

// Limits of one pack: what a node accepts (decodePack) and what it sends.
const (
	maxPackEntries = 256
	maxPackBytes   = 1 << 20
)

// packVersion leads a pack's body; a node refuses versions it does not know.
const packVersion = 1

type packItem struct {
	channel string
	sp      message.StreamPosition
	pub     []byte // the protobuf-encoded protocol.Publication
	done    chan error
}

// maxInFlight is how many messages to one set of nodes may await their
// confirms before calls wait and pack (and how many packs a drain keeps
// awaiting theirs): with one, a call at a moderate rate sometimes waited
// behind a lone message for a confirm round trip; two let such neighbours
// pass and still pack under load.
const maxInFlight = 2

// packedSize bounds the bytes an item takes in a pack's body (encodePack).
func (it *packItem) packedSize() int {
	return len(it.channel) + len(it.sp.Epoch) + len(it.pub) + 4*binary.MaxVarintLen64
}

// packQueue holds the calls waiting to go to one set of nodes. inflight
// counts its messages awaiting confirms (a drain's included); draining is
// set while a goroutine sends the waiting calls, one pack at a time.
type packQueue struct {
	nodes    []string
	items    []*packItem
	inflight int
	draining bool
}

type packer struct {
	mu     sync.Mutex
	queues map[string]*packQueue // by packKey
	// drains are the goroutines sending what piled up; Close waits for
	// them, after setting closed (under mu), from when on none starts.
	drains sync.WaitGroup
	closed bool
	// packs and packed count the packs confirmed and the publications in
	// them; report, when set, hears of every confirmed message (ReportSends).
	packs, packed atomic.Int64
	report        atomic.Pointer[func(int, time.Duration)]
}

// ReportSends implements broker.SendReporter.
func (b *Broker) ReportSends(f func(publications int, confirm time.Duration)) {
	b.packs.report.Store(&f)
}

// Packed reports how many packs RabbitMQ confirmed and how many
// publications they carried (for tests and benchmarks).
func (b *Broker) Packed() (packs, publications int64) {
	return b.packs.packs.Load(), b.packs.packed.Load()
}

func packKey(sorted []string) string { return strings.Join(sorted, "\x00") }

// SendTo implements broker.Directed: the publication goes to the listed
// nodes only, by their keys, possibly packed with others for the same
// nodes (see the top of this file). It returns once RabbitMQ confirmed the
// message that carried it.
func (b *Broker) SendTo(ctx context.Context, nodes []string, channel string, pub *message.Publication, sp message.StreamPosition) error {
	if channel == "" || pub == nil {
		return errors.New("amqp broker: publish needs a channel and a publication")
	}
	if len(nodes) == 0 {
		return nil
	}
	if err := b.check(ctx); err != nil {
		return err
	}
	body, err := marshalPublication(pub)
	if err != nil {
		return err
	}
	it := &packItem{channel: channel, sp: sp, pub: body, done: make(chan error, 1)}
	sorted := nodes // one node, the common case: nothing to order
	if len(nodes) > 1 {
		sorted = slices.Compact(slices.Sorted(slices.Values(nodes)))
	}
	key := packKey(sorted)

	p := &b.packs
	p.mu.Lock()
	q := p.queues[key]
	if q == nil {
		q = &packQueue{nodes: slices.Clone(sorted)} // outlives the caller's slice
		p.queues[key] = q
	}
	if q.inflight >= maxInFlight || len(q.items) > 0 {
		q.items = append(q.items, it)
		p.mu.Unlock()
		select {
		case err := <-it.done:
			return err
		case <-ctx.Done():
			// It may still go; a caller that takes this for a failure
			// re-sends it (the outbox), and receivers drop repeated offsets.
			return fmt.Errorf("waiting for the message to nodes before it: %w", ctx.Err())
		}
	}
	q.inflight++
	p.mu.Unlock()
	// Room in flight and nobody waiting: this call sends alone, at once,
	// then hands what piled up meanwhile to a drain.
	err = b.sendPack(ctx, sorted, []*packItem{it})
	b.packDone(key, q)
	return err
}

// packDone ends a lone send to q's nodes: a drain takes what piled up,
// or the queue goes once nothing is in flight.
func (b *Broker) packDone(key string, q *packQueue) {
	p := &b.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	q.inflight--
	if p.closed {
		for _, it := range q.items {
			it.done <- broker.ErrClosed
		}
		q.items = nil
	}
	if len(q.items) > 0 && !q.draining {
		q.draining = true
		q.inflight++
		p.drains.Add(1)
		go func() {
			defer p.drains.Done()
			b.drainPacks(key, q)
		}()
		return
	}
	if q.inflight == 0 {
		delete(p.queues, key)
	}
}

// close fails what waits from now on and waits for the drains under way.
func (p *packer) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.drains.Wait()
}

// drainPacks sends q's waiting calls, as many as a pack holds at a time,
// until none is left. Up to maxInFlight of its packs await their confirms
// at once (sent in order by this one goroutine): a pack waits for room, not
// for the confirm of the pack before it, so one slow confirm holds the calls
// in its own pack and not every call queued behind it.
func (b *Broker) drainPacks(key string, q *packQueue) {
	p := &b.packs
	type unconfirmed struct {
		items     []*packItem
		confirmed func() error
		cancel    context.CancelFunc
	}
	var window []unconfirmed
	settleOldest := func() {
		u := window[0]
		window = window[1:]
		err := u.confirmed()
		u.cancel()
		for _, it := range u.items {
			it.done <- err
		}
	}
	for {
		if len(window) >= maxInFlight {
			settleOldest()
			continue
		}
		p.mu.Lock()
		items, size := q.items, 0
		n := 0
		for n < len(items) && n < maxPackEntries {
			size += items[n].packedSize()
			if n > 0 && size > maxPackBytes {
				break
			}
			n++
		}
		batch := items[:n:n]
		q.items = items[n:]
		if len(batch) == 0 {
			if len(window) > 0 {
				p.mu.Unlock()
				settleOldest()
				continue
			}
			q.items = nil
			q.draining = false
			if q.inflight--; q.inflight == 0 {
				delete(p.queues, key)
			}
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		// No caller's context: the calls in the batch each wait on their
		// own. After Close the publish fails at once (closed broker, lost
		// connection), so a drain ends soon.
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.PublishTimeout)
		confirmed, err := b.startPack(ctx, q.nodes, batch)
		if err != nil {
			cancel()
			for _, it := range batch {
				it.done <- err
			}
			continue
		}
		window = append(window, unconfirmed{items: batch, confirmed: confirmed, cancel: cancel})
	}
}

// startPack publishes items to nodes: routed by the first node's key with
// the others in CC, so no binding of a channel's key (an older release's)
// receives it. One item travels as an ordinary publication. It returns the
// wait for RabbitMQ's confirm, which counts the pack once confirmed.
func (b *Broker) startPack(ctx context.Context, nodes []string, items []*packItem) (confirmed func() error, err error) {
	var msg amqp.Publishing
	if len(items) == 1 {
		it := items[0]
		msg = publicationMessage(it.channel, it.sp, it.pub)
	} else {
		msg = amqp.Publishing{
			Type:         TypePack,
			ContentType:  contentTypePack,
			DeliveryMode: amqp.Transient,
			Headers:      amqp.Table{},
			Body:         encodePack(items),
		}
	}
	msg.Headers[HeaderNode] = b.opts.NodeID
	if len(nodes) > 1 {
		cc := make([]any, len(nodes)-1)
		for i, n := range nodes[1:] {
			cc[i] = nodeKey(n)
		}
		msg.Headers["CC"] = cc
	}
	start := time.Now()
	sent, err := b.publishDeferred(ctx, nodeKey(nodes[0]), msg)
	if err != nil {
		return nil, err
	}
	return func() error {
		if err := sent(); err != nil {
			return err
		}
		if len(items) > 1 {
			b.packs.packs.Add(1)
			b.packs.packed.Add(int64(len(items)))
		}
		if f := b.packs.report.Load(); f != nil {
			(*f)(len(items), time.Since(start))
		}
		return nil
	}, nil
}

// sendPack is startPack and the wait for its confirm.
func (b *Broker) sendPack(ctx context.Context, nodes []string, items []*packItem) error {
	confirmed, err := b.startPack(ctx, nodes, items)
	if err != nil {
		return err
	}
	return confirmed()
}

const contentTypePack = "application/x-parley-pack"

// encodePack lays out a pack's body: the version byte, then per
// publication its channel, epoch, stream position offset and encoded
// protocol.Publication, strings and bytes each after their length (all
// integers unsigned varints).
func encodePack(items []*packItem) []byte {
	size := 1
	for _, it := range items {
		size += it.packedSize()
	}
	buf := make([]byte, 0, size)
	buf = append(buf, packVersion)
	for _, it := range items {
		buf = binary.AppendUvarint(buf, uint64(len(it.channel)))
		buf = append(buf, it.channel...)
		buf = binary.AppendUvarint(buf, uint64(len(it.sp.Epoch)))
		buf = append(buf, it.sp.Epoch...)
		buf = binary.AppendUvarint(buf, it.sp.Offset)
		buf = binary.AppendUvarint(buf, uint64(len(it.pub)))
		buf = append(buf, it.pub...)
	}
	return buf
}

// packEntry is one publication out of a pack.
type packEntry struct {
	channel string
	pub     *message.Publication
	sp      message.StreamPosition
}

// decodePack reads a pack's body; any flaw refuses the whole pack (a
// sender never makes one: it is damage or a foreign message).
func decodePack(body []byte) ([]packEntry, error) {
	if len(body) == 0 || body[0] != packVersion {
		return nil, errors.New("pack: unknown version")
	}
	if len(body) > maxPackBytes+maxPackEntries*4*binary.MaxVarintLen64 {
		return nil, fmt.Errorf("pack: %d bytes, more than a pack holds", len(body))
	}
	rest := body[1:]
	bytesField := func(what string) ([]byte, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return nil, fmt.Errorf("pack: truncated %s", what)
		}
		v := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		return v, nil
	}
	var entries []packEntry
	for len(rest) > 0 {
		if len(entries) == maxPackEntries {
			return nil, fmt.Errorf("pack: more than %d publications", maxPackEntries)
		}
		channel, err := bytesField("channel")
		if err != nil {
			return nil, err
		}
		if len(channel) == 0 {
			return nil, errors.New("pack: empty channel")
		}
		epoch, err := bytesField("epoch")
		if err != nil {
			return nil, err
		}
		offset, k := binary.Uvarint(rest)
		if k <= 0 {
			return nil, errors.New("pack: truncated offset")
		}
		rest = rest[k:]
		body, err := bytesField("publication")
		if err != nil {
			return nil, err
		}
		pub, err := unmarshalPublication(body)
		if err != nil {
			return nil, fmt.Errorf("pack: publication %d: %w", len(entries), err)
		}
		entries = append(entries, packEntry{
			channel: string(channel),
			pub:     pub,
			sp:      message.StreamPosition{Epoch: string(epoch), Offset: offset},
		})
	}
	if len(entries) == 0 {
		return nil, errors.New("pack: empty")
	}
	return entries, nil
}
