// Package store defines where channel history, stream positions, read receipts
// and presence live. The memory implementation serves one node and tests; the
// postgres implementation makes them durable and shared by every replica.
// Both pass the same contract tests (contract_test helpers in storetest).
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
)

// ErrUnavailable wraps failures of the backing store (connection lost, timeout).
// Callers map it to a retryable protocol error; nothing was acknowledged.
var ErrUnavailable = errors.New("store unavailable")

// DefaultIdempotencyTTL is how long an idempotency key is remembered when
// AppendOptions.IdempotencyTTL is zero.
const DefaultIdempotencyTTL = 5 * time.Minute

// AppendOptions controls how one publication is stored.
type AppendOptions struct {
	// HistorySize and HistoryTTL bound what is kept for the channel. Zero size
	// means the channel keeps no history: the publication still gets an offset so
	// subscribers can detect gaps, but History returns nothing.
	HistorySize int
	HistoryTTL  time.Duration
	// IdempotencyKey, when set, makes Append return the publication first stored
	// under the same key in this channel (Duplicate=true) instead of storing again.
	// Keys are remembered for IdempotencyTTL (DefaultIdempotencyTTL when zero).
	// A duplicate's Position carries the original publication's offset.
	IdempotencyKey string
	IdempotencyTTL time.Duration
}

// AppendResult is what Append stored.
type AppendResult struct {
	Publication *message.Publication
	Position    message.StreamPosition
	// Duplicate is true when IdempotencyKey matched an earlier publication; that
	// earlier publication is returned and nothing new was stored or should be broadcast.
	Duplicate bool
	// Nodes, when Routed, are the nodes registered in the Directory for the
	// channel as the publication committed: exactly those owed it (see
	// Directory). A store without a Directory leaves Routed false.
	Nodes  []string
	Routed bool
}

// HistoryOptions selects a page of history.
type HistoryOptions struct {
	// Since, when set, returns publications with offsets after Since.Offset
	// (before it when Reverse). If Since.Epoch differs from the stream's epoch,
	// ErrEpochMismatch is returned together with the current position.
	Since *message.StreamPosition
	// Limit caps the number of publications; 0 returns only the position, -1 all.
	Limit int
	// Reverse returns the newest publications first. Without Since a forward
	// page starts at the oldest kept publication and a reverse page at the newest.
	Reverse bool
}

// InitialEpoch is the epoch of channel's stream until history is first
// removed: derived from the store's seed, so every replica hands out the
// same one before the stream exists, and a new database (a new seed) gives
// every channel a new epoch.
func InitialEpoch(seed, channel string) string {
	sum := sha256.Sum256([]byte(seed + "\x00" + channel))
	return hex.EncodeToString(sum[:6])
}

// ErrEpochMismatch means the caller's position belongs to a lost history.
var ErrEpochMismatch = errors.New("stream epoch mismatch")

// Store is history, positions and receipts.
//
// Contract:
//   - Append is atomic per channel: offsets are assigned densely (1, 2, 3, …) in
//     commit order, and once Append returns nil the publication is durable (for
//     the postgres store: committed). Two nodes appending to one channel at once
//     get distinct, consecutive offsets.
//   - The epoch of a channel never changes while its history exists; it changes
//     only when history is lost (RemoveHistory, data loss, retention that dropped
//     offsets the caller had not seen is NOT loss: the caller gets a shorter page
//     and must compare offsets).
//   - History returns publications in offset order (descending when Reverse).
//   - A channel's position before its first publication is offset 0 and
//     InitialEpoch(seed, channel), the seed being the store's (one per
//     database, shared by every replica): a position handed out before the
//     first publication stays valid after it, and reading a channel stores
//     nothing. Only Append (and RemoveHistory) create a channel's stream, so
//     no client can grow the store by naming channels nobody publishes to.
//   - RemoveHistory starts a new epoch whose offsets start again at 1; the
//     channel's read receipts and idempotency keys belong to the old epoch and
//     are dropped with it. A node comparing offsets must compare epochs too.
//   - MarkRead clamps the offset to the channel's top and never moves back;
//     Unread is LastOffset - LastRead. Receipts lists the same receipts per
//     channel (users who never read past offset 0 are left out).
//   - Presence entries expire after the implementation's TTL unless
//     AddPresence is called again for them (the node refreshes its clients).
//   - Errors caused by the backing service wrap ErrUnavailable; bad arguments
//     (empty channel or user, nil publication) get a plain error.
//   - Implementations are safe for concurrent use.
type Store interface {
	Append(ctx context.Context, channel string, pub *message.Publication, opts AppendOptions) (AppendResult, error)
	History(ctx context.Context, channel string, opts HistoryOptions) ([]*message.Publication, message.StreamPosition, error)
	// Position returns the channel's current top offset and epoch without reading history.
	Position(ctx context.Context, channel string) (message.StreamPosition, error)
	// RemoveHistory drops a channel's history and starts a new epoch.
	RemoveHistory(ctx context.Context, channel string) error

	// MarkRead records that user has read channel up to offset (never moves backwards).
	MarkRead(ctx context.Context, channel, user string, offset uint64) error
	// ReadStates returns the user's receipts and unread counts for the channels.
	ReadStates(ctx context.Context, user string, channels []string) ([]message.ReadState, error)
	// Receipts returns how far users have read channel, furthest first (ties
	// by user name), at most limit of them (limit must be positive).
	Receipts(ctx context.Context, channel string, limit int) ([]message.Receipt, error)

	Outbox
	Presence
	Groups
	Close() error
}

// Directory is optionally implemented by stores that also keep which nodes
// have subscribers in which channels, so a node can send a publication to
// exactly those nodes (broker.Directed) instead of routing it through a
// RabbitMQ binding per channel and node. It lives beside the offsets because
// it must be ordered with them:
//   - Register returns the channel's position, and every publication
//     appended after it (a higher offset) has the node in its
//     AppendResult.Nodes; publications at or below it are in history.
//   - Nodes read after a publication committed include every node owed it.
//   - Registrations of a node not seen (NodeAlive) for the implementation's
//     TTL are removed, so a dead node is not addressed for ever.
type Directory interface {
	Register(ctx context.Context, channel, node string) (message.StreamPosition, error)
	Unregister(ctx context.Context, channel, node string) error
	// Nodes lists the nodes registered for channel now.
	Nodes(ctx context.Context, channel string) ([]string, error)
	// NodeAlive records that node is alive and removes the registrations
	// of nodes not seen for the TTL. It reports false when node was not
	// known alive (first call, or it was taken for dead and its
	// registrations removed): the node then registers its channels again.
	NodeAlive(ctx context.Context, node string) (known bool, err error)
	// LegacyClients counts the store's other clients that do not say they
	// read the directory (replicas of an older release, during a rolling
	// update): while there are any, nodes also bind channels by name.
	LegacyClients(ctx context.Context) (int, error)
}

// Unsent is a channel's newest publication that was committed but not
// handed to the broker.
type Unsent struct {
	Channel  string
	Position message.StreamPosition
}

// Outbox remembers, per channel, the newest committed publication the
// broker did not take (RabbitMQ unreachable from the publishing replica), in
// the store every replica shares: when that replica dies or is drained
// before the broker is back, another one re-publishes it, and its
// subscribers' replicas fill the gap before it from history. A publish is
// acknowledged only once its publication is with the broker or here.
type Outbox interface {
	// MarkUnsent records pos as channel's unsent position; a lower offset of
	// the same epoch does not replace a higher one.
	MarkUnsent(ctx context.Context, channel string, pos message.StreamPosition) error
	// Unsent lists at most limit channels with an unsent position.
	Unsent(ctx context.Context, limit int) ([]Unsent, error)
	// ClearUnsent forgets channel's entry if it is pos (a newer one stays).
	ClearUnsent(ctx context.Context, channel string, pos message.StreamPosition) error
}

// PresenceEntry is one connection's presence in one channel.
type PresenceEntry struct {
	Channel string
	Info    message.ClientInfo
}

// Presence tracks which connections are in which channels across all nodes.
// Entries expire when not refreshed within the implementation's TTL, so a node
// that dies does not leave ghosts behind.
type Presence interface {
	AddPresence(ctx context.Context, channel string, entry message.ClientInfo) error
	// AddPresences adds or refreshes many entries at once, as AddPresence
	// each would: nodes batch their connections' periodic refreshes through
	// it, so a million connections cost a few statements a second, not
	// tens of thousands. At most one entry per (channel, client).
	AddPresences(ctx context.Context, entries []PresenceEntry) error
	RemovePresence(ctx context.Context, channel, client string) error
	Presence(ctx context.Context, channel string) (map[string]message.ClientInfo, error)
	// PresenceStats counts connections and distinct users.
	PresenceStats(ctx context.Context, channel string) (clients, users int, err error)
	// AdmitPresence adds (or refreshes) entry unless the channel would then
	// hold more than limit live entries, and reports whether it did. Calls
	// for one channel are serialised across every store instance sharing the
	// data, so concurrent admissions never overshoot the limit (connection
	// limits count with it, on the connect path: one round trip).
	AdmitPresence(ctx context.Context, channel string, entry message.ClientInfo, limit int) (bool, error)
}
