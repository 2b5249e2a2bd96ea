package postgres

// Presence: who is connected where, across replicas, with a TTL; and the
// admission check of connection limits (AdmitPresence).
//
// Presence is soft state: every entry expires unless its connection
// refreshes it, and a replica rewrites all of its entries within one refresh
// period. So its writes commit without waiting for the WAL flush
// (synchronous_commit off for that transaction only, set by softCommit).
// Other sessions see such a commit at once, exactly as a durable one; only
// a PostgreSQL crash can lose the last fraction of a second of them, which
// the next refresh writes again. That takes a disk flush off every connect
// and disconnect. Publications, receipts and everything else stay durable.

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// softCommitSQL, queued first in a batch (one implicit transaction), makes
// that transaction's commit asynchronous; the setting ends with it.
const softCommitSQL = `SELECT set_config('synchronous_commit', 'off', true)`

// softExec runs one statement in a transaction that commits without waiting
// for the WAL flush (see the top of this file).
func (s *Store) softExec(ctx context.Context, sql string, args ...any) error {
	b := &pgx.Batch{}
	b.Queue(softCommitSQL)
	b.Queue(sql, args...)
	return s.pool.SendBatch(ctx, b).Close()
}

// addPresenceSQL adds or refreshes one entry.
const addPresenceSQL = `
INSERT INTO parley_presence (channel, client, user_id, conn_info, chan_info, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + $6)
ON CONFLICT (channel, client) DO UPDATE
SET user_id = EXCLUDED.user_id, conn_info = EXCLUDED.conn_info, chan_info = EXCLUDED.chan_info, expires_at = EXCLUDED.expires_at`

// AddPresence implements store.Presence; calling it again refreshes the entry.
func (s *Store) AddPresence(ctx context.Context, channel string, entry message.ClientInfo) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	if entry.Client == "" {
		return errors.New("postgres store: presence entry without client id")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		err = s.softExec(ctx, addPresenceSQL, channel, entry.Client, entry.User, entry.ConnInfo, entry.ChanInfo, s.opts.PresenceTTL)
		if !retryable(err) {
			break
		}
	}
	return wrapErr("add presence", err)
}

// presenceBatchRows bounds one AddPresences statement.
const presenceBatchRows = 1000

// AddPresences implements store.Presence: one upsert per 1,000 entries,
// the rows sorted by key so two nodes' batches never lock in opposite orders
// (and deduplicated, the last entry of a key winning: one statement may not
// update a row twice).
func (s *Store) AddPresences(ctx context.Context, entries []store.PresenceEntry) error {
	for _, e := range entries {
		if err := validChannel(e.Channel); err != nil {
			return err
		}
		if e.Info.Client == "" {
			return errors.New("postgres store: presence entry without client id")
		}
	}
	byKey := func(a, b store.PresenceEntry) int {
		return cmp.Or(cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.Info.Client, b.Info.Client))
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, byKey)
	w := 0
	for i := range sorted {
		if w > 0 && byKey(sorted[w-1], sorted[i]) == 0 {
			w-- // a later entry of the same key replaces the earlier one
		}
		sorted[w] = sorted[i]
		w++
	}
	sorted = sorted[:w]
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	for len(sorted) > 0 {
		chunk := sorted[:min(len(sorted), presenceBatchRows)]
		sorted = sorted[len(chunk):]
		channels, clients, users := make([]string, len(chunk)), make([]string, len(chunk)), make([]string, len(chunk))
		connInfo, chanInfo := make([][]byte, len(chunk)), make([][]byte, len(chunk))
		for i, e := range chunk {
			channels[i], clients[i], users[i] = e.Channel, e.Info.Client, e.Info.User
			connInfo[i], chanInfo[i] = e.Info.ConnInfo, e.Info.ChanInfo
		}
		var err error
		for attempt := 0; attempt < 2; attempt++ {
			err = s.softExec(ctx, `
				INSERT INTO parley_presence (channel, client, user_id, conn_info, chan_info, expires_at)
				SELECT channel, client, user_id, conn_info, chan_info, now() + $6
				FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[]) AS t(channel, client, user_id, conn_info, chan_info)
				ON CONFLICT (channel, client) DO UPDATE
				SET user_id = EXCLUDED.user_id, conn_info = EXCLUDED.conn_info, chan_info = EXCLUDED.chan_info, expires_at = EXCLUDED.expires_at`,
				channels, clients, users, connInfo, chanInfo, s.opts.PresenceTTL)
			if !retryable(err) {
				break
			}
		}
		if err != nil {
			return wrapErr("add presences", err)
		}
	}
	return nil
}

// RemovePresence implements store.Presence.
func (s *Store) RemovePresence(ctx context.Context, channel, client string) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		err = s.softExec(ctx, `DELETE FROM parley_presence WHERE channel = $1 AND client = $2`, channel, client)
		if !retryable(err) {
			break
		}
	}
	return wrapErr("remove presence", err)
}

// Presence implements store.Presence.
func (s *Store) Presence(ctx context.Context, channel string) (map[string]message.ClientInfo, error) {
	if err := validChannel(channel); err != nil {
		return nil, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var out map[string]message.ClientInfo
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var rows pgx.Rows
		rows, err = s.pool.Query(ctx, `SELECT client, user_id, conn_info, chan_info FROM parley_presence WHERE channel = $1 AND expires_at > now()`, channel)
		if err == nil {
			out = map[string]message.ClientInfo{}
			var ci message.ClientInfo
			_, err = pgx.ForEachRow(rows, []any{&ci.Client, &ci.User, &ci.ConnInfo, &ci.ChanInfo}, func() error {
				out[ci.Client] = ci
				ci = message.ClientInfo{}
				return nil
			})
		}
		if !retryable(err) {
			break
		}
	}
	return out, wrapErr("presence", err)
}

// PresenceStats implements store.Presence.
func (s *Store) PresenceStats(ctx context.Context, channel string) (clients, users int, err error) {
	if err := validChannel(channel); err != nil {
		return 0, 0, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	for attempt := 0; attempt < 2; attempt++ {
		err = s.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT user_id) FROM parley_presence WHERE channel = $1 AND expires_at > now()`, channel).Scan(&clients, &users)
		if !retryable(err) {
			break
		}
	}
	return clients, users, wrapErr("presence stats", err)
}

// admitLockSQL serialises admissions to one channel for the rest of the
// transaction (a transaction-level advisory lock keyed by the channel name's
// hash; another channel sharing the hash only waits a little longer).
const admitLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 7262))`

// admitSQL adds or refreshes the entry only when fewer than the limit other
// live entries are in the channel, and returns a row only when it did. Run
// after admitLockSQL in the same transaction: its snapshot is taken once the
// lock is held, so it counts every entry the earlier lock holders committed.
const admitSQL = `
INSERT INTO parley_presence (channel, client, user_id, conn_info, chan_info, expires_at)
SELECT $1, $2, $3, $4, $5, now() + $6
WHERE (SELECT count(*) FROM parley_presence WHERE channel = $1 AND client <> $2 AND expires_at > now()) < $7
ON CONFLICT (channel, client) DO UPDATE
SET user_id = EXCLUDED.user_id, conn_info = EXCLUDED.conn_info, chan_info = EXCLUDED.chan_info, expires_at = EXCLUDED.expires_at
RETURNING 1`

// AdmitPresence implements store.Presence in one round trip and one
// (asynchronous) commit, shared with the admissions arriving at the same time
// (admit.go): the lock and the conditional upsert are pipelined as one
// implicit transaction. The lock makes the count exact: admissions to the
// channel run one after another, each seeing the entries the earlier ones
// committed (or, in the same group, wrote before it).
func (s *Store) AdmitPresence(ctx context.Context, channel string, entry message.ClientInfo, limit int) (bool, error) {
	if err := validChannel(channel); err != nil {
		return false, err
	}
	if entry.Client == "" {
		return false, errors.New("postgres store: presence entry without client id")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	admitted, err := s.admits.do(ctx, admitRequest{channel: channel, entry: entry, limit: limit}) // admit.go
	return admitted, wrapErr("admit presence", err)
}
