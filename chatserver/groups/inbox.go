package groups

// The inbox: every conversation a user is in (groups, and DMs once a
// message exists), kept current live through the user's personal channel;
// profiles; search.

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// event is what a user's personal channel carries about their inbox (a
// publication tagged type=inbox, never stored: a client reloads the inbox
// after a reconnect).
type event struct {
	// Type is "member" (membership changed), "message" (a new message in a
	// conversation), "read" (the user read on some device), "mute" (the user
	// muted or unmuted it on some device) or "settings" (an admin changed the
	// group's title, topic or rules).
	Type    string `json:"type"`
	Channel string `json:"channel"`
	// Event, for "member": added, left, removed, banned, deleted, role, muted, unmuted.
	Event  string    `json:"event,omitempty"`
	Role   string    `json:"role,omitempty"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Until  time.Time `json:"until,omitzero"`
	// Entry, for "message" and "read", is the conversation's inbox row as
	// the user now sees it (for "message" without the user's own counts,
	// which the client bumps: Unread+1, Mentions+1 when Mention).
	Entry   *store.InboxEntry `json:"entry,omitempty"`
	Mention bool              `json:"mention,omitempty"`
	// Settings, for "settings", are the group's new settings.
	Settings *store.GroupSettings `json:"settings,omitempty"`
	// Muted, for "mute", says whether the user muted the conversation (on
	// any device; the others follow).
	Muted *bool `json:"muted,omitempty"`
}

func (s *Service) notify(ctx context.Context, user string, ev event) {
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if err := s.fx.Notify(ctx, user, data); err != nil {
		s.log.Warn("inbox push", "user", user, "error", err)
	}
}

// conversation reports whether channel is one the inbox lists: a group, or
// a user-limited channel ("dm:#alice,bob") outside the personal namespace;
// participants are a DM's users.
func (s *Service) conversation(channel string) (participants []string, ok bool) {
	ns, err := s.authz.Namespace(channel)
	if err != nil || ns.Personal {
		return nil, false
	}
	if ns.Group {
		return nil, true
	}
	users, limited := auth.AllowedUsers(channel)
	if !limited || ns.History.Size == 0 {
		return nil, false
	}
	return users, true
}

// MaxPreview is how much of a message the inbox shows, in runes.
const MaxPreview = 140

// textOf is a message's text: the data itself when it is a JSON string, or
// its "text" field; and whom it mentions: its "mentions" array and the
// @names in the text.
func textOf(data []byte) (text string, mentions []string) {
	var str string
	if json.Unmarshal(data, &str) == nil {
		text = str
	} else {
		var obj struct {
			Text     string   `json:"text"`
			Mentions []string `json:"mentions"`
		}
		if json.Unmarshal(data, &obj) == nil {
			text, mentions = obj.Text, obj.Mentions
		}
	}
	for _, w := range strings.Fields(text) {
		if name, ok := strings.CutPrefix(w, "@"); ok {
			name = strings.TrimRightFunc(name, func(r rune) bool { return unicode.IsPunct(r) && r != '_' && r != '-' })
			if name != "" && !slices.Contains(mentions, name) {
				mentions = append(mentions, name)
			}
		}
	}
	if len(mentions) > 50 {
		mentions = mentions[:50]
	}
	return text, mentions
}

func preview(text string) string {
	if utf8.RuneCountInString(text) <= MaxPreview {
		return text
	}
	r := []rune(text)
	return string(r[:MaxPreview-1]) + "…"
}

// Published updates the inboxes and the search index after pub was stored
// in channel, and pushes the news to every member's personal channel. Edit
// and delete publications update the index only.
func (s *Service) Published(ctx context.Context, channel string, pub *message.Publication) {
	participants, ok := s.conversation(channel)
	if !ok || pub.Offset == 0 {
		return
	}
	switch pub.Tags["type"] {
	case "delete":
		if ref, err := parseOffset(pub.Tags["ref"]); err == nil {
			if err := s.st.Unindex(ctx, channel, ref); err != nil {
				s.log.Warn("unindex a deleted message", "channel", channel, "error", err)
			}
		}
		return
	case "edit":
		return // the original stays indexed: search finds it, the client shows the edit
	}
	text, mentions := textOf(pub.Data)
	a := store.Activity{Channel: channel, Offset: pub.Offset, Preview: preview(text), Text: text,
		Mentions: mentions, Participants: participants, Language: s.cfg.Language()}
	if pub.Info != nil {
		a.User = pub.Info.User
	}
	users, err := s.st.Touch(ctx, a)
	if err != nil {
		s.log.Warn("inbox update", "channel", channel, "error", err)
		return
	}
	entry := &store.InboxEntry{Channel: channel, LastOffset: pub.Offset, LastAt: time.UnixMilli(pub.Time).UTC(), LastUser: a.User, Preview: a.Preview}
	s.fanOutAsync(ctx, users, func(ctx context.Context, u string) {
		s.notify(ctx, u, event{Type: "message", Channel: channel, Entry: entry, Mention: u != a.User && slices.Contains(mentions, u)})
	})
}

func parseOffset(s string) (uint64, error) {
	var v uint64
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}

// Read pushes user's inbox row for channel to their personal channel
// after they read it, so their other devices clear the badge.
func (s *Service) Read(ctx context.Context, user, channel string) {
	if _, ok := s.conversation(channel); !ok {
		return
	}
	e, err := s.st.InboxEntry(ctx, user, channel)
	if err != nil {
		return // not in the inbox (a DM nobody wrote in yet)
	}
	s.notify(ctx, user, event{Type: "read", Channel: channel, Entry: &e})
}

// Connected keeps the profile of a connecting user's token.
func (s *Service) Connected(ctx context.Context, user, name, picture string) {
	if user == "" || (name == "" && picture == "") {
		return
	}
	if len(name) > 200 || len(picture) > 2048 || !utf8.ValidString(name) || !utf8.ValidString(picture) {
		return
	}
	p := store.Profile{User: user, Name: name, Picture: picture}
	s.profileMu.Lock()
	known := s.written[user] == p
	s.profileMu.Unlock()
	if known {
		return // written by this replica already: a reconnect storm writes nothing
	}
	if err := s.st.PutProfile(ctx, p); err != nil {
		s.log.Warn("keep profile", "user", user, "error", err)
		return
	}
	s.profileMu.Lock()
	if len(s.written) >= maxKnownProfiles {
		clear(s.written) // forgetting costs one idempotent write per user
	}
	s.written[user] = p
	s.profileMu.Unlock()
}

// maxKnownProfiles bounds the profiles a replica remembers having written.
const maxKnownProfiles = 100_000

func (s *Service) inbox(ctx context.Context, c Caller, data []byte) (any, error) {
	var req struct {
		Limit  int `json:"limit,omitempty"`
		Offset int `json:"offset,omitempty"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	p := pageReq{Limit: req.Limit, Offset: req.Offset}
	if err := p.check(); err != nil {
		return nil, err
	}
	if c.System {
		return nil, badRequest("the inbox is a user's")
	}
	entries, err := s.st.Inbox(ctx, c.User, p.Limit, p.Offset)
	if err != nil {
		return nil, err
	}
	if entries == nil {
		entries = []store.InboxEntry{}
	}
	s.titleDMs(ctx, c.User, entries)
	return map[string]any{"conversations": entries}, nil
}

// titleDMs names each DM of the inbox after the other participants.
func (s *Service) titleDMs(ctx context.Context, user string, entries []store.InboxEntry) {
	titles := make([]*string, len(entries))
	channels := make([]string, len(entries))
	for i := range entries {
		titles[i], channels[i] = &entries[i].Title, entries[i].Channel
	}
	s.nameDMs(ctx, user, channels, titles)
}

// nameDMs sets each untitled DM's title (titles[i] for channels[i]) to the
// other participants, by their profile names where known (their ids
// otherwise), with one profile lookup for all of them.
func (s *Service) nameDMs(ctx context.Context, user string, channels []string, titles []*string) {
	others := map[int][]string{}
	var ids []string
	for i, ch := range channels {
		users, limited := auth.AllowedUsers(ch)
		if *titles[i] != "" || !limited || s.IsGroup(ch) {
			continue
		}
		for _, u := range users {
			if u != user && !slices.Contains(others[i], u) {
				others[i] = append(others[i], u)
				if !slices.Contains(ids, u) {
					ids = append(ids, u)
				}
			}
		}
	}
	if len(ids) == 0 {
		return
	}
	names := map[string]string{}
	if ps, err := s.st.Profiles(ctx, ids); err == nil {
		for _, p := range ps {
			names[p.User] = p.Name
		}
	}
	for i, us := range others {
		title := make([]string, len(us))
		for j, u := range us {
			title[j] = u
			if n := names[u]; n != "" {
				title[j] = n
			}
		}
		*titles[i] = strings.Join(title, ", ")
	}
}

func (s *Service) muteConversation(ctx context.Context, c Caller, data []byte) (any, error) {
	var req struct {
		Channel string `json:"channel"`
		Muted   bool   `json:"muted"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if req.Channel == "" || c.System {
		return nil, badRequest("channel is required")
	}
	if err := s.st.SetMuted(ctx, c.User, req.Channel, req.Muted); err != nil {
		if err == store.ErrNotFound {
			return nil, badRequest("%q is not in your inbox", req.Channel)
		}
		return nil, err
	}
	s.notify(ctx, c.User, event{Type: "mute", Channel: req.Channel, Muted: &req.Muted})
	return map[string]bool{"muted": req.Muted}, nil
}

// MaxProfiles is how many users one profiles request may name.
const MaxProfiles = 100

func (s *Service) profiles(ctx context.Context, _ Caller, data []byte) (any, error) {
	var req struct {
		Users []string `json:"users"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if len(req.Users) == 0 || len(req.Users) > MaxProfiles {
		return nil, badRequest("users must name 1-%d users", MaxProfiles)
	}
	ps, err := s.st.Profiles(ctx, req.Users)
	if err != nil {
		return nil, err
	}
	if ps == nil {
		ps = []store.Profile{}
	}
	return map[string]any{"profiles": ps}, nil
}

// MaxQuery bounds a search query in bytes.
const MaxQuery = 256

func (s *Service) search(ctx context.Context, c Caller, data []byte) (any, error) {
	var req struct {
		Query   string `json:"query"`
		Channel string `json:"channel,omitempty"`
		Limit   int    `json:"limit,omitempty"`
		Offset  int    `json:"offset,omitempty"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	p := pageReq{Limit: req.Limit, Offset: req.Offset}
	if err := p.check(); err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.Query) == "" || len(req.Query) > MaxQuery || !utf8.ValidString(req.Query) {
		return nil, badRequest("query must be 1-%d bytes of UTF-8", MaxQuery)
	}
	if c.System {
		return nil, badRequest("search is a user's")
	}
	if !s.allowSearch(c.User) {
		return nil, ErrSearches
	}
	hits, err := s.st.Search(ctx, c.User, req.Query, s.cfg.Language(), req.Channel, p.Limit, p.Offset)
	if err != nil {
		return nil, err
	}
	if hits == nil {
		hits = []store.SearchHit{}
	}
	// A hit names its conversation as the inbox does, so a client can show
	// where it is without having loaded that part of the inbox.
	titles := make([]*string, len(hits))
	channels := make([]string, len(hits))
	for i := range hits {
		titles[i], channels[i] = &hits[i].Title, hits[i].Channel
	}
	s.nameDMs(ctx, c.User, channels, titles)
	return map[string]any{"hits": hits}, nil
}
