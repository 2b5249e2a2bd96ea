package session

// Delta delivery: publications for subscriptions that negotiated fossil
// deltas (hub.DeltaSubscriber).

import (
	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/hub"
)

// WantsDelta implements hub.DeltaSubscriber. The hub asks for every
// publication and subscriber: a connection that never negotiated a delta
// answers from one atomic load, without its lock.
func (s *Session) WantsDelta(channel string) bool {
	if !s.usedDelta.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[channel]
	return sub != nil && sub.delta
}

// DeliverPublicationDelta implements hub.DeltaSubscriber: DeliverPublication
// for a subscription with deltas, encoded against what it sent last.
func (s *Session) DeliverPublicationDelta(channel string, pub *protocol.Publication, d *hub.Delta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[channel]
	if sub == nil || s.state != stateConnected {
		return
	}
	if !sub.live {
		s.bufferItemLocked(sub, pub.Offset, nil, d, len(pub.Data))
		return
	}
	if sub.skipUpTo > 0 && pub.Offset > 0 {
		if pub.Offset <= sub.skipUpTo {
			return
		}
		sub.skipUpTo = 0
	}
	s.sendDeltaLocked(sub, d)
}

// sendDeltaLocked queues d's publication for a delta subscription (or in
// full for one that is not) and makes it the base of the next delta.
func (s *Session) sendDeltaLocked(sub *subscription, d *hub.Delta) {
	var (
		data []byte
		err  error
	)
	if sub.delta {
		data, err = d.Encode(s.proto, sub.prev)
	} else {
		data, err = protocol.GetReplyEncoder(s.proto).Encode(&protocol.Reply{Push: &protocol.Push{Channel: d.Channel(), Pub: d.Publication()}})
	}
	if err != nil {
		return // binary data for a JSON client: skipped (config.Namespace.AllowBinary)
	}
	sub.prev = d.Publication().Data
	s.enqueue(data, s.n.Metrics().OutPush)
}
