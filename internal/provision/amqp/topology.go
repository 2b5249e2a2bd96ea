// Package amqp declares and deletes the durable RabbitMQ topology of a
// ChatCluster: the exchanges its chat servers route through and the bounded
// dead-letter queue for messages a node rejects. It is the operator's only
// AMQP client; errors carry a Reason the controller turns into the
// BrokerReady condition.
package amqp

import (
	"fmt"
	"time"

	"github.com/parley-chat/parley/internal/naming"
)

// maxNameBytes is RabbitMQ's limit on exchange and queue names (shortstr).
const maxNameBytes = 255

// Dead-letter queue bounds: poison messages are kept for inspection, but never
// so many or so long that a broken node fills the broker.
const (
	DeadLetterMaxLength = 10000
	DeadLetterTTL       = 7 * 24 * time.Hour
)

// Topology is the durable RabbitMQ topology of one ChatCluster. Names derive
// from the ChatCluster's namespace and name, so clusters sharing one RabbitMQ
// (and one vhost) never collide: a Kubernetes namespace has no dots, so
// "parley.<namespace>." is a unique prefix per namespace.
type Topology struct {
	// Exchange is the durable topic exchange publications and join/leave
	// messages are routed through; each chat server binds its own exclusive
	// queue to it with the routing keys of the channels it has subscribers for.
	Exchange string
	// ControlExchange is the durable fanout exchange for node-to-node commands.
	ControlExchange string
	// DeadLetterExchange is the durable fanout exchange a node's queue
	// dead-letters to (x-dead-letter-exchange) when it rejects a message it
	// cannot decode, so a poison message is kept aside instead of redelivered
	// forever or silently lost.
	DeadLetterExchange string
	// DeadLetterQueue is the durable queue bound to DeadLetterExchange, bounded
	// by DeadLetterMaxLength (oldest dropped first) and DeadLetterTTL.
	DeadLetterQueue string
}

// TopologyFor returns the topology of the ChatCluster namespace/name, named
// by naming.ExchangeNames: what the chat server's config names
// (broker.exchange, broker.controlExchange, broker.deadLetterExchange) plus
// the dead-letter queue. The ChatCluster's CEL rules keep the names well
// under RabbitMQ's limit; Validate refuses any that are not.
func TopologyFor(namespace, name string) Topology {
	ex := naming.ExchangeNames(namespace, name)
	return Topology{
		Exchange:           ex.Publications,
		ControlExchange:    ex.Control,
		DeadLetterExchange: ex.DeadLetter,
		DeadLetterQueue:    ex.DeadLetterQueue,
	}
}

// Validate checks that every name is set and fits RabbitMQ's limits.
func (t Topology) Validate() error {
	for _, n := range []struct{ field, value string }{
		{"exchange", t.Exchange}, {"control exchange", t.ControlExchange},
		{"dead-letter exchange", t.DeadLetterExchange}, {"dead-letter queue", t.DeadLetterQueue},
	} {
		if n.value == "" {
			return fmt.Errorf("topology: %s name is empty", n.field)
		}
		if len(n.value) > maxNameBytes {
			return fmt.Errorf("topology: %s name %q is longer than %d bytes", n.field, n.value, maxNameBytes)
		}
	}
	return nil
}

// Objects lists the topology's objects, for messages ("exchange parley.a.b.pub").
func (t Topology) Objects() []string {
	return []string{
		"exchange " + t.Exchange,
		"exchange " + t.ControlExchange,
		"exchange " + t.DeadLetterExchange,
		"queue " + t.DeadLetterQueue,
	}
}
