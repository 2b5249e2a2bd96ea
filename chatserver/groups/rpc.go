package groups

// The RPC methods of groups: each decodes its JSON request, checks the
// caller's role, changes the store (which records the change in the audit
// log) and then tells live connections.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/store"
)

// Method costs in the session's command budget units (docs/protocol.md).
const (
	costLookup = 2  // one or two reads
	costChange = 5  // a transaction and pushes
	costSearch = 10 // a text search
)

type method struct {
	cost float64
	run  func(s *Service, ctx context.Context, c Caller, data []byte) (any, error)
}

var methods = map[string]method{
	"group.create":   {costChange, (*Service).create},
	"group.get":      {costLookup, (*Service).get},
	"group.update":   {costChange, (*Service).update},
	"group.members":  {costLookup, (*Service).members},
	"group.add":      {costChange, (*Service).add},
	"group.invite":   {costChange, (*Service).invite},
	"group.join":     {costChange, (*Service).join},
	"group.leave":    {costChange, (*Service).leave},
	"group.remove":   {costChange, (*Service).remove},
	"group.ban":      {costChange, (*Service).ban},
	"group.unban":    {costChange, (*Service).unban},
	"group.mute":     {costChange, (*Service).mute},
	"group.role":     {costChange, (*Service).setRole},
	"group.transfer": {costChange, (*Service).transfer},
	"group.delete":   {costChange, (*Service).deleteGroup},
	"group.audit":    {costLookup, (*Service).audit},
	"inbox":          {costLookup, (*Service).inbox},
	"inbox.mute":     {costLookup, (*Service).muteConversation},
	"profiles":       {costLookup, (*Service).profiles},
	"search":         {costSearch, (*Service).search},
}

// Cost returns what method costs, and false when it is not a groups method.
func Cost(method string) (float64, bool) {
	m, ok := methods[method]
	return m.cost, ok
}

// Handles reports whether method is one of this package's RPCs.
func Handles(method string) bool {
	_, ok := methods[method]
	return ok
}

// RPC runs a groups method and returns its JSON result.
func (s *Service) RPC(ctx context.Context, c Caller, name string, data []byte) ([]byte, error) {
	m, ok := methods[name]
	if !ok {
		return nil, codes.ErrMethodNotFound
	}
	if !c.System && c.User == "" {
		return nil, ErrAnonymous
	}
	res, err := m.run(s, ctx, c, data)
	if err != nil {
		return nil, mapErr(err)
	}
	return json.Marshal(res)
}

// decode reads a request strictly: unknown keys are errors that name them.
func decode(data []byte, v any) error {
	if len(data) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

type channelReq struct {
	Channel string `json:"channel"`
}

type userReq struct {
	Channel string `json:"channel"`
	User    string `json:"user"`
	Reason  string `json:"reason,omitempty"`
}

// checkUser refuses what could never be a connection's user: a user id
// follows the token rules (auth.ValidateUserID).
func checkUser(user string) error {
	if user == "" {
		return badRequest("user is required")
	}
	if err := auth.ValidateUserID(user); err != nil {
		return badRequest("user: %v", err)
	}
	return nil
}

// MaxTitle and MaxTopic bound a group's texts (in bytes).
const (
	MaxTitle = 200
	MaxTopic = 1000
)

func checkSettings(set *store.GroupSettings) error {
	if !utf8.ValidString(set.Title) || len(set.Title) > MaxTitle {
		return badRequest("title must be UTF-8 of at most %d bytes", MaxTitle)
	}
	if !utf8.ValidString(set.Topic) || len(set.Topic) > MaxTopic {
		return badRequest("topic must be UTF-8 of at most %d bytes", MaxTopic)
	}
	for key, v := range map[string]*string{"who_invites": &set.WhoInvites, "who_posts": &set.WhoPosts} {
		switch *v {
		case "":
			*v = store.AllowMembers
		case store.AllowMembers, store.AllowAdmins:
		default:
			return badRequest("%s must be members or admins, got %q", key, *v)
		}
	}
	return nil
}

func (s *Service) limits() store.Limits {
	return store.Limits{MembersPerGroup: s.cfg.Members(), GroupsPerUser: s.cfg.PerUser()}
}

type createReq struct {
	store.GroupSettings
	// Namespace picks a group namespace (default: the first configured).
	Namespace string `json:"namespace,omitempty"`
	// ID names the group (default: random); the channel is "<namespace>:<id>".
	ID string `json:"id,omitempty"`
	// Owner is required from the HTTP API and ignored from a connection.
	Owner string `json:"owner,omitempty"`
	// Members are added at once (the HTTP API; a connection adds them as
	// invites, counted against invites per hour).
	Members []string `json:"members,omitempty"`
}

func (s *Service) create(ctx context.Context, c Caller, data []byte) (any, error) {
	var req createReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := checkSettings(&req.GroupSettings); err != nil {
		return nil, err
	}
	if len(s.groupNS) == 0 {
		return nil, &codes.Error{Code: codes.ErrNotAvailable.Code, Message: "not available: no group namespace is configured"}
	}
	ns := s.groupNS[0]
	if req.Namespace != "" {
		ns = req.Namespace
		if !s.IsGroup(ns + ":x") {
			return nil, badRequest("%q is not a group namespace", ns)
		}
	}
	id := req.ID
	if id == "" {
		id = newID()
	} else if !validID(id) {
		return nil, badRequest("id must be 1-64 of a-z, A-Z, 0-9, '-', '_', '.'")
	}
	owner := c.User
	if c.System {
		owner = req.Owner
	}
	if err := checkUser(owner); err != nil {
		return nil, err
	}
	g := store.Group{Channel: ns + ":" + id, GroupSettings: req.GroupSettings, Owner: owner}
	if err := s.st.CreateGroup(ctx, g, s.limits(), store.Change{Actor: c.actor(), Action: "create", Target: owner}); err != nil {
		return nil, err
	}
	s.notify(ctx, owner, event{Type: "member", Channel: g.Channel, Event: "added", Role: store.RoleOwner, By: c.actor()})
	for _, u := range req.Members {
		if u == owner {
			continue
		}
		if _, err := s.addUser(ctx, c, g.Channel, u); err != nil {
			return map[string]any{"channel": g.Channel, "error": fmt.Sprintf("adding %q: %v", u, mapErr(err))}, nil
		}
	}
	return map[string]string{"channel": g.Channel}, nil
}

func (s *Service) get(ctx context.Context, c Caller, data []byte) (any, error) {
	var req channelReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	role, err := s.role(ctx, c, req.Channel)
	if err != nil {
		return nil, err
	}
	g, err := s.st.Group(ctx, req.Channel)
	if err != nil {
		return nil, err
	}
	return map[string]any{"group": g, "role": role}, nil
}

type updateReq struct {
	Channel    string  `json:"channel"`
	Title      *string `json:"title,omitempty"`
	Topic      *string `json:"topic,omitempty"`
	WhoInvites *string `json:"who_invites,omitempty"`
	WhoPosts   *string `json:"who_posts,omitempty"`
}

func (s *Service) update(ctx context.Context, c Caller, data []byte) (any, error) {
	var req updateReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if _, err := s.atLeast(ctx, c, req.Channel, store.RoleAdmin); err != nil {
		return nil, err
	}
	g, err := s.st.Group(ctx, req.Channel)
	if err != nil {
		return nil, err
	}
	set := g.GroupSettings
	for dst, src := range map[*string]*string{&set.Title: req.Title, &set.Topic: req.Topic, &set.WhoInvites: req.WhoInvites, &set.WhoPosts: req.WhoPosts} {
		if src != nil {
			*dst = *src
		}
	}
	if err := checkSettings(&set); err != nil {
		return nil, err
	}
	detail, _ := json.Marshal(set)
	if err := s.st.UpdateGroup(ctx, req.Channel, set, store.Change{Actor: c.actor(), Action: "update", Detail: detail}); err != nil {
		return nil, err
	}
	if set != g.GroupSettings {
		s.announceSettings(ctx, req.Channel, set, c.actor())
	}
	return map[string]any{"settings": set}, nil
}

// announceSettings tells every member's devices the group's new settings
// (a rename shows in their inboxes at once), off the caller's path like the
// inbox pushes. Members are read page by page: a group holds at most
// groups.maxMembers.
func (s *Service) announceSettings(ctx context.Context, channel string, set store.GroupSettings, by string) {
	var users []string
	for offset := 0; ; offset += MaxPage {
		page, err := s.st.Members(ctx, channel, MaxPage, offset)
		if err != nil {
			s.log.Warn("announce group settings", "channel", channel, "error", err)
			return
		}
		for _, m := range page {
			users = append(users, m.User)
		}
		if len(page) < MaxPage {
			break
		}
	}
	ev := event{Type: "settings", Channel: channel, Settings: &set, By: by}
	s.fanOutAsync(ctx, users, func(ctx context.Context, u string) { s.notify(ctx, u, ev) })
}

type pageReq struct {
	Channel string `json:"channel"`
	Limit   int    `json:"limit,omitempty"`
	Offset  int    `json:"offset,omitempty"`
}

// Pages: DefaultPage entries unless the request asks for a limit, at most MaxPage.
const (
	DefaultPage = 50
	MaxPage     = 200
)

func (p *pageReq) check() error {
	if p.Limit < 0 || p.Limit > MaxPage || p.Offset < 0 || p.Offset > 1_000_000 {
		return badRequest("limit must be 0-%d and offset 0-1000000", MaxPage)
	}
	if p.Limit == 0 {
		p.Limit = DefaultPage
	}
	return nil
}

func (s *Service) members(ctx context.Context, c Caller, data []byte) (any, error) {
	var req pageReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := req.check(); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if _, err := s.role(ctx, c, req.Channel); err != nil {
		return nil, err
	}
	ms, err := s.st.Members(ctx, req.Channel, req.Limit, req.Offset)
	if err != nil {
		return nil, err
	}
	return map[string]any{"members": ms}, nil
}

// mayInvite checks the caller may bring people in: by the group's
// who_invites, and within invites per hour.
func (s *Service) mayInvite(ctx context.Context, c Caller, channel string) error {
	role, err := s.role(ctx, c, channel)
	if err != nil {
		return err
	}
	if rank(role) > rank(store.RoleAdmin) {
		g, err := s.st.Group(ctx, channel)
		if err != nil {
			return err
		}
		if g.WhoInvites == store.AllowAdmins {
			return ErrAdminsInvite
		}
	}
	if c.System {
		return nil
	}
	n, err := s.st.CountActions(ctx, c.User, "invite", s.now().Add(-time.Hour))
	if err != nil {
		return err
	}
	if n >= s.cfg.Invites() {
		return ErrInvites
	}
	return nil
}

func (s *Service) addUser(ctx context.Context, c Caller, channel, user string) (any, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	if err := s.mayInvite(ctx, c, channel); err != nil {
		return nil, err
	}
	// Recorded as "invite" so the per-hour count covers adds and codes alike.
	if err := s.st.AddMember(ctx, channel, user, store.RoleMember, s.limits(), store.Change{Actor: c.actor(), Action: "invite", Target: user}); err != nil {
		return nil, err
	}
	s.notify(ctx, user, event{Type: "member", Channel: channel, Event: "added", Role: store.RoleMember, By: c.actor()})
	return map[string]string{"channel": channel, "user": user}, nil
}

func (s *Service) add(ctx context.Context, c Caller, data []byte) (any, error) {
	var req userReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	return s.addUser(ctx, c, req.Channel, req.User)
}

type inviteReq struct {
	Channel string `json:"channel"`
	// TTL in seconds (default a day, at most 30 days); MaxUses 0 is unlimited.
	TTL     int `json:"ttl,omitempty"`
	MaxUses int `json:"max_uses,omitempty"`
}

// Invite code lifetimes.
const (
	DefaultInviteTTL = 24 * time.Hour
	MaxInviteTTL     = 30 * 24 * time.Hour
)

func (s *Service) invite(ctx context.Context, c Caller, data []byte) (any, error) {
	var req inviteReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	ttl := time.Duration(req.TTL) * time.Second
	if req.TTL < 0 || ttl > MaxInviteTTL || req.MaxUses < 0 || req.MaxUses > 100_000 {
		return nil, badRequest("ttl must be 0-%d seconds and max_uses 0-100000", int(MaxInviteTTL/time.Second))
	}
	if ttl == 0 {
		ttl = DefaultInviteTTL
	}
	if err := s.mayInvite(ctx, c, req.Channel); err != nil {
		return nil, err
	}
	inv := store.Invite{Code: newID(), Channel: req.Channel, By: c.actor(), Expires: s.now().Add(ttl), MaxUses: req.MaxUses}
	if err := s.st.CreateInvite(ctx, inv, store.Change{Actor: c.actor(), Action: "invite"}); err != nil {
		return nil, err
	}
	return map[string]any{"code": inv.Code, "channel": inv.Channel, "expires": inv.Expires.UTC()}, nil
}

func (s *Service) join(ctx context.Context, c Caller, data []byte) (any, error) {
	var req struct {
		Code string `json:"code"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if req.Code == "" || len(req.Code) > 64 || c.System {
		return nil, badRequest("code is required (and only users join)")
	}
	inv, err := s.st.UseInvite(ctx, req.Code)
	if err != nil {
		return nil, err
	}
	if err := s.st.AddMember(ctx, inv.Channel, c.User, store.RoleMember, s.limits(), store.Change{Actor: c.User, Action: "join", Target: c.User, Detail: json.RawMessage(`{"invited_by":` + quote(inv.By) + `}`)}); err != nil {
		return nil, err
	}
	s.notify(ctx, c.User, event{Type: "member", Channel: inv.Channel, Event: "added", Role: store.RoleMember, By: c.User})
	return map[string]string{"channel": inv.Channel}, nil
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (s *Service) leave(ctx context.Context, c Caller, data []byte) (any, error) {
	var req channelReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if c.System {
		return nil, badRequest("the API removes members with group.remove")
	}
	role, err := s.role(ctx, c, req.Channel)
	if err != nil {
		return nil, err
	}
	if role == store.RoleOwner {
		return nil, ErrOwnerLeaves
	}
	if err := s.st.RemoveMember(ctx, req.Channel, c.User, false, store.Change{Actor: c.User, Action: "leave", Target: c.User}); err != nil {
		return nil, err
	}
	s.cutOff(ctx, c.User, req.Channel, codes.UnsubscribeLeft, "left the group", event{Type: "member", Channel: req.Channel, Event: "left", By: c.User})
	return map[string]string{}, nil
}

// outranks fails unless the caller (an admin at least) is above the target.
func (s *Service) outranks(ctx context.Context, c Caller, channel, target string) error {
	role, err := s.atLeast(ctx, c, channel, store.RoleAdmin)
	if err != nil {
		return err
	}
	m, err := s.st.Member(ctx, channel, target)
	if err != nil {
		return err
	}
	if rank(m.Role) <= rank(role) {
		return ErrOutranked
	}
	return nil
}

// cutOff ends user's live subscriptions to channel everywhere and tells
// their inbox; failures are logged (the store already changed, and every
// later command is checked against it).
func (s *Service) cutOff(ctx context.Context, user, channel string, code uint32, reason string, ev event) {
	if err := s.fx.Unsubscribe(ctx, user, channel, code, reason); err != nil {
		s.log.Warn("unsubscribe removed member", "channel", channel, "user", user, "error", err)
	}
	s.notify(ctx, user, ev)
}

func (s *Service) remove(ctx context.Context, c Caller, data []byte) (any, error) {
	var req userReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if err := s.outranks(ctx, c, req.Channel, req.User); err != nil {
		return nil, err
	}
	if err := s.st.RemoveMember(ctx, req.Channel, req.User, false, store.Change{Actor: c.actor(), Action: "remove", Target: req.User, Detail: reasonDetail(req.Reason)}); err != nil {
		return nil, err
	}
	s.cutOff(ctx, req.User, req.Channel, codes.UnsubscribeRemoved, "removed from the group", event{Type: "member", Channel: req.Channel, Event: "removed", By: c.actor(), Reason: req.Reason})
	return map[string]string{}, nil
}

func reasonDetail(reason string) json.RawMessage {
	if reason == "" {
		return nil
	}
	return json.RawMessage(`{"reason":` + quote(reason) + `}`)
}

func (s *Service) setRole(ctx context.Context, c Caller, data []byte) (any, error) {
	var req struct {
		Channel string `json:"channel"`
		User    string `json:"user"`
		Role    string `json:"role"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if req.Role != store.RoleAdmin && req.Role != store.RoleMember {
		return nil, badRequest("role must be admin or member (ownership moves with group.transfer)")
	}
	if _, err := s.atLeast(ctx, c, req.Channel, store.RoleOwner); err != nil {
		return nil, err
	}
	m, err := s.st.Member(ctx, req.Channel, req.User)
	if err != nil {
		return nil, err
	}
	if m.Role == store.RoleOwner {
		return nil, badRequest("the owner's role changes with group.transfer")
	}
	if err := s.st.SetRole(ctx, req.Channel, req.User, req.Role, store.Change{Actor: c.actor(), Action: "role", Target: req.User, Detail: json.RawMessage(`{"role":` + quote(req.Role) + `}`)}); err != nil {
		return nil, err
	}
	s.notify(ctx, req.User, event{Type: "member", Channel: req.Channel, Event: "role", Role: req.Role, By: c.actor()})
	return map[string]string{"role": req.Role}, nil
}

func (s *Service) transfer(ctx context.Context, c Caller, data []byte) (any, error) {
	var req userReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if _, err := s.atLeast(ctx, c, req.Channel, store.RoleOwner); err != nil {
		return nil, err
	}
	g, err := s.st.Group(ctx, req.Channel)
	if err != nil {
		return nil, err
	}
	if g.Owner == req.User {
		return nil, badRequest("%q owns the group already", req.User)
	}
	if err := s.st.TransferOwnership(ctx, req.Channel, g.Owner, req.User, store.Change{Actor: c.actor(), Action: "transfer", Target: req.User}); err != nil {
		return nil, err
	}
	s.notify(ctx, req.User, event{Type: "member", Channel: req.Channel, Event: "role", Role: store.RoleOwner, By: c.actor()})
	s.notify(ctx, g.Owner, event{Type: "member", Channel: req.Channel, Event: "role", Role: store.RoleAdmin, By: c.actor()})
	return map[string]string{"owner": req.User}, nil
}

func (s *Service) deleteGroup(ctx context.Context, c Caller, data []byte) (any, error) {
	var req channelReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if _, err := s.atLeast(ctx, c, req.Channel, store.RoleOwner); err != nil {
		return nil, err
	}
	members, err := s.st.DeleteGroup(ctx, req.Channel, store.Change{Actor: c.actor(), Action: "delete"})
	if err != nil {
		return nil, err
	}
	if err := s.fx.Forget(ctx, req.Channel); err != nil {
		s.log.Warn("drop a deleted group's history", "channel", req.Channel, "error", err)
	}
	fanOut(members, func(u string) {
		s.cutOff(ctx, u, req.Channel, codes.UnsubscribeDeleted, "the group was deleted", event{Type: "member", Channel: req.Channel, Event: "deleted", By: c.actor()})
	})
	return map[string]int{"members": len(members)}, nil
}
