// Package broker routes messages between chat server replicas. The memory
// broker serves a single node; the amqp broker connects replicas through
// RabbitMQ. The broker never stores anything: history is the store's job, and
// the session layer appends to the store before it asks the broker to fan out.
package broker

import (
	"context"
	"errors"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
)

// ErrUnavailable wraps failures to reach the broker (connection lost, not yet
// connected, publisher confirm not received). Nothing was accepted; the
// publication may still be committed in the store, and other nodes recover it
// from there.
var ErrUnavailable = errors.New("broker unavailable")

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("broker closed")

// Handler receives what other nodes (and this one) published. The node gives
// its handler to Run; the broker calls it from its delivery goroutine(s), one
// call at a time per channel, so a handler may rely on per-channel ordering of
// calls but must not block for long.
type Handler interface {
	// HandlePublication delivers a publication to local subscribers. sp is the
	// channel's position after the publication; a node that sees a gap between
	// its last delivered offset and pub.Offset fills it from the store.
	HandlePublication(channel string, pub *message.Publication, sp message.StreamPosition)
	// HandleJoin and HandleLeave deliver presence changes (join/leave pushes).
	HandleJoin(channel string, info *message.ClientInfo)
	HandleLeave(channel string, info *message.ClientInfo)
	// HandleControl delivers node-to-node commands (disconnect a user, unsubscribe
	// a user from a channel, …) encoded by the caller.
	HandleControl(data []byte)
}

// BatchHandler is implemented by handlers that take several consecutive
// publications of one channel at once (the node hands them to each
// connection together: one frame, one system call). A broker passes on what
// has piled up while its handler was busy, never waiting for more, so
// batching costs no latency when idle and saves work under load.
type BatchHandler interface {
	// HandlePublications is HandlePublication for each pub in order; sps[i]
	// belongs to pubs[i].
	HandlePublications(channel string, pubs []*message.Publication, sps []message.StreamPosition)
}

// MaxBatch bounds the publications a broker hands over in one call.
const MaxBatch = 64

// Broker fans out messages between nodes.
//
// Contract:
//   - A node receives publications only for channels it has Subscribed to
//     (plus its own control messages); Subscribe is idempotent and reference
//     counting is the caller's job (the hub subscribes on a channel's first local
//     subscriber and unsubscribes after its last).
//   - Publish returns nil only once the broker has accepted the message (for
//     amqp: a publisher confirm). Delivery is at most once per node; ordering is
//     not guaranteed across nodes, which is why publications carry offsets.
//   - After a reconnect the broker re-creates its subscriptions by itself and calls
//     Resubscribed so the node can recover what it missed from the store.
//   - Run delivers until ctx is done or Close is called, then returns nil; it
//     returns an error at once if called twice. Subscribe may be called before
//     Run (or while disconnected): the subscription is recorded and takes effect
//     when the broker connects. Publish before the broker is connected fails
//     with ErrUnavailable.
//   - Bad arguments (empty channel, nil publication or info) get a plain error.
//   - Implementations are safe for concurrent use.
type Broker interface {
	Run(ctx context.Context, h Handler) error
	Subscribe(ctx context.Context, channels ...string) error
	Unsubscribe(ctx context.Context, channels ...string) error
	Publish(ctx context.Context, channel string, pub *message.Publication, sp message.StreamPosition) error
	PublishJoin(ctx context.Context, channel string, info *message.ClientInfo) error
	PublishLeave(ctx context.Context, channel string, info *message.ClientInfo) error
	// PublishControl sends data to every node (including this one).
	PublishControl(ctx context.Context, data []byte) error
	// Ready reports whether the broker is delivering (for /readyz); a non-nil
	// error says why not.
	Ready(ctx context.Context) error
	Close() error
}

// NodePublisher is optionally implemented by brokers that can address one
// node: PublishNode hands data to the HandleControl of the node whose broker
// has NodeID nodeID, and of no other node (at most once; nothing when that
// node is gone). A node takes its broker's NodeID as its own id, so the id
// it shows clients is the one others can address. Without it a node reaches
// others through PublishControl, and every node drops what is not for it.
type NodePublisher interface {
	NodeID() string
	PublishNode(ctx context.Context, nodeID string, data []byte) error
}

// Directed is optionally implemented by brokers that can send a channel's
// messages to chosen nodes, so that a node routes from a subscription
// directory (store.Directory) instead of a broker subscription per channel.
//
// Track records channels as subscribed without routing them by name: they
// pass the broker's filter and are listed to ResubscribeHandler after a
// reconnect until Untrack, but their messages reach this node only when a
// publisher addresses it. A channel may be both tracked and subscribed
// (bound by name too); Unsubscribe then unbinds it and it stays tracked. The *To methods deliver to every
// node listed (this one included when listed) that is subscribed to or
// tracks the channel, and to every node subscribed to it by name (nodes of
// an older release, during a rolling update); an empty list still reaches
// the latter. Delivery is at most once per node, as for Publish.
//
// SendTo is PublishTo for the listed nodes alone: nodes subscribed by name
// only do not get it, and the broker may carry it together with other
// SendTo calls to the same nodes, in a form an older release cannot read
// (so a node uses it only while none runs). A call may wait for the
// message to those nodes before it; it returns nil once the broker took the
// message that carries it, and does nothing for an empty list.
type Directed interface {
	NodePublisher
	Track(ctx context.Context, channels ...string) error
	Untrack(ctx context.Context, channels ...string) error
	PublishTo(ctx context.Context, nodes []string, channel string, pub *message.Publication, sp message.StreamPosition) error
	SendTo(ctx context.Context, nodes []string, channel string, pub *message.Publication, sp message.StreamPosition) error
	PublishJoinTo(ctx context.Context, nodes []string, channel string, info *message.ClientInfo) error
	PublishLeaveTo(ctx context.Context, nodes []string, channel string, info *message.ClientInfo) error
}

// SendReporter is optionally implemented by brokers whose SendTo may carry
// several publications in one message (the amqp broker's packs). The node
// hands it a function to call for every message SendTo had confirmed, with
// the number of publications it carried and the time from its publish to
// its confirm, for its metrics; a broker calls it from its own goroutines,
// so it must be cheap and safe for concurrent use.
type SendReporter interface {
	ReportSends(func(publications int, confirm time.Duration))
}

// ResubscribeHandler is optionally implemented by a Handler: the broker calls
// Resubscribed after it re-established subscriptions following a connection
// loss, so the node can recover channels from history.
type ResubscribeHandler interface {
	Resubscribed(channels []string)
}

// ValidateChannels refuses an empty channel name, which no routing scheme can
// carry; every implementation checks its arguments with it.
func ValidateChannels(channels []string) error {
	for _, ch := range channels {
		if ch == "" {
			return errors.New("broker: empty channel name")
		}
	}
	return nil
}
