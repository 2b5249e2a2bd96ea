package node

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/codes"
)

// control is a node-to-node command carried by Broker.PublishControl.
type control struct {
	// Op is "disconnect" (all of User's connections, or only Client),
	// "unsubscribe" (User from Channel), "emulate" (Data to session Client on
	// Node, answer to From) or "emulated" (the answer to Req, in Reason).
	Op      string `json:"op"`
	User    string `json:"user,omitempty"`
	Client  string `json:"client,omitempty"`
	Channel string `json:"channel,omitempty"`
	Code    uint32 `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Node addresses the message to one node (emulation); others ignore it.
	Node string `json:"node,omitempty"`
	// From and Req name the asking node and its request (emulation).
	From string `json:"from,omitempty"`
	Req  string `json:"req,omitempty"`
	Data []byte `json:"data,omitempty"`
}

// Unsubscriber is implemented by connections that can be unsubscribed by the
// server (sessions).
type Unsubscriber interface {
	ServerUnsubscribe(channel string, code uint32, reason string)
}

// DisconnectUser disconnects all of user's connections on every node. A zero
// d disconnects with "force disconnect" (3503, no reconnect).
func (n *Node) DisconnectUser(ctx context.Context, user string, d codes.Disconnect) error {
	if d.Code == 0 {
		d = codes.DisconnectForceNoReconnect
	}
	return n.sendControl(ctx, control{Op: "disconnect", User: user, Code: d.Code, Reason: d.Reason})
}

// UnsubscribeUser unsubscribes all of user's connections from channel on every node.
func (n *Node) UnsubscribeUser(ctx context.Context, user, channel string) error {
	return n.UnsubscribeUserWith(ctx, user, channel, 0, "")
}

// sendControl sends c to every node, or only to c.Node when it is set and
// the broker can address one node (the others would drop it anyway).
func (n *Node) sendControl(ctx context.Context, c control) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode control: %w", err)
	}
	if np, ok := n.broker.(broker.NodePublisher); ok && c.Node != "" {
		if err := np.PublishNode(ctx, c.Node, data); err != nil {
			return fmt.Errorf("publish control to node %q: %w", c.Node, err)
		}
		return nil
	}
	if err := n.broker.PublishControl(ctx, data); err != nil {
		return fmt.Errorf("publish control: %w", err)
	}
	return nil
}

// HandleControl implements broker.Handler.
func (n *Node) HandleControl(data []byte) {
	var c control
	if err := json.Unmarshal(data, &c); err != nil {
		n.log.Warn("bad control message", "error", err)
		return
	}
	if c.Node != "" && c.Node != n.id {
		return // addressed to another node
	}
	switch c.Op {
	case "emulate":
		n.handleEmulate(c)
	case "emulated":
		n.handleEmulated(c)
	case "disconnect":
		d := codes.Disconnect{Code: c.Code, Reason: c.Reason}
		for _, s := range n.hub.UserConns(c.User) {
			if c.Client == "" || s.ID() == c.Client {
				s.Disconnect(d)
			}
		}
	case "unsubscribe":
		for _, s := range n.hub.UserConns(c.User) {
			if u, ok := s.(Unsubscriber); ok {
				u.ServerUnsubscribe(c.Channel, c.Code, c.Reason)
			}
		}
	default:
		n.log.Warn("unknown control op", "op", c.Op)
	}
}

// EncodeUnsubscribePush encodes an unsubscribe push for one connection.
func EncodeUnsubscribePush(t protocol.Type, channel string, code uint32, reason string) ([]byte, error) {
	return protocol.GetReplyEncoder(t).Encode(&protocol.Reply{Push: &protocol.Push{Channel: channel, Unsubscribe: &protocol.Unsubscribe{Code: code, Reason: reason}}})
}
