package node

import (
	"context"
	"fmt"

	"github.com/parley-chat/parley/chatserver/message"
)

// limits.connectionsPerUser holds across the cluster: every connection of a
// signed-in user has a presence entry in the user's connections channel, in
// the store all replicas share. A connection is admitted, and its entry
// added, only while the user's other entries number fewer than the limit;
// the store serialises admissions of one user across replicas, so racing
// connections on two replicas never both take the last place.
// Entries are refreshed with the connection's other presence (every ping, batched)
// and expire with the store's presence TTL, so a replica that dies without
// cleaning up blocks nobody for longer than that.

// userConnsChannel is the presence channel that counts user's connections.
// Namespace names cannot contain '$', so no client can name this channel.
func userConnsChannel(user string) string { return "$conns:" + user }

// AdmitConnection registers a connection of info.User and reports whether the
// user is within limits.connectionsPerUser on every replica sharing the
// store. With no limit, or for an anonymous connection, it does nothing. An
// admitted connection must call ReleaseConnection when it ends; a refused one
// is already released. When the store cannot answer, the connection is
// admitted on the strength of the per-node check (UserConnectionsAllowed,
// which the caller made first) and the error is returned for the log: its
// entry is added again at its next RefreshConnection.
func (n *Node) AdmitConnection(ctx context.Context, info message.ClientInfo) (bool, error) {
	limit := n.cfg.Limits.ConnectionsPerUser
	if limit <= 0 || info.User == "" {
		return true, nil
	}
	entry := message.ClientInfo{User: info.User, Client: info.Client}
	// One round trip: the store counts and adds in one step.
	admitted, err := n.store.AdmitPresence(ctx, userConnsChannel(info.User), entry, limit)
	if err != nil {
		return true, fmt.Errorf("count connections of %q: %w", info.User, err)
	}
	return admitted, nil
}

// RefreshConnection keeps an admitted connection counted (batched like
// RefreshPresence).
func (n *Node) RefreshConnection(_ context.Context, info message.ClientInfo) error {
	if n.cfg.Limits.ConnectionsPerUser <= 0 || info.User == "" {
		return nil
	}
	n.presence.add(userConnsChannel(info.User), message.ClientInfo{User: info.User, Client: info.Client})
	return nil
}

// ReleaseConnection stops counting a connection that AdmitConnection admitted.
func (n *Node) ReleaseConnection(ctx context.Context, info message.ClientInfo) error {
	if n.cfg.Limits.ConnectionsPerUser <= 0 || info.User == "" {
		return nil
	}
	n.presence.forget(userConnsChannel(info.User), info.Client)
	return n.store.RemovePresence(ctx, userConnsChannel(info.User), info.Client)
}
