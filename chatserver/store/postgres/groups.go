package postgres

// Groups: members, roles, bans, invites and the audit log (store.Groups).
// Every change locks its group's row first, so changes to one group are
// serialised and the limits hold under concurrency; the audit entry is
// written in the same transaction.

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/chatserver/store"
)

var _ store.Groups = (*Store)(nil)

// tx runs fn in a transaction bounded by the store's operation timeout.
func (s *Store) tx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, fn)
	if isStoreErr(err) {
		return err
	}
	return wrapErr(op, err)
}

// isStoreErr says err is one of store's sentinel errors, returned as is.
func isStoreErr(err error) bool {
	for _, e := range []error{store.ErrNotFound, store.ErrNotMember, store.ErrAlreadyMember, store.ErrBanned,
		store.ErrGroupFull, store.ErrTooManyGroups, store.ErrInviteInvalid, store.ErrAlreadyExists, store.ErrPrecondition} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func audit(ctx context.Context, tx pgx.Tx, channel string, c store.Change) error {
	var detail any
	if len(c.Detail) > 0 {
		detail = c.Detail
	}
	_, err := tx.Exec(ctx, `INSERT INTO parley_group_audit (channel, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)`,
		channel, c.Actor, c.Action, c.Target, detail)
	return err
}

// lockGroup takes the group's row lock, or fails with ErrNotFound.
func lockGroup(ctx context.Context, tx pgx.Tx, channel string) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM parley_groups WHERE channel = $1 FOR UPDATE`, channel).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// addMember inserts a member under the group's lock, checking the limits.
// The user's own advisory lock keeps two groups from admitting them at once
// past GroupsPerUser.
func addMember(ctx context.Context, tx pgx.Tx, channel, user, role string, limits store.Limits) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('parley.member.' || $1, 0))`, user); err != nil {
		return err
	}
	var banned, member bool
	var members, groups int
	if err := tx.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM parley_group_bans WHERE channel = $1 AND user_id = $2),
		EXISTS (SELECT 1 FROM parley_group_members WHERE channel = $1 AND user_id = $2),
		(SELECT count(*) FROM parley_group_members WHERE channel = $1),
		(SELECT count(*) FROM parley_group_members WHERE user_id = $2)`, channel, user).Scan(&banned, &member, &members, &groups); err != nil {
		return err
	}
	switch {
	case banned:
		return store.ErrBanned
	case member:
		return store.ErrAlreadyMember
	case limits.MembersPerGroup > 0 && members >= limits.MembersPerGroup:
		return store.ErrGroupFull
	case limits.GroupsPerUser > 0 && groups >= limits.GroupsPerUser:
		return store.ErrTooManyGroups
	}
	if _, err := tx.Exec(ctx, `INSERT INTO parley_group_members (channel, user_id, role) VALUES ($1, $2, $3)`, channel, user, role); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO parley_inbox (user_id, channel) VALUES ($1, $2) ON CONFLICT DO NOTHING`, user, channel)
	return err
}

// CreateGroup implements store.Groups.
func (s *Store) CreateGroup(ctx context.Context, g store.Group, limits store.Limits, c store.Change) error {
	return s.tx(ctx, "create group", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO parley_groups (channel, title, topic, who_invites, who_posts, owner)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			g.Channel, g.Title, g.Topic, g.WhoInvites, g.WhoPosts, g.Owner)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrAlreadyExists
		}
		if err := addMember(ctx, tx, g.Channel, g.Owner, store.RoleOwner, store.Limits{GroupsPerUser: limits.GroupsPerUser}); err != nil {
			return err
		}
		return audit(ctx, tx, g.Channel, c)
	})
}

// Group implements store.Groups.
func (s *Store) Group(ctx context.Context, channel string) (store.Group, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	g := store.Group{Channel: channel}
	err := s.pool.QueryRow(ctx, `SELECT title, topic, who_invites, who_posts, owner, created_at,
		(SELECT count(*) FROM parley_group_members m WHERE m.channel = g.channel)
		FROM parley_groups g WHERE channel = $1`, channel).
		Scan(&g.Title, &g.Topic, &g.WhoInvites, &g.WhoPosts, &g.Owner, &g.CreatedAt, &g.Members)
	if errors.Is(err, pgx.ErrNoRows) {
		return g, store.ErrNotFound
	}
	return g, wrapErr("group", err)
}

// UpdateGroup implements store.Groups.
func (s *Store) UpdateGroup(ctx context.Context, channel string, set store.GroupSettings, c store.Change) error {
	return s.tx(ctx, "update group", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE parley_groups SET title = $2, topic = $3, who_invites = $4, who_posts = $5 WHERE channel = $1`,
			channel, set.Title, set.Topic, set.WhoInvites, set.WhoPosts)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return audit(ctx, tx, channel, c)
	})
}

// DeleteGroup implements store.Groups.
func (s *Store) DeleteGroup(ctx context.Context, channel string, c store.Change) ([]string, error) {
	var members []string
	err := s.tx(ctx, "delete group", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, channel); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `DELETE FROM parley_group_members WHERE channel = $1 RETURNING user_id`, channel)
		if err != nil {
			return err
		}
		if members, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM parley_inbox WHERE channel = $1`,
			`DELETE FROM parley_mentions WHERE channel = $1`,
			`DELETE FROM parley_conversations WHERE channel = $1`,
			`DELETE FROM parley_groups WHERE channel = $1`,
		} {
			if _, err := tx.Exec(ctx, q, channel); err != nil {
				return err
			}
		}
		return audit(ctx, tx, channel, c)
	})
	return members, err
}

const memberColumns = `m.user_id, m.role, m.joined_at, m.muted_until, coalesce(p.name, ''), coalesce(p.picture, '')`

func scanMember(row pgx.Row) (store.Member, error) {
	var m store.Member
	var muted *time.Time
	err := row.Scan(&m.User, &m.Role, &m.JoinedAt, &muted, &m.Name, &m.Picture)
	if muted != nil {
		m.MutedUntil = *muted
	}
	return m, err
}

// Member implements store.Groups.
func (s *Store) Member(ctx context.Context, channel, user string) (store.Member, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	m, err := scanMember(s.pool.QueryRow(ctx, `SELECT `+memberColumns+` FROM parley_group_members m
		LEFT JOIN parley_profiles p ON p.user_id = m.user_id WHERE m.channel = $1 AND m.user_id = $2`, channel, user))
	if errors.Is(err, pgx.ErrNoRows) {
		return m, store.ErrNotMember
	}
	return m, wrapErr("member", err)
}

// Members implements store.Groups.
func (s *Store) Members(ctx context.Context, channel string, limit, offset int) ([]store.Member, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT `+memberColumns+` FROM parley_group_members m
		LEFT JOIN parley_profiles p ON p.user_id = m.user_id WHERE m.channel = $1
		ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, m.joined_at, m.user_id
		LIMIT $2 OFFSET $3`, channel, limit, offset)
	if err != nil {
		return nil, wrapErr("members", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Member, error) { return scanMember(r) })
	return out, wrapErr("members", err)
}

// AddMember implements store.Groups.
func (s *Store) AddMember(ctx context.Context, channel, user, role string, limits store.Limits, c store.Change) error {
	return s.tx(ctx, "add member", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, channel); err != nil {
			return err
		}
		if err := addMember(ctx, tx, channel, user, role, limits); err != nil {
			return err
		}
		return audit(ctx, tx, channel, c)
	})
}

// RemoveMember implements store.Groups.
func (s *Store) RemoveMember(ctx context.Context, channel, user string, ban bool, c store.Change) error {
	return s.tx(ctx, "remove member", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, channel); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM parley_group_members WHERE channel = $1 AND user_id = $2`, channel, user)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 && !ban {
			return store.ErrNotMember
		}
		if ban {
			if _, err := tx.Exec(ctx, `INSERT INTO parley_group_bans (channel, user_id, by_user) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, channel, user, c.Actor); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM parley_inbox WHERE channel = $1 AND user_id = $2`, channel, user); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM parley_mentions WHERE channel = $1 AND user_id = $2`, channel, user); err != nil {
			return err
		}
		return audit(ctx, tx, channel, c)
	})
}

// Unban implements store.Groups.
func (s *Store) Unban(ctx context.Context, channel, user string, c store.Change) error {
	return s.tx(ctx, "unban", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, channel); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM parley_group_bans WHERE channel = $1 AND user_id = $2`, channel, user)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return audit(ctx, tx, channel, c)
	})
}

// Banned implements store.Groups.
func (s *Store) Banned(ctx context.Context, channel, user string) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var b bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM parley_group_bans WHERE channel = $1 AND user_id = $2)`, channel, user).Scan(&b)
	return b, wrapErr("banned", err)
}

// updateMember changes one member's row under the group's lock.
func (s *Store) updateMember(ctx context.Context, op, channel, user, sql string, arg any, c store.Change) error {
	return s.tx(ctx, op, func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, channel); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sql, channel, user, arg)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotMember
		}
		return audit(ctx, tx, channel, c)
	})
}

// SetRole implements store.Groups.
func (s *Store) SetRole(ctx context.Context, channel, user, role string, c store.Change) error {
	return s.updateMember(ctx, "set role", channel, user,
		`UPDATE parley_group_members SET role = $3 WHERE channel = $1 AND user_id = $2`, role, c)
}

// SetMutedUntil implements store.Groups.
func (s *Store) SetMutedUntil(ctx context.Context, channel, user string, until time.Time, c store.Change) error {
	var arg any
	if !until.IsZero() {
		arg = until
	}
	return s.updateMember(ctx, "mute", channel, user,
		`UPDATE parley_group_members SET muted_until = $3 WHERE channel = $1 AND user_id = $2`, arg, c)
}

// TransferOwnership implements store.Groups.
func (s *Store) TransferOwnership(ctx context.Context, channel, from, to string, c store.Change) error {
	return s.tx(ctx, "transfer ownership", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, channel); err != nil {
			return err
		}
		var owner string
		if err := tx.QueryRow(ctx, `SELECT owner FROM parley_groups WHERE channel = $1`, channel).Scan(&owner); err != nil {
			return err
		}
		if owner != from {
			return store.ErrPrecondition
		}
		tag, err := tx.Exec(ctx, `UPDATE parley_group_members SET role = 'owner' WHERE channel = $1 AND user_id = $2`, channel, to)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotMember
		}
		if _, err := tx.Exec(ctx, `UPDATE parley_group_members SET role = 'admin' WHERE channel = $1 AND user_id = $2`, channel, from); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE parley_groups SET owner = $2 WHERE channel = $1`, channel, to); err != nil {
			return err
		}
		return audit(ctx, tx, channel, c)
	})
}

// GroupsOf implements store.Groups.
func (s *Store) GroupsOf(ctx context.Context, user string) ([]string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT channel FROM parley_group_members WHERE user_id = $1 ORDER BY channel`, user)
	if err != nil {
		return nil, wrapErr("groups of", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return out, wrapErr("groups of", err)
}

// CreateInvite implements store.Groups.
func (s *Store) CreateInvite(ctx context.Context, inv store.Invite, c store.Change) error {
	return s.tx(ctx, "create invite", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, inv.Channel); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO parley_group_invites (code, channel, by_user, expires_at, max_uses) VALUES ($1, $2, $3, $4, $5)`,
			inv.Code, inv.Channel, inv.By, inv.Expires, inv.MaxUses); err != nil {
			return err
		}
		return audit(ctx, tx, inv.Channel, c)
	})
}

// UseInvite implements store.Groups.
func (s *Store) UseInvite(ctx context.Context, code string) (store.Invite, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	inv := store.Invite{Code: code}
	err := s.pool.QueryRow(ctx, `UPDATE parley_group_invites SET uses = uses + 1
		WHERE code = $1 AND expires_at > now() AND (max_uses = 0 OR uses < max_uses)
		RETURNING channel, by_user, expires_at, max_uses, uses`, code).
		Scan(&inv.Channel, &inv.By, &inv.Expires, &inv.MaxUses, &inv.Uses)
	if errors.Is(err, pgx.ErrNoRows) {
		return inv, store.ErrInviteInvalid
	}
	return inv, wrapErr("use invite", err)
}

// Audit implements store.Groups.
func (s *Store) Audit(ctx context.Context, channel string, before int64, limit int) ([]store.AuditEntry, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if before <= 0 {
		before = 1 << 62
	}
	rows, err := s.pool.Query(ctx, `SELECT id, channel, actor, action, target, coalesce(detail::text, ''), at FROM parley_group_audit
		WHERE channel = $1 AND id < $2 ORDER BY id DESC LIMIT $3`, channel, before, limit)
	if err != nil {
		return nil, wrapErr("audit", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.AuditEntry, error) {
		var e store.AuditEntry
		var detail string
		err := r.Scan(&e.ID, &e.Channel, &e.Actor, &e.Action, &e.Target, &detail, &e.At)
		if detail != "" {
			e.Detail = []byte(detail)
		}
		return e, err
	})
	return out, wrapErr("audit", err)
}

// CountActions implements store.Groups.
func (s *Store) CountActions(ctx context.Context, actor, action string, since time.Time) (int, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM parley_group_audit WHERE actor = $1 AND action = $2 AND at >= $3`, actor, action, since).Scan(&n)
	return n, wrapErr("count actions", err)
}

// Record implements store.Groups.
func (s *Store) Record(ctx context.Context, channel string, c store.Change) error {
	return s.tx(ctx, "record", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, channel); err != nil {
			return err
		}
		return audit(ctx, tx, channel, c)
	})
}
