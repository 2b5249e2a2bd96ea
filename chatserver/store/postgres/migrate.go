package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockKey is the pg_advisory_xact_lock key that serialises schema
// migrations between replicas starting at once ("parley.m" as an integer).
const migrationLockKey int64 = 0x7061726c65792e6d

// migrations are applied in order, each once; never edit a released one,
// append a new one instead.
var migrations = []string{
	// 1: channels, history, idempotency keys, read receipts, presence.
	`
CREATE TABLE parley_channels (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name         text        NOT NULL UNIQUE,
	epoch        text        NOT NULL,
	top_offset   bigint      NOT NULL DEFAULT 0,
	history_size integer     NOT NULL DEFAULT 0,
	history_ttl  interval,
	-- publications below min_offset were removed by the retention job
	min_offset   bigint      NOT NULL DEFAULT 1
);

CREATE TABLE parley_publications (
	channel_id  bigint      NOT NULL REFERENCES parley_channels (id) ON DELETE CASCADE,
	"offset"    bigint      NOT NULL,
	data        bytea       NOT NULL,
	info_user   text,
	info_client text,
	conn_info   bytea,
	chan_info   bytea,
	tags        jsonb,
	created_at  timestamptz NOT NULL,
	expires_at  timestamptz,
	PRIMARY KEY (channel_id, "offset")
);
CREATE INDEX parley_publications_expires_at ON parley_publications (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE parley_idempotency (
	channel_id  bigint      NOT NULL REFERENCES parley_channels (id) ON DELETE CASCADE,
	key         text        NOT NULL,
	publication jsonb       NOT NULL,
	expires_at  timestamptz NOT NULL,
	PRIMARY KEY (channel_id, key)
);
CREATE INDEX parley_idempotency_expires_at ON parley_idempotency (expires_at);

CREATE TABLE parley_read_receipts (
	user_id    text        NOT NULL,
	channel_id bigint      NOT NULL REFERENCES parley_channels (id) ON DELETE CASCADE,
	last_read  bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (user_id, channel_id)
);
CREATE INDEX parley_read_receipts_channel ON parley_read_receipts (channel_id);

CREATE TABLE parley_presence (
	channel    text        NOT NULL,
	client     text        NOT NULL,
	user_id    text        NOT NULL,
	conn_info  bytea,
	chan_info  bytea,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (channel, client)
);
CREATE INDEX parley_presence_expires_at ON parley_presence (expires_at);
`,
	// 2: the database's epoch seed: a channel without a row (never published
	// to) has the epoch store.InitialEpoch(seed, name), so reading a channel
	// creates no row and its first publication keeps the epoch handed out.
	`
CREATE TABLE parley_meta (
	key   text PRIMARY KEY,
	value text NOT NULL
);
INSERT INTO parley_meta (key, value) VALUES ('epoch_seed', md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text));
`,
	// 3: the outbox (store.Outbox): per channel, the newest committed
	// publication the broker did not take, swept by every replica.
	`
CREATE TABLE parley_unsent (
	channel    text        PRIMARY KEY,
	"offset"   bigint      NOT NULL,
	epoch      text        NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
`,
	// 4: groups (store.Groups): members with roles, bans, invites, the audit
	// log (kept when a group is deleted), inboxes, conversations' last
	// message, mentions, profiles and the search index (rows go with their
	// publication when retention or RemoveHistory drops it).
	`
CREATE TABLE parley_groups (
	channel     text        PRIMARY KEY,
	title       text        NOT NULL DEFAULT '',
	topic       text        NOT NULL DEFAULT '',
	who_invites text        NOT NULL DEFAULT 'members',
	who_posts   text        NOT NULL DEFAULT 'members',
	owner       text        NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE parley_group_members (
	channel     text        NOT NULL REFERENCES parley_groups (channel) ON DELETE CASCADE,
	user_id     text        NOT NULL,
	role        text        NOT NULL,
	joined_at   timestamptz NOT NULL DEFAULT now(),
	muted_until timestamptz,
	PRIMARY KEY (channel, user_id)
);
CREATE INDEX parley_group_members_user ON parley_group_members (user_id);
CREATE TABLE parley_group_bans (
	channel text        NOT NULL REFERENCES parley_groups (channel) ON DELETE CASCADE,
	user_id text        NOT NULL,
	by_user text        NOT NULL,
	at      timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel, user_id)
);
CREATE TABLE parley_group_invites (
	code       text        PRIMARY KEY,
	channel    text        NOT NULL REFERENCES parley_groups (channel) ON DELETE CASCADE,
	by_user    text        NOT NULL,
	expires_at timestamptz NOT NULL,
	max_uses   integer     NOT NULL DEFAULT 0,
	uses       integer     NOT NULL DEFAULT 0
);
CREATE TABLE parley_group_audit (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	channel text        NOT NULL,
	actor   text        NOT NULL,
	action  text        NOT NULL,
	target  text        NOT NULL DEFAULT '',
	detail  jsonb,
	at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parley_group_audit_channel ON parley_group_audit (channel, id);
CREATE INDEX parley_group_audit_actor ON parley_group_audit (actor, action, at);
CREATE TABLE parley_inbox (
	user_id   text        NOT NULL,
	channel   text        NOT NULL,
	muted     boolean     NOT NULL DEFAULT false,
	joined_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (user_id, channel)
);
CREATE INDEX parley_inbox_channel ON parley_inbox (channel);
CREATE TABLE parley_conversations (
	channel     text        PRIMARY KEY,
	last_offset bigint      NOT NULL,
	last_at     timestamptz NOT NULL,
	last_user   text        NOT NULL DEFAULT '',
	preview     text        NOT NULL DEFAULT ''
);
CREATE TABLE parley_mentions (
	user_id  text   NOT NULL,
	channel  text   NOT NULL,
	"offset" bigint NOT NULL,
	PRIMARY KEY (user_id, channel, "offset")
);
CREATE TABLE parley_profiles (
	user_id    text        PRIMARY KEY,
	name       text        NOT NULL DEFAULT '',
	picture    text        NOT NULL DEFAULT '',
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE parley_search (
	channel_id bigint    NOT NULL,
	"offset"   bigint    NOT NULL,
	body       text      NOT NULL,
	tsv        tsvector  NOT NULL,
	PRIMARY KEY (channel_id, "offset"),
	FOREIGN KEY (channel_id, "offset") REFERENCES parley_publications (channel_id, "offset") ON DELETE CASCADE
);
CREATE INDEX parley_search_tsv ON parley_search USING gin (tsv);
`,
	// 5: the publication hot path. An append inserts its publication with the
	// id of the channel row the same statement just updated, so the foreign
	// key's check on every insert (a lookup and a row lock through a trigger)
	// proves nothing; channel rows are never deleted (RemoveHistory starts a
	// new epoch in the same row), so its cascade never ran. Channel rows are
	// updated once per publication: free room on their pages lets PostgreSQL
	// update them in place (HOT), without new index entries.
	`
ALTER TABLE parley_publications DROP CONSTRAINT IF EXISTS parley_publications_channel_id_fkey;
ALTER TABLE parley_channels SET (fillfactor = 50);
`,
	// 6: the subscription directory (directory.go): which replicas have
	// subscribers in a channel, in the channel's row, so publications go to
	// those replicas only, without a RabbitMQ binding per channel and
	// replica. Adding a column with a constant default rewrites nothing; the
	// GIN index finds a dead replica's channels; appends do not change
	// nodes, so their updates stay HOT.
	`
ALTER TABLE parley_channels ADD COLUMN nodes text[] NOT NULL DEFAULT '{}';
CREATE INDEX parley_channels_nodes ON parley_channels USING gin (nodes);
CREATE TABLE parley_nodes (
	node    text        PRIMARY KEY,
	seen_at timestamptz NOT NULL
);
`,
}

// SchemaVersion is the schema version this code expects.
var SchemaVersion = len(migrations)

// Migrate brings the database schema up to SchemaVersion. It holds a
// transaction-scoped advisory lock while it reads the version and applies
// what is missing, all in one transaction, so replicas starting together
// apply each migration exactly once and a failed migration leaves nothing
// half-done. A database newer than this code is an error: an older replica
// must not run against a schema it does not know.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS parley_schema_migrations (
			version    integer     PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create parley_schema_migrations: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM parley_schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this server's %d: upgrade the server", current, len(migrations))
		}
		for v := current + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("apply migration %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO parley_schema_migrations (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("record migration %d: %w", v, err)
			}
		}
		return nil
	})
}
