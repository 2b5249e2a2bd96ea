package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Roles of a group member, highest first.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Who may invite or post in a group (GroupSettings).
const (
	AllowMembers = "members"
	AllowAdmins  = "admins"
)

// Errors of the Groups methods; the groups package turns them into protocol errors.
var (
	ErrNotFound      = errors.New("not found")
	ErrNotMember     = errors.New("not a member")
	ErrAlreadyMember = errors.New("already a member")
	ErrBanned        = errors.New("banned")
	ErrGroupFull     = errors.New("group is full")
	ErrTooManyGroups = errors.New("user is in too many groups")
	ErrInviteInvalid = errors.New("invite code unknown, expired or used up")
	ErrAlreadyExists = errors.New("already exists")
	ErrPrecondition  = errors.New("membership changed meanwhile")
)

// GroupSettings are what admins may change.
type GroupSettings struct {
	Title string `json:"title"`
	Topic string `json:"topic"`
	// WhoInvites and WhoPosts are AllowMembers or AllowAdmins.
	WhoInvites string `json:"who_invites"`
	WhoPosts   string `json:"who_posts"`
}

// Group is a group channel and its settings.
type Group struct {
	Channel string `json:"channel"`
	GroupSettings
	Owner     string    `json:"owner"`
	Members   int       `json:"members"`
	CreatedAt time.Time `json:"created_at"`
}

// Member is one member of a group.
type Member struct {
	User     string    `json:"user"`
	Role     string    `json:"role"`
	JoinedAt time.Time `json:"joined_at"`
	// MutedUntil, when in the future, bars the member from posting.
	MutedUntil time.Time `json:"muted_until,omitzero"`
	// Name and Picture are the member's profile, when known.
	Name    string `json:"name,omitempty"`
	Picture string `json:"picture,omitempty"`
}

// Muted reports whether the member may not post at now.
func (m Member) Muted(now time.Time) bool { return m.MutedUntil.After(now) }

// Change is who did what, recorded in the group's audit log in the same
// transaction as the change itself.
type Change struct {
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Target string          `json:"target,omitempty"`
	Detail json.RawMessage `json:"detail,omitempty"`
}

// AuditEntry is one recorded Change.
type AuditEntry struct {
	ID      int64  `json:"id"`
	Channel string `json:"channel"`
	Change
	At time.Time `json:"at"`
}

// Limits bound a membership change.
type Limits struct {
	MembersPerGroup int
	GroupsPerUser   int
}

// Invite is a join code for a group.
type Invite struct {
	Code    string    `json:"code"`
	Channel string    `json:"channel"`
	By      string    `json:"by"`
	Expires time.Time `json:"expires"`
	// MaxUses 0 means unlimited until it expires.
	MaxUses int `json:"max_uses"`
	Uses    int `json:"uses"`
}

// Profile is a user's display name and picture, from their token's claims.
type Profile struct {
	User    string `json:"user"`
	Name    string `json:"name,omitempty"`
	Picture string `json:"picture,omitempty"`
}

// Activity is a stored publication as the inbox and search see it.
type Activity struct {
	Channel string
	Offset  uint64
	User    string
	// Preview is the start of the message's text; Text is all of it (indexed
	// for search when the namespace is searchable, may be empty).
	Preview string
	Text    string
	// Mentions are the users the message names; only members are kept.
	Mentions []string
	// Participants, for a DM, are the users who get it in their inbox even
	// before they have a row (a DM's first message creates both rows).
	Participants []string
	// Language is the text search configuration Text is indexed with.
	Language string
}

// InboxEntry is one conversation in a user's inbox.
type InboxEntry struct {
	Channel    string    `json:"channel"`
	Title      string    `json:"title,omitempty"`
	LastOffset uint64    `json:"last_offset"`
	LastAt     time.Time `json:"last_at,omitzero"`
	LastUser   string    `json:"last_user,omitempty"`
	Preview    string    `json:"preview,omitempty"`
	Unread     uint64    `json:"unread"`
	Mentions   int       `json:"mentions"`
	Muted      bool      `json:"muted,omitempty"`
}

// SearchHit is one message found by Search.
type SearchHit struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	User    string `json:"user,omitempty"`
	// Time is when it was published (Unix milliseconds).
	Time    int64  `json:"time"`
	Snippet string `json:"snippet"`
	// Title is the group's title (the groups service names DMs after their
	// participants), as the inbox shows it.
	Title string `json:"title,omitempty"`
}

// Groups is where groups, their members, bans, invites and audit log, the
// users' inboxes, profiles and the search index live.
//
// Contract:
//   - Every mutating method records its Change in the group's audit log in
//     the same transaction; a failed call records nothing.
//   - AddMember refuses a banned user (ErrBanned), a member (ErrAlreadyMember),
//     a full group (ErrGroupFull) or a user in GroupsPerUser groups
//     (ErrTooManyGroups); concurrent adds never exceed the limits.
//   - A group member has an inbox row for the group; a DM's participants get
//     theirs with the DM's first Touch. Removing a member removes the row.
//   - Unread counts come from the read receipts (Store.MarkRead); mentions
//     are those above the user's receipt.
//   - Search finds only publications still in history, in channels where the
//     user has an inbox row.
type Groups interface {
	CreateGroup(ctx context.Context, g Group, limits Limits, c Change) error
	Group(ctx context.Context, channel string) (Group, error)
	UpdateGroup(ctx context.Context, channel string, s GroupSettings, c Change) error
	// DeleteGroup removes the group and returns who its members were.
	DeleteGroup(ctx context.Context, channel string, c Change) ([]string, error)

	Member(ctx context.Context, channel, user string) (Member, error)
	// Members lists members, owner and admins first, then by join time.
	Members(ctx context.Context, channel string, limit, offset int) ([]Member, error)
	AddMember(ctx context.Context, channel, user, role string, limits Limits, c Change) error
	// RemoveMember removes user; ban also bars them from rejoining.
	RemoveMember(ctx context.Context, channel, user string, ban bool, c Change) error
	Unban(ctx context.Context, channel, user string, c Change) error
	Banned(ctx context.Context, channel, user string) (bool, error)
	SetRole(ctx context.Context, channel, user, role string, c Change) error
	// TransferOwnership makes to (a member) the owner and from (the owner) an
	// admin, or fails with ErrPrecondition when from is not the owner.
	TransferOwnership(ctx context.Context, channel, from, to string, c Change) error
	SetMutedUntil(ctx context.Context, channel, user string, until time.Time, c Change) error
	// GroupsOf lists the group channels user belongs to.
	GroupsOf(ctx context.Context, user string) ([]string, error)

	CreateInvite(ctx context.Context, inv Invite, c Change) error
	// UseInvite counts one use of code and returns its invite.
	UseInvite(ctx context.Context, code string) (Invite, error)
	// Audit lists a group's entries newest first, those with ID below before
	// (0: from the newest).
	Audit(ctx context.Context, channel string, before int64, limit int) ([]AuditEntry, error)
	// Record adds an entry to a group's audit log for a change made
	// elsewhere (a moderator deleting a message is a publication).
	Record(ctx context.Context, channel string, c Change) error
	// CountActions counts actor's entries with action since then, in every group.
	CountActions(ctx context.Context, actor, action string, since time.Time) (int, error)

	// Touch records a stored publication: the conversation's last message,
	// the author's read receipt, mentions, DM inbox rows and the search
	// index. It returns the users whose inbox holds the channel.
	Touch(ctx context.Context, a Activity) ([]string, error)
	// Unindex drops a publication from the search index (a deleted message).
	Unindex(ctx context.Context, channel string, offset uint64) error
	Inbox(ctx context.Context, user string, limit, offset int) ([]InboxEntry, error)
	// InboxEntry is one row of user's inbox (ErrNotFound when absent).
	InboxEntry(ctx context.Context, user, channel string) (InboxEntry, error)
	SetMuted(ctx context.Context, user, channel string, muted bool) error

	PutProfile(ctx context.Context, p Profile) error
	Profiles(ctx context.Context, users []string) ([]Profile, error)

	Search(ctx context.Context, user, query, language, channel string, limit, offset int) ([]SearchHit, error)
}
