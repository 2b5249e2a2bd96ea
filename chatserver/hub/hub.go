// Package hub keeps this node's connections and channel subscriptions and
// broadcasts to them. It is sharded (by channel and by user) so one hot room
// does not lock the node, and a broadcast is encoded once per protocol type:
// every JSON subscriber gets the same bytes, every protobuf subscriber the same
// other bytes.
package hub

import (
	"hash/maphash"
	"runtime"
	"slices"
	"sync"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/codes"
)

const numShards = 64

// Subscriber is one connection as the hub sees it. The hub calls Deliver*
// while holding a shard's read lock: implementations must only queue the bytes
// (never block, never call back into the hub). Data passed to Deliver* is
// shared between subscribers and must not be modified.
type Subscriber interface {
	ID() string
	UserID() string
	Protocol() protocol.Type
	// DeliverPublication queues an encoded publication push for channel; offset
	// lets the subscriber drop or buffer it while its subscription is being set up.
	DeliverPublication(channel string, offset uint64, data []byte)
	// DeliverPublications queues consecutive publications of channel to go
	// out together; offsets[i] belongs to data[i]. Both slices are shared.
	DeliverPublications(channel string, offsets []uint64, data [][]byte)
	// DeliverPush queues another encoded push (join, leave, unsubscribe).
	DeliverPush(data []byte)
	// Disconnect closes the connection asynchronously.
	Disconnect(d codes.Disconnect)
}

// JoinLeaveSubscriber is implemented by subscribers that choose per
// subscription whether they get join and leave pushes (the protocol's
// SubscribeRequest.join_leave). The hub hands such a subscriber every
// join/leave of its channels through DeliverJoinLeave instead of DeliverPush;
// it returns whether the push was queued. Same rules as Deliver*: never block,
// never call back into the hub, never modify data.
type JoinLeaveSubscriber interface {
	DeliverJoinLeave(channel string, data []byte) bool
}

type subShard struct {
	mu   sync.RWMutex
	subs map[string]*channelSubs
}

// channelSubs is one channel's local subscribers: a slice to broadcast over
// (cheaper to walk than a map, and splittable for a parallel fan-out) and an
// index by client ID so joining and leaving stay O(1).
type channelSubs struct {
	list  []Subscriber
	index map[string]int
}

type connShard struct {
	mu    sync.RWMutex
	users map[string]map[string]Subscriber // user → client → subscriber
}

// Hub is safe for concurrent use.
type Hub struct {
	seed  maphash.Seed
	subs  [numShards]subShard
	conns [numShards]connShard
}

// New returns an empty hub.
func New() *Hub {
	h := &Hub{seed: maphash.MakeSeed()}
	for i := range h.subs {
		h.subs[i].subs = map[string]*channelSubs{}
		h.conns[i].users = map[string]map[string]Subscriber{}
	}
	return h
}

func (h *Hub) shard(key string) int { return int(maphash.String(h.seed, key) % numShards) }

// AddConn registers a connection under its user and returns how many
// connections the user has on this node, this one included.
func (h *Hub) AddConn(s Subscriber) int {
	sh := &h.conns[h.shard(s.UserID())]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.users[s.UserID()]
	if m == nil {
		m = map[string]Subscriber{}
		sh.users[s.UserID()] = m
	}
	m[s.ID()] = s
	return len(m)
}

// RemoveConn forgets a connection.
func (h *Hub) RemoveConn(s Subscriber) {
	sh := &h.conns[h.shard(s.UserID())]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if m := sh.users[s.UserID()]; m != nil {
		delete(m, s.ID())
		if len(m) == 0 {
			delete(sh.users, s.UserID())
		}
	}
}

// UserConns returns the user's connections on this node.
func (h *Hub) UserConns(user string) []Subscriber {
	sh := &h.conns[h.shard(user)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	out := make([]Subscriber, 0, len(sh.users[user]))
	for _, s := range sh.users[user] {
		out = append(out, s)
	}
	return out
}

// Conns returns every connection on this node.
func (h *Hub) Conns() []Subscriber {
	var out []Subscriber
	for i := range h.conns {
		sh := &h.conns[i]
		sh.mu.RLock()
		for _, m := range sh.users {
			for _, s := range m {
				out = append(out, s)
			}
		}
		sh.mu.RUnlock()
	}
	return out
}

// NumConns counts connections on this node.
func (h *Hub) NumConns() int {
	n := 0
	for i := range h.conns {
		sh := &h.conns[i]
		sh.mu.RLock()
		for _, m := range sh.users {
			n += len(m)
		}
		sh.mu.RUnlock()
	}
	return n
}

// AddSub subscribes s to channel and reports whether it is the channel's
// first local subscriber (the node then subscribes in the broker).
func (h *Hub) AddSub(channel string, s Subscriber) (first bool) {
	sh := &h.subs[h.shard(channel)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.subs[channel]
	if cs == nil {
		cs = &channelSubs{index: map[string]int{}}
		sh.subs[channel] = cs
		first = true
	}
	if i, ok := cs.index[s.ID()]; ok {
		cs.list[i] = s
		return first
	}
	cs.index[s.ID()] = len(cs.list)
	cs.list = append(cs.list, s)
	return first
}

// RemoveSub unsubscribes s from channel and reports whether the channel has
// no local subscriber left (the node then unsubscribes in the broker).
func (h *Hub) RemoveSub(channel string, s Subscriber) (last bool) {
	sh := &h.subs[h.shard(channel)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.subs[channel]
	if cs == nil {
		return false
	}
	i, ok := cs.index[s.ID()]
	if !ok {
		return false
	}
	// Swap the last subscriber into the hole: order within a channel does not matter.
	end := len(cs.list) - 1
	if i != end {
		moved := cs.list[end]
		cs.list[i] = moved
		cs.index[moved.ID()] = i
	}
	cs.list[end] = nil
	cs.list = cs.list[:end]
	delete(cs.index, s.ID())
	if len(cs.list) == 0 {
		delete(sh.subs, channel)
		return true
	}
	if cap(cs.list) > 64 && len(cs.list) < cap(cs.list)/4 {
		cs.list = slices.Clone(cs.list) // a room that emptied out gives its memory back
	}
	return false
}

// NumSubscribers counts local subscribers of channel.
func (h *Hub) NumSubscribers(channel string) int {
	sh := &h.subs[h.shard(channel)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if cs := sh.subs[channel]; cs != nil {
		return len(cs.list)
	}
	return 0
}

// Subscribers returns channel's local subscribers.
func (h *Hub) Subscribers(channel string) []Subscriber {
	sh := &h.subs[h.shard(channel)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if cs := sh.subs[channel]; cs != nil {
		return slices.Clone(cs.list)
	}
	return nil
}

// Channels lists channels with at least one local subscriber.
func (h *Hub) Channels() []string {
	var out []string
	for i := range h.subs {
		sh := &h.subs[i]
		sh.mu.RLock()
		for ch := range sh.subs {
			out = append(out, ch)
		}
		sh.mu.RUnlock()
	}
	return out
}

// encoded lazily encodes one push per protocol type, at most once each.
type encoded struct {
	reply protocol.Reply
	// delta encodes a publication for delta subscribers (publishing only).
	delta      *Delta
	json, pb   []byte
	jsonErr    error
	jsonDone   bool
	pbDone     bool
	pbErr      error
	publishing bool
	joinLeave  bool
}

// encodeAll encodes for both protocols now, so get only reads.
func (e *encoded) encodeAll() {
	_, _ = e.get(protocol.TypeJSON)
	_, _ = e.get(protocol.TypeProtobuf)
}

func (e *encoded) get(t protocol.Type) ([]byte, error) {
	if t == protocol.TypeJSON {
		if !e.jsonDone {
			e.json, e.jsonErr = protocol.DefaultJsonReplyEncoder.Encode(&e.reply)
			e.jsonDone = true
		}
		return e.json, e.jsonErr
	}
	if !e.pbDone {
		e.pb, e.pbErr = protocol.DefaultProtobufReplyEncoder.Encode(&e.reply)
		e.pbDone = true
	}
	return e.pb, e.pbErr
}

// BroadcastPublication hands pub to every local subscriber of channel and
// returns how many received it. JSON subscribers of a publication whose data
// is not JSON (a namespace with allowBinary) do not get it: one user's
// publication must never close another user's connection.
func (h *Hub) BroadcastPublication(channel string, pub *protocol.Publication) int {
	e := encoded{reply: protocol.Reply{Push: &protocol.Push{Channel: channel, Pub: pub}}, publishing: true, delta: NewDelta(channel, pub)}
	return h.broadcast(channel, &e, pub.Offset)
}

// BroadcastPublications hands consecutive publications of channel to every
// local subscriber at once, so each connection writes them in one frame.
// The broker's delivery loop calls it with what has piled up while it was
// busy: under load, messages are batched per connection (one system call,
// one frame for the client to read) without any added wait when idle.
func (h *Hub) BroadcastPublications(channel string, pubs []*protocol.Publication) int {
	if len(pubs) == 1 {
		return h.BroadcastPublication(channel, pubs[0])
	}
	b := &batch{pubs: pubs, deltas: make([]*Delta, len(pubs))}
	for i, pub := range pubs {
		b.deltas[i] = NewDelta(channel, pub)
		e := encoded{reply: protocol.Reply{Push: &protocol.Push{Channel: channel, Pub: pub}}}
		// A publication a protocol cannot carry (binary data for JSON) is
		// left out of that protocol's batch, never a reason to disconnect.
		if data, err := e.get(protocol.TypeJSON); err == nil {
			b.json, b.jsonOffsets = append(b.json, data), append(b.jsonOffsets, pub.Offset)
		}
		if data, err := e.get(protocol.TypeProtobuf); err == nil {
			b.pb, b.pbOffsets = append(b.pb, data), append(b.pbOffsets, pub.Offset)
		}
	}
	sh := &h.subs[h.shard(channel)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	cs := sh.subs[channel]
	if cs == nil {
		return 0
	}
	return inParts(cs.list, func(part []Subscriber) int { return b.deliver(part, channel) })
}

// batch is several publications encoded for both protocols; each protocol
// holds only what it can carry, with the offsets of those.
type batch struct {
	json, pb               [][]byte
	jsonOffsets, pbOffsets []uint64
	// pubs and their deltas serve delta subscribers, one by one.
	pubs   []*protocol.Publication
	deltas []*Delta
}

func (b *batch) deliver(subs []Subscriber, channel string) int {
	n := 0
	for _, s := range subs {
		if ds, ok := wantsDelta(s, channel); ok {
			for i, pub := range b.pubs {
				ds.DeliverPublicationDelta(channel, pub, b.deltas[i])
			}
			n++
			continue
		}
		data, offsets := b.json, b.jsonOffsets
		if s.Protocol() == protocol.TypeProtobuf {
			data, offsets = b.pb, b.pbOffsets
		}
		if len(data) == 0 {
			continue
		}
		s.DeliverPublications(channel, offsets, data)
		n++
	}
	return n
}

// BroadcastJoin sends a join push to channel's local subscribers (those
// implementing JoinLeaveSubscriber decide for themselves) and returns how many queued it.
func (h *Hub) BroadcastJoin(channel string, info *protocol.ClientInfo) int {
	e := encoded{reply: protocol.Reply{Push: &protocol.Push{Channel: channel, Join: &protocol.Join{Info: info}}}, joinLeave: true}
	return h.broadcast(channel, &e, 0)
}

// BroadcastLeave sends a leave push to channel's local subscribers.
func (h *Hub) BroadcastLeave(channel string, info *protocol.ClientInfo) int {
	e := encoded{reply: protocol.Reply{Push: &protocol.Push{Channel: channel, Leave: &protocol.Leave{Info: info}}}, joinLeave: true}
	return h.broadcast(channel, &e, 0)
}

// parallelChunk is the fewest subscribers worth a goroutine of their own in
// one broadcast: below it, starting the goroutine and waking a processor
// costs more than it saves.
const parallelChunk = 256

// broadcast hands e to channel's subscribers. A big room is split over up to
// GOMAXPROCS goroutines: a delivery is mostly one write(2) to the client's
// socket (transport writes inline), so one goroutine would cap a room's
// fan-out at one core. broadcast returns only when every part is done, so
// successive broadcasts on a channel reach each subscriber in order.
func (h *Hub) broadcast(channel string, e *encoded, offset uint64) int {
	sh := &h.subs[h.shard(channel)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	cs := sh.subs[channel]
	if cs == nil {
		return 0
	}
	if len(cs.list) >= 2*parallelChunk {
		e.encodeAll() // the parts share e: nothing may be encoded lazily
	}
	return inParts(cs.list, func(part []Subscriber) int { return deliver(part, channel, e, offset) })
}

// inParts runs deliver over list, split into parts run in parallel when the
// list is long enough (see parallelChunk), and returns the sum of the counts
// once every part is done.
func inParts(list []Subscriber, deliver func([]Subscriber) int) int {
	parts := min(runtime.GOMAXPROCS(0), len(list)/parallelChunk)
	if parts < 2 {
		return deliver(list)
	}
	counts := make([]int, parts)
	size := (len(list) + parts - 1) / parts
	var wg sync.WaitGroup
	for i := 1; i < parts; i++ {
		part := list[i*size : min((i+1)*size, len(list))]
		wg.Go(func() { counts[i] = deliver(part) })
	}
	counts[0] = deliver(list[:size])
	wg.Wait()
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

func deliver(subs []Subscriber, channel string, e *encoded, offset uint64) int {
	n := 0
	for _, s := range subs {
		if e.publishing {
			if ds, ok := wantsDelta(s, channel); ok {
				ds.DeliverPublicationDelta(channel, e.reply.Push.Pub, e.delta)
				n++
				continue
			}
		}
		data, err := e.get(s.Protocol())
		if err != nil {
			continue // binary data for a JSON subscriber: skipped, see BroadcastPublication
		}
		if e.publishing {
			s.DeliverPublication(channel, offset, data)
		} else if jl, ok := s.(JoinLeaveSubscriber); ok && e.joinLeave {
			if !jl.DeliverJoinLeave(channel, data) {
				continue
			}
		} else {
			s.DeliverPush(data)
		}
		n++
	}
	return n
}
