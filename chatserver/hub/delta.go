package hub

import (
	"encoding/json"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/centrifugal/protocol"
	fossil "github.com/shadowspore/fossil-delta"
)

// DeltaSubscriber is implemented by subscribers whose subscriptions may
// have negotiated delta compression (the subscribe request's delta
// "fossil"). The hub hands such a subscription the publication itself and a
// Delta to encode it with, against whatever that subscription received last.
// Same rules as Subscriber's Deliver*: never block, never call back into the
// hub, never modify what is shared.
type DeltaSubscriber interface {
	// WantsDelta reports whether the subscription to channel uses deltas.
	WantsDelta(channel string) bool
	// DeliverPublicationDelta is DeliverPublication for such a subscription.
	DeliverPublicationDelta(channel string, pub *protocol.Publication, d *Delta)
}

// Delta encodes one publication for delta subscribers. Subscribers that
// received the same previous publication share its data (the same bytes), so
// a fossil delta is computed once per protocol and base, not per subscriber.
// Safe for concurrent use (a big room's parts deliver in parallel).
type Delta struct {
	channel string
	pub     *protocol.Publication

	mu    sync.Mutex
	cache map[deltaKey]deltaResult
}

type deltaKey struct {
	proto protocol.Type
	base  *byte
	n     int
}

type deltaResult struct {
	data []byte
	err  error
}

// NewDelta prepares pub of channel for delta subscribers.
func NewDelta(channel string, pub *protocol.Publication) *Delta {
	return &Delta{channel: channel, pub: pub}
}

// Channel is the channel of d's publication.
func (d *Delta) Channel() string { return d.channel }

// Publication is the publication d encodes.
func (d *Delta) Publication() *protocol.Publication { return d.pub }

// Encode returns the publication push in delta mode for a subscription
// whose previous publication carried prev (nil: none yet, or the chain must
// restart): a fossil delta against prev (delta: true) when that is smaller,
// the full data otherwise. In the JSON protocol delta mode carries data as a
// JSON string (what the SDKs decode); a delta that is not valid UTF-8 goes
// out in full, and data a JSON string cannot hold (binary) is an error.
func (d *Delta) Encode(proto protocol.Type, prev []byte) ([]byte, error) {
	key := deltaKey{proto: proto, base: unsafe.SliceData(prev), n: len(prev)}
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.cache[key]; ok {
		return r.data, r.err
	}
	data, err := d.encode(proto, prev)
	if d.cache == nil {
		d.cache = map[deltaKey]deltaResult{}
	}
	d.cache[key] = deltaResult{data, err}
	return data, err
}

func (d *Delta) encode(proto protocol.Type, prev []byte) ([]byte, error) {
	p := d.pub
	wire := protocol.Publication{Data: p.Data, Info: p.Info, Offset: p.Offset, Tags: p.Tags, Time: p.Time}
	if prev != nil {
		if delta := fossil.Create(prev, p.Data); len(delta) < len(p.Data) && (proto != protocol.TypeJSON || utf8.Valid(delta)) {
			wire.Data, wire.Delta = delta, true
		}
	}
	if proto == protocol.TypeJSON {
		if !utf8.Valid(wire.Data) {
			return nil, errBinaryForJSON
		}
		quoted, err := json.Marshal(string(wire.Data))
		if err != nil {
			return nil, err
		}
		wire.Data = quoted
		return protocol.DefaultJsonReplyEncoder.Encode(&protocol.Reply{Push: &protocol.Push{Channel: d.channel, Pub: &wire}})
	}
	return protocol.DefaultProtobufReplyEncoder.Encode(&protocol.Reply{Push: &protocol.Push{Channel: d.channel, Pub: &wire}})
}

type deltaError string

func (e deltaError) Error() string { return string(e) }

const errBinaryForJSON = deltaError("binary data cannot travel as a JSON string")

// wantsDelta reports whether s takes channel's publications through
// DeliverPublicationDelta.
func wantsDelta(s Subscriber, channel string) (DeltaSubscriber, bool) {
	ds, ok := s.(DeltaSubscriber)
	if !ok || !ds.WantsDelta(channel) {
		return nil, false
	}
	return ds, true
}
