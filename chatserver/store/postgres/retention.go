package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// retentionLockKey makes one replica at a time run the retention job
// ("parley.r" as an integer); the others skip that round.
const retentionLockKey int64 = 0x7061726c65792e72

// RetentionStats counts what one retention run deleted.
type RetentionStats struct {
	// Skipped is true when another replica held the retention lock.
	Skipped         bool
	ExpiredByAge    int64
	TrimmedBySize   int64
	IdempotencyKeys int64
	PresenceEntries int64
	// Mentions counts mentions deleted because their user read past them.
	Mentions int64
}

func (s *Store) retentionLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Retain(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("history retention failed; retrying next interval", "error", err)
		}
	}
}

// Retain runs the retention job once: it deletes publications older than
// their channel's TTL or beyond its size, expired idempotency keys and
// expired presence entries, each in batches of Options.RetentionBatch rows so
// no statement holds locks for long. Reads already hide what retention would
// delete; this job reclaims the space. Positions and epochs are untouched.
func (s *Store) Retain(ctx context.Context) (RetentionStats, error) {
	var st RetentionStats
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return st, wrapErr("retention", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, retentionLockKey).Scan(&locked); err != nil {
		return st, wrapErr("retention lock", err)
	}
	if !locked {
		st.Skipped = true
		return st, nil
	}
	defer func() {
		// A session lock outlives the statement: release it, or drop the
		// connection so the lock goes with it.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, retentionLockKey); err != nil {
			_ = conn.Hijack().Close(uctx)
		}
	}()
	batch := s.opts.RetentionBatch
	deleteBatches := func(what string, sql string, counter *int64) error {
		for {
			tag, err := conn.Exec(ctx, sql, batch)
			if err != nil {
				return wrapErr("retention: "+what, err)
			}
			*counter += tag.RowsAffected()
			if tag.RowsAffected() < int64(batch) {
				return nil
			}
		}
	}
	if err := deleteBatches("expired publications", `
		DELETE FROM parley_publications WHERE (channel_id, "offset") IN (
			SELECT channel_id, "offset" FROM parley_publications
			WHERE expires_at IS NOT NULL AND expires_at <= now() LIMIT $1)`, &st.ExpiredByAge); err != nil {
		return st, err
	}
	if err := s.trimBySize(ctx, conn.Conn(), &st); err != nil {
		return st, err
	}
	if err := deleteBatches("idempotency keys", `
		DELETE FROM parley_idempotency WHERE (channel_id, key) IN (
			SELECT channel_id, key FROM parley_idempotency WHERE expires_at <= now() LIMIT $1)`, &st.IdempotencyKeys); err != nil {
		return st, err
	}
	if err := deleteBatches("read mentions", `
		DELETE FROM parley_mentions WHERE (user_id, channel, "offset") IN (
			SELECT m.user_id, m.channel, m."offset" FROM parley_mentions m
			JOIN parley_channels c ON c.name = m.channel
			JOIN parley_read_receipts r ON r.channel_id = c.id AND r.user_id = m.user_id
			WHERE m."offset" <= r.last_read LIMIT $1)`, &st.Mentions); err != nil {
		return st, err
	}
	if err := deleteBatches("presence", `
		DELETE FROM parley_presence WHERE (channel, client) IN (
			SELECT channel, client FROM parley_presence WHERE expires_at <= now() LIMIT $1)`, &st.PresenceEntries); err != nil {
		return st, err
	}
	return st, nil
}

// trimBySize walks channels in id order, a batch at a time, and deletes the
// publications below top_offset - history_size that are still stored
// (min_offset tracks how far a channel has been trimmed).
func (s *Store) trimBySize(ctx context.Context, conn *pgx.Conn, st *RetentionStats) error {
	batch := s.opts.RetentionBatch
	var after int64
	for {
		rows, err := conn.Query(ctx, `
			SELECT id, min_offset, top_offset - history_size
			FROM parley_channels
			WHERE id > $1 AND top_offset - history_size >= min_offset
			ORDER BY id LIMIT $2`, after, batch)
		if err != nil {
			return wrapErr("retention: find channels over size", err)
		}
		type work struct{ id, from, upto int64 }
		todo, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (work, error) {
			var w work
			return w, r.Scan(&w.id, &w.from, &w.upto)
		})
		if err != nil {
			return wrapErr("retention: find channels over size", err)
		}
		for _, w := range todo {
			for from := w.from; from <= w.upto; from += int64(batch) {
				to := min(from+int64(batch)-1, w.upto)
				// The bound is re-read from the channel row so a RemoveHistory
				// that restarted the offsets meanwhile is never trimmed by stale numbers.
				tag, err := conn.Exec(ctx, `
					DELETE FROM parley_publications WHERE channel_id = $1 AND "offset" BETWEEN $2 AND $3
					AND "offset" <= (SELECT top_offset - history_size FROM parley_channels WHERE id = $1)`, w.id, from, to)
				if err != nil {
					return wrapErr("retention: trim by size", err)
				}
				st.TrimmedBySize += tag.RowsAffected()
				// min_offset only moves forward, and not past a top that
				// RemoveHistory reset meanwhile.
				if _, err := conn.Exec(ctx, `UPDATE parley_channels SET min_offset = $2 WHERE id = $1 AND min_offset < $2 AND top_offset >= $3`, w.id, to+1, to); err != nil {
					return wrapErr("retention: trim by size", err)
				}
			}
		}
		if len(todo) < batch {
			return nil
		}
		after = todo[len(todo)-1].id
	}
}

func (st RetentionStats) String() string {
	return fmt.Sprintf("expired=%d trimmed=%d keys=%d presence=%d mentions=%d skipped=%v", st.ExpiredByAge, st.TrimmedBySize, st.IdempotencyKeys, st.PresenceEntries, st.Mentions, st.Skipped)
}
