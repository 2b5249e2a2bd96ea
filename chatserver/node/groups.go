package node

// The node's side of groups (package groups): the rules run there; what
// they do to live connections on every replica happens here.

import (
	"context"
	"fmt"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/groups"
)

// Groups is the groups service of this node.
func (n *Node) Groups() *groups.Service { return n.groups }

// groupEffects implements groups.Effects with the node.
type groupEffects struct{ n *Node }

var _ groups.Effects = groupEffects{}

// Unsubscribe implements groups.Effects through the control exchange: every
// replica ends the user's subscriptions with an unsubscribe push.
func (e groupEffects) Unsubscribe(ctx context.Context, user, channel string, code uint32, reason string) error {
	return e.n.UnsubscribeUserWith(ctx, user, channel, code, reason)
}

// Notify implements groups.Effects: a publication in the user's personal
// channel tagged type=inbox, never stored.
func (e groupEffects) Notify(ctx context.Context, user string, data []byte) error {
	ch := e.n.authz.PersonalChannel(user)
	if ch == "" {
		return nil // no personal namespace: clients poll the inbox
	}
	return e.n.PublishEphemeral(ctx, ch, data, nil, map[string]string{TagType: "inbox"})
}

// Forget implements groups.Effects.
func (e groupEffects) Forget(ctx context.Context, channel string) error {
	if err := e.n.store.RemoveHistory(ctx, channel); err != nil {
		return fmt.Errorf("remove history of %q: %w", channel, err)
	}
	return nil
}

// UnsubscribeUserWith unsubscribes all of user's connections from channel
// on every node, telling each client code and reason.
func (n *Node) UnsubscribeUserWith(ctx context.Context, user, channel string, code uint32, reason string) error {
	if code == 0 {
		code, reason = codes.UnsubscribeServer, "server unsubscribe"
	}
	return n.sendControl(ctx, control{Op: "unsubscribe", User: user, Channel: channel, Code: code, Reason: reason})
}
