package postgres

// Conversations as people see them: inboxes with unread and mention counts,
// profiles, and full-text search over history (store.Groups).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/chatserver/store"
)

// Touch implements store.Groups in one round trip: the statements go as
// one batch, which PostgreSQL runs as one implicit transaction.
func (s *Store) Touch(ctx context.Context, a store.Activity) ([]string, error) {
	if err := validChannel(a.Channel); err != nil {
		return nil, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO parley_conversations AS c (channel, last_offset, last_at, last_user, preview)
		VALUES ($1, $2, now(), $3, $4)
		ON CONFLICT (channel) DO UPDATE SET last_offset = EXCLUDED.last_offset, last_at = EXCLUDED.last_at,
			last_user = EXCLUDED.last_user, preview = EXCLUDED.preview
		WHERE c.last_offset < EXCLUDED.last_offset`, a.Channel, a.Offset, a.User, a.Preview)
	if len(a.Participants) > 0 {
		b.Queue(`INSERT INTO parley_inbox (user_id, channel) SELECT u, $2 FROM unnest($1::text[]) u ON CONFLICT DO NOTHING`,
			a.Participants, a.Channel)
	}
	if a.User != "" {
		// The author has read what they wrote.
		b.Queue(`INSERT INTO parley_read_receipts AS r (user_id, channel_id, last_read, updated_at)
			SELECT $2, c.id, LEAST($3::bigint, c.top_offset), now() FROM parley_channels c WHERE c.name = $1
			ON CONFLICT (user_id, channel_id) DO UPDATE
			SET last_read = GREATEST(r.last_read, EXCLUDED.last_read), updated_at = now()`, a.Channel, a.User, a.Offset)
	}
	if len(a.Mentions) > 0 {
		b.Queue(`INSERT INTO parley_mentions (user_id, channel, "offset")
			SELECT user_id, channel, $3 FROM parley_inbox WHERE channel = $1 AND user_id = ANY($2::text[]) AND user_id <> $4
			ON CONFLICT DO NOTHING`, a.Channel, a.Mentions, a.Offset, a.User)
	}
	if a.Text != "" && a.Language != "" {
		b.Queue(`INSERT INTO parley_search (channel_id, "offset", body, tsv)
			SELECT p.channel_id, p."offset", $3, to_tsvector($4::regconfig, $3)
			FROM parley_publications p JOIN parley_channels c ON c.id = p.channel_id
			WHERE c.name = $1 AND p."offset" = $2
			ON CONFLICT DO NOTHING`, a.Channel, a.Offset, a.Text, a.Language)
	}
	var users []string
	b.Queue(`SELECT user_id FROM parley_inbox WHERE channel = $1 ORDER BY user_id`, a.Channel).Query(func(rows pgx.Rows) error {
		var err error
		users, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		err = s.pool.SendBatch(ctx, b).Close()
		if !retryable(err) {
			break
		}
	}
	return users, wrapErr("touch", err)
}

// Unindex implements store.Groups.
func (s *Store) Unindex(ctx context.Context, channel string, offset uint64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `DELETE FROM parley_search WHERE channel_id = (SELECT id FROM parley_channels WHERE name = $1) AND "offset" = $2`, channel, offset)
	return wrapErr("unindex", err)
}

// inboxSQL lists a user's conversations with their counts; $2 narrows it
// to one channel when not empty.
const inboxSQL = `
SELECT i.channel, coalesce(g.title, ''), i.muted, coalesce(cv.last_offset, 0), cv.last_at,
	coalesce(cv.last_user, ''), coalesce(cv.preview, ''),
	greatest(coalesce(c.top_offset, 0) - coalesce(r.last_read, 0), 0),
	(SELECT count(*) FROM parley_mentions x WHERE x.user_id = $1 AND x.channel = i.channel AND x."offset" > coalesce(r.last_read, 0))
FROM parley_inbox i
LEFT JOIN parley_groups g ON g.channel = i.channel
LEFT JOIN parley_conversations cv ON cv.channel = i.channel
LEFT JOIN parley_channels c ON c.name = i.channel
LEFT JOIN parley_read_receipts r ON r.channel_id = c.id AND r.user_id = $1
WHERE i.user_id = $1 AND ($2 = '' OR i.channel = $2)
ORDER BY coalesce(cv.last_at, i.joined_at) DESC, i.channel
LIMIT $3 OFFSET $4`

func scanInbox(r pgx.CollectableRow) (store.InboxEntry, error) {
	var e store.InboxEntry
	var at *time.Time
	err := r.Scan(&e.Channel, &e.Title, &e.Muted, &e.LastOffset, &at, &e.LastUser, &e.Preview, &e.Unread, &e.Mentions)
	if at != nil {
		e.LastAt = *at
	}
	return e, err
}

// Inbox implements store.Groups.
func (s *Store) Inbox(ctx context.Context, user string, limit, offset int) ([]store.InboxEntry, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, inboxSQL, user, "", limit, offset)
	if err != nil {
		return nil, wrapErr("inbox", err)
	}
	out, err := pgx.CollectRows(rows, scanInbox)
	return out, wrapErr("inbox", err)
}

// InboxEntry implements store.Groups.
func (s *Store) InboxEntry(ctx context.Context, user, channel string) (store.InboxEntry, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, inboxSQL, user, channel, 1, 0)
	if err != nil {
		return store.InboxEntry{}, wrapErr("inbox entry", err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanInbox)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, store.ErrNotFound
	}
	return e, wrapErr("inbox entry", err)
}

// SetMuted implements store.Groups.
func (s *Store) SetMuted(ctx context.Context, user, channel string, muted bool) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `UPDATE parley_inbox SET muted = $3 WHERE user_id = $1 AND channel = $2`, user, channel, muted)
	if err == nil && tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return wrapErr("set muted", err)
}

// PutProfile implements store.Groups. An unchanged profile writes nothing.
func (s *Store) PutProfile(ctx context.Context, p store.Profile) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `INSERT INTO parley_profiles AS p (user_id, name, picture) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name, picture = EXCLUDED.picture, updated_at = now()
		WHERE p.name IS DISTINCT FROM EXCLUDED.name OR p.picture IS DISTINCT FROM EXCLUDED.picture`, p.User, p.Name, p.Picture)
	return wrapErr("put profile", err)
}

// Profiles implements store.Groups.
func (s *Store) Profiles(ctx context.Context, users []string) ([]store.Profile, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT user_id, name, picture FROM parley_profiles WHERE user_id = ANY($1::text[]) ORDER BY user_id`, users)
	if err != nil {
		return nil, wrapErr("profiles", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[store.Profile])
	return out, wrapErr("profiles", err)
}

// Search implements store.Groups: the user's conversations only, newest
// first, with a highlighted snippet.
func (s *Store) Search(ctx context.Context, user, query, language, channel string, limit, offset int) ([]store.SearchHit, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `
		WITH q AS (SELECT websearch_to_tsquery($3::regconfig, $2) AS q)
		SELECT c.name, p."offset", coalesce(p.info_user, ''), (extract(epoch FROM p.created_at) * 1000)::bigint,
			ts_headline($3::regconfig, x.body, q.q, 'MaxFragments=1, MaxWords=20, MinWords=5'), coalesce(g.title, '')
		FROM q, parley_search x
		JOIN parley_publications p ON p.channel_id = x.channel_id AND p."offset" = x."offset"
		JOIN parley_channels c ON c.id = x.channel_id
		JOIN parley_inbox i ON i.channel = c.name AND i.user_id = $1
		LEFT JOIN parley_groups g ON g.channel = c.name
		WHERE x.tsv @@ q.q AND ($4 = '' OR c.name = $4)
		ORDER BY p.created_at DESC, p."offset" DESC
		LIMIT $5 OFFSET $6`, user, query, language, channel, limit, offset)
	if err != nil {
		return nil, wrapErr("search", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[store.SearchHit])
	return out, wrapErr("search", err)
}

// CheckSearchLanguage fails unless the database has the text search
// configuration language: the server checks groups.searchLanguage at start,
// since every message's inbox update indexes its text with it.
func (s *Store) CheckSearchLanguage(ctx context.Context, language string) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var name string
	if err := s.pool.QueryRow(ctx, `SELECT $1::regconfig::text`, language).Scan(&name); err != nil {
		return wrapErr(fmt.Sprintf("text search configuration %q", language), err)
	}
	return nil
}
