package memory

// Inboxes, profiles and search in memory (store.Groups).

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// Touch implements store.Groups.
func (s *Store) Touch(ctx context.Context, a store.Activity) ([]string, error) {
	if err := s.check(ctx, a.Channel); err != nil {
		return nil, err
	}
	if a.User != "" {
		if err := s.MarkRead(ctx, a.Channel, a.User, a.Offset); err != nil {
			return nil, err
		}
	}
	stored := s.hasPublication(a.Channel, a.Offset)
	g := s.gs()
	g.mu.Lock()
	defer g.mu.Unlock()
	if cv := g.convs[a.Channel]; cv == nil || cv.offset < a.Offset {
		g.convs[a.Channel] = &conversation{offset: a.Offset, at: time.Now(), user: a.User, preview: a.Preview}
	}
	for _, u := range a.Participants {
		if k := (inboxKey{u, a.Channel}); g.inbox[k] == nil {
			g.inbox[k] = &inboxRow{joinedAt: time.Now()}
		}
	}
	for _, u := range a.Mentions {
		if k := (inboxKey{u, a.Channel}); g.inbox[k] != nil && u != a.User && !slices.Contains(g.mentions[k], a.Offset) {
			g.mentions[k] = append(g.mentions[k], a.Offset)
		}
	}
	if a.Text != "" && a.Language != "" && stored {
		g.index = append(g.index, indexed{channel: a.Channel, offset: a.Offset, body: a.Text, words: words(a.Text)})
	}
	var users []string
	for k := range g.inbox {
		if k.channel == a.Channel {
			users = append(users, k.user)
		}
	}
	slices.Sort(users)
	return users, nil
}

func (s *Store) hasPublication(channel string, offset uint64) bool {
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.streams[channel]
	if st == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(st.pubs, offset, func(p *message.Publication, o uint64) int { return cmp.Compare(p.Offset, o) })
	return found
}

func words(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127)
	})
}

// Unindex implements store.Groups.
func (s *Store) Unindex(ctx context.Context, channel string, offset uint64) error {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return err
	}
	defer g.mu.Unlock()
	g.index = slices.DeleteFunc(g.index, func(x indexed) bool { return x.channel == channel && x.offset == offset })
	return nil
}

// inboxLocked lists user's rows (one channel when channel is set).
func (s *Store) inboxLocked(ctx context.Context, g *groupState, user, channel string) ([]store.InboxEntry, error) {
	var out []store.InboxEntry
	var joined []time.Time
	for k, row := range g.inbox {
		if k.user != user || (channel != "" && k.channel != channel) {
			continue
		}
		e := store.InboxEntry{Channel: k.channel, Muted: row.muted}
		if gr := g.groups[k.channel]; gr != nil {
			e.Title = gr.g.Title
		}
		at := row.joinedAt
		if cv := g.convs[k.channel]; cv != nil {
			e.LastOffset, e.LastAt, e.LastUser, e.Preview = cv.offset, cv.at, cv.user, cv.preview
			at = cv.at
		}
		out = append(out, e)
		joined = append(joined, at)
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(joined[b].Compare(joined[a]), cmp.Compare(out[a].Channel, out[b].Channel))
	})
	sorted := make([]store.InboxEntry, len(out))
	channels := make([]string, len(out))
	for i, j := range idx {
		sorted[i], channels[i] = out[j], out[j].Channel
	}
	states, err := s.ReadStates(ctx, user, channels)
	if err != nil {
		return nil, err
	}
	for i := range sorted {
		sorted[i].Unread = states[i].Unread
		for _, off := range g.mentions[inboxKey{user, sorted[i].Channel}] {
			if off > states[i].LastRead {
				sorted[i].Mentions++
			}
		}
	}
	return sorted, nil
}

// Inbox implements store.Groups.
func (s *Store) Inbox(ctx context.Context, user string, limit, offset int) ([]store.InboxEntry, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return nil, err
	}
	defer g.mu.Unlock()
	all, err := s.inboxLocked(ctx, g, user, "")
	return page(all, limit, offset), err
}

// InboxEntry implements store.Groups.
func (s *Store) InboxEntry(ctx context.Context, user, channel string) (store.InboxEntry, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return store.InboxEntry{}, err
	}
	defer g.mu.Unlock()
	all, err := s.inboxLocked(ctx, g, user, channel)
	if err != nil {
		return store.InboxEntry{}, err
	}
	if len(all) == 0 {
		return store.InboxEntry{}, store.ErrNotFound
	}
	return all[0], nil
}

// SetMuted implements store.Groups.
func (s *Store) SetMuted(ctx context.Context, user, channel string, muted bool) error {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return err
	}
	defer g.mu.Unlock()
	row := g.inbox[inboxKey{user, channel}]
	if row == nil {
		return store.ErrNotFound
	}
	row.muted = muted
	return nil
}

// PutProfile implements store.Groups.
func (s *Store) PutProfile(ctx context.Context, p store.Profile) error {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return err
	}
	defer g.mu.Unlock()
	g.profiles[p.User] = p
	return nil
}

// Profiles implements store.Groups.
func (s *Store) Profiles(ctx context.Context, users []string) ([]store.Profile, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return nil, err
	}
	defer g.mu.Unlock()
	out := []store.Profile{}
	for _, u := range users {
		if p, ok := g.profiles[u]; ok && !slices.ContainsFunc(out, func(q store.Profile) bool { return q.User == u }) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b store.Profile) int { return cmp.Compare(a.User, b.User) })
	return out, nil
}

// Search implements store.Groups: every word of the query must appear
// (no stemming; the language is PostgreSQL's business).
func (s *Store) Search(ctx context.Context, user, query, _, channel string, limit, offset int) ([]store.SearchHit, error) {
	g, err := s.lockGroups(ctx)
	if err != nil {
		return nil, err
	}
	want := words(query)
	var cands []indexed
	titles := map[string]string{}
	for i := len(g.index) - 1; i >= 0; i-- {
		x := g.index[i]
		if g.inbox[inboxKey{user, x.channel}] == nil || (channel != "" && x.channel != channel) || len(want) == 0 {
			continue
		}
		if !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(x.words, w) }) {
			cands = append(cands, x)
			if grp := g.groups[x.channel]; grp != nil {
				titles[x.channel] = grp.g.Title
			}
		}
	}
	g.mu.Unlock()
	var hits []store.SearchHit
	for _, x := range cands {
		pubs, _, err := s.History(ctx, x.channel, store.HistoryOptions{Since: &message.StreamPosition{Offset: x.offset - 1, Epoch: s.epochOf(x.channel)}, Limit: 1})
		if err != nil || len(pubs) == 0 || pubs[0].Offset != x.offset {
			continue // gone from history
		}
		h := store.SearchHit{Channel: x.channel, Offset: x.offset, Time: pubs[0].Time, Snippet: x.body, Title: titles[x.channel]}
		if pubs[0].Info != nil {
			h.User = pubs[0].Info.User
		}
		hits = append(hits, h)
	}
	slices.SortStableFunc(hits, func(a, b store.SearchHit) int { return cmp.Compare(b.Time, a.Time) })
	return page(hits, limit, offset), nil
}

func (s *Store) epochOf(channel string) string {
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return s.positionLocked(sh, channel).Epoch
}

// forget drops what belongs to a channel's lost history: mentions, the
// last message, the search index (RemoveHistory).
func (g *groupState) forget(channel string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.mentions {
		if k.channel == channel {
			delete(g.mentions, k)
		}
	}
	delete(g.convs, channel)
	g.index = slices.DeleteFunc(g.index, func(x indexed) bool { return x.channel == channel })
}
