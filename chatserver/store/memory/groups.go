package memory

// Groups, members, bans, invites and the audit log in memory (store.Groups;
// inboxes, profiles and search are in inbox.go). One mutex
// guards all of it: dev mode and tests, not a million users.

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/parley-chat/parley/chatserver/store"
)

type memGroup struct {
	g       store.Group
	members map[string]*store.Member
	bans    map[string]bool
}

type inboxKey struct{ user, channel string }

type inboxRow struct {
	muted    bool
	joinedAt time.Time
}

type conversation struct {
	offset  uint64
	at      time.Time
	user    string
	preview string
}

type indexed struct {
	channel string
	offset  uint64
	body    string
	words   []string
}

// groupState is the memory store's store.Groups data.
type groupState struct {
	mu       sync.Mutex
	groups   map[string]*memGroup
	invites  map[string]*store.Invite
	audit    []store.AuditEntry
	inbox    map[inboxKey]*inboxRow
	convs    map[string]*conversation
	mentions map[inboxKey][]uint64
	profiles map[string]store.Profile
	index    []indexed
}

func (s *Store) gs() *groupState {
	s.groupsOnce.Do(func() {
		s.groups = &groupState{
			groups: map[string]*memGroup{}, invites: map[string]*store.Invite{},
			inbox: map[inboxKey]*inboxRow{}, convs: map[string]*conversation{},
			mentions: map[inboxKey][]uint64{}, profiles: map[string]store.Profile{},
		}
	})
	return s.groups
}

var _ store.Groups = (*Store)(nil)

// lock checks the context and the store, then takes the groups lock.
func (s *Store) lockGroups(ctx context.Context) (*groupState, error) {
	if err := s.check(ctx, "-"); err != nil {
		return nil, err
	}
	g := s.gs()
	g.mu.Lock()
	return g, nil
}

func (g *groupState) record(channel string, c store.Change) {
	g.audit = append(g.audit, store.AuditEntry{ID: int64(len(g.audit) + 1), Channel: channel, Change: c, At: time.Now()})
}

func (g *groupState) groupsOf(user string) int {
	n := 0
	for _, gr := range g.groups {
		if gr.members[user] != nil {
			n++
		}
	}
	return n
}

func (g *groupState) add(gr *memGroup, user, role string, limits store.Limits) error {
	switch {
	case gr.bans[user]:
		return store.ErrBanned
	case gr.members[user] != nil:
		return store.ErrAlreadyMember
	case limits.MembersPerGroup > 0 && len(gr.members) >= limits.MembersPerGroup:
		return store.ErrGroupFull
	case limits.GroupsPerUser > 0 && g.groupsOf(user) >= limits.GroupsPerUser:
		return store.ErrTooManyGroups
	}
	gr.members[user] = &store.Member{User: user, Role: role, JoinedAt: time.Now()}
	k := inboxKey{user, gr.g.Channel}
	if g.inbox[k] == nil {
		g.inbox[k] = &inboxRow{joinedAt: time.Now()}
	}
	return nil
}

// CreateGroup implements store.Groups.
func (s *Store) CreateGroup(ctx context.Context, grp store.Group, limits store.Limits, c store.Change) error {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return err
	}
	defer g.mu.Unlock()
	if g.groups[grp.Channel] != nil {
		return store.ErrAlreadyExists
	}
	grp.CreatedAt = time.Now()
	gr := &memGroup{g: grp, members: map[string]*store.Member{}, bans: map[string]bool{}}
	if err := g.add(gr, grp.Owner, store.RoleOwner, store.Limits{GroupsPerUser: limits.GroupsPerUser}); err != nil {
		return err
	}
	g.groups[grp.Channel] = gr
	g.record(grp.Channel, c)
	return nil
}

// withGroup runs fn on the channel's group under the lock.
func (s *Store) withGroup(ctx context.Context, channel string, fn func(g *groupState, gr *memGroup) error) error {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return err
	}
	defer g.mu.Unlock()
	gr := g.groups[channel]
	if gr == nil {
		return store.ErrNotFound
	}
	return fn(g, gr)
}

// Group implements store.Groups.
func (s *Store) Group(ctx context.Context, channel string) (out store.Group, err error) {
	err = s.withGroup(ctx, channel, func(_ *groupState, gr *memGroup) error {
		out = gr.g
		out.Members = len(gr.members)
		return nil
	})
	return out, err
}

// UpdateGroup implements store.Groups.
func (s *Store) UpdateGroup(ctx context.Context, channel string, set store.GroupSettings, c store.Change) error {
	return s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		gr.g.GroupSettings = set
		g.record(channel, c)
		return nil
	})
}

// DeleteGroup implements store.Groups.
func (s *Store) DeleteGroup(ctx context.Context, channel string, c store.Change) (members []string, err error) {
	err = s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		for u := range gr.members {
			members = append(members, u)
		}
		slices.Sort(members)
		for k := range g.inbox {
			if k.channel == channel {
				delete(g.inbox, k)
				delete(g.mentions, k)
			}
		}
		delete(g.convs, channel)
		delete(g.groups, channel)
		g.record(channel, c)
		return nil
	})
	return members, err
}

func (g *groupState) withProfile(m store.Member) store.Member {
	p := g.profiles[m.User]
	m.Name, m.Picture = p.Name, p.Picture
	return m
}

// Member implements store.Groups.
func (s *Store) Member(ctx context.Context, channel, user string) (out store.Member, err error) {
	err = s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		m := gr.members[user]
		if m == nil {
			return store.ErrNotMember
		}
		out = g.withProfile(*m)
		return nil
	})
	if err == store.ErrNotFound {
		err = store.ErrNotMember
	}
	return out, err
}

func roleRank(r string) int {
	switch r {
	case store.RoleOwner:
		return 0
	case store.RoleAdmin:
		return 1
	}
	return 2
}

// Members implements store.Groups.
func (s *Store) Members(ctx context.Context, channel string, limit, offset int) (out []store.Member, err error) {
	err = s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		for _, m := range gr.members {
			out = append(out, g.withProfile(*m))
		}
		return nil
	})
	slices.SortFunc(out, func(a, b store.Member) int {
		return cmp.Or(cmp.Compare(roleRank(a.Role), roleRank(b.Role)), a.JoinedAt.Compare(b.JoinedAt), cmp.Compare(a.User, b.User))
	})
	return page(out, limit, offset), err
}

func page[T any](all []T, limit, offset int) []T {
	if offset >= len(all) {
		return []T{}
	}
	all = all[offset:]
	if limit >= 0 && limit < len(all) {
		all = all[:limit]
	}
	return all
}

// AddMember implements store.Groups.
func (s *Store) AddMember(ctx context.Context, channel, user, role string, limits store.Limits, c store.Change) error {
	return s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		if err := g.add(gr, user, role, limits); err != nil {
			return err
		}
		g.record(channel, c)
		return nil
	})
}

// RemoveMember implements store.Groups.
func (s *Store) RemoveMember(ctx context.Context, channel, user string, ban bool, c store.Change) error {
	return s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		if gr.members[user] == nil && !ban {
			return store.ErrNotMember
		}
		delete(gr.members, user)
		if ban {
			gr.bans[user] = true
		}
		delete(g.inbox, inboxKey{user, channel})
		delete(g.mentions, inboxKey{user, channel})
		g.record(channel, c)
		return nil
	})
}

// Unban implements store.Groups.
func (s *Store) Unban(ctx context.Context, channel, user string, c store.Change) error {
	return s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		if !gr.bans[user] {
			return store.ErrNotFound
		}
		delete(gr.bans, user)
		g.record(channel, c)
		return nil
	})
}

// Banned implements store.Groups.
func (s *Store) Banned(ctx context.Context, channel, user string) (banned bool, err error) {
	err = s.withGroup(ctx, channel, func(_ *groupState, gr *memGroup) error {
		banned = gr.bans[user]
		return nil
	})
	if err == store.ErrNotFound {
		err = nil
	}
	return banned, err
}

func (s *Store) updateMember(ctx context.Context, channel, user string, c store.Change, fn func(m *store.Member)) error {
	return s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		m := gr.members[user]
		if m == nil {
			return store.ErrNotMember
		}
		fn(m)
		g.record(channel, c)
		return nil
	})
}

// SetRole implements store.Groups.
func (s *Store) SetRole(ctx context.Context, channel, user, role string, c store.Change) error {
	return s.updateMember(ctx, channel, user, c, func(m *store.Member) { m.Role = role })
}

// SetMutedUntil implements store.Groups.
func (s *Store) SetMutedUntil(ctx context.Context, channel, user string, until time.Time, c store.Change) error {
	return s.updateMember(ctx, channel, user, c, func(m *store.Member) { m.MutedUntil = until })
}

// TransferOwnership implements store.Groups.
func (s *Store) TransferOwnership(ctx context.Context, channel, from, to string, c store.Change) error {
	return s.withGroup(ctx, channel, func(g *groupState, gr *memGroup) error {
		if gr.g.Owner != from {
			return store.ErrPrecondition
		}
		if gr.members[to] == nil {
			return store.ErrNotMember
		}
		gr.members[to].Role = store.RoleOwner
		if m := gr.members[from]; m != nil {
			m.Role = store.RoleAdmin
		}
		gr.g.Owner = to
		g.record(channel, c)
		return nil
	})
}

// GroupsOf implements store.Groups.
func (s *Store) GroupsOf(ctx context.Context, user string) ([]string, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return nil, err
	}
	defer g.mu.Unlock()
	var out []string
	for ch, gr := range g.groups {
		if gr.members[user] != nil {
			out = append(out, ch)
		}
	}
	slices.Sort(out)
	return out, nil
}

// CreateInvite implements store.Groups.
func (s *Store) CreateInvite(ctx context.Context, inv store.Invite, c store.Change) error {
	return s.withGroup(ctx, inv.Channel, func(g *groupState, _ *memGroup) error {
		if g.invites[inv.Code] != nil {
			return store.ErrAlreadyExists
		}
		inv.Uses = 0
		g.invites[inv.Code] = &inv
		g.record(inv.Channel, c)
		return nil
	})
}

// UseInvite implements store.Groups.
func (s *Store) UseInvite(ctx context.Context, code string) (store.Invite, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return store.Invite{}, err
	}
	defer g.mu.Unlock()
	inv := g.invites[code]
	if inv == nil || !inv.Expires.After(time.Now()) || (inv.MaxUses > 0 && inv.Uses >= inv.MaxUses) || g.groups[inv.Channel] == nil {
		return store.Invite{}, store.ErrInviteInvalid
	}
	inv.Uses++
	return *inv, nil
}

// Audit implements store.Groups.
func (s *Store) Audit(ctx context.Context, channel string, before int64, limit int) ([]store.AuditEntry, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return nil, err
	}
	defer g.mu.Unlock()
	out := []store.AuditEntry{}
	for i := len(g.audit) - 1; i >= 0 && len(out) < limit; i-- {
		if e := g.audit[i]; e.Channel == channel && (before <= 0 || e.ID < before) {
			out = append(out, e)
		}
	}
	return out, nil
}

// CountActions implements store.Groups.
func (s *Store) CountActions(ctx context.Context, actor, action string, since time.Time) (int, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return 0, err
	}
	defer g.mu.Unlock()
	n := 0
	for _, e := range g.audit {
		if e.Actor == actor && e.Action == action && !e.At.Before(since) {
			n++
		}
	}
	return n, nil
}

// Record implements store.Groups.
func (s *Store) Record(ctx context.Context, channel string, c store.Change) error {
	return s.withGroup(ctx, channel, func(g *groupState, _ *memGroup) error {
		g.record(channel, c)
		return nil
	})
}
