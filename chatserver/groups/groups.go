// Package groups is conversations that belong to people: groups with
// members and roles, moderation, each user's inbox, profiles and search. It
// holds the rules only: what is kept goes through store.Groups, and what a
// change does to live connections (unsubscribes, inbox pushes) through
// Effects, which the node implements. The session and the HTTP API both
// call it; it imports neither.
package groups

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/internal/bucket"
	"github.com/parley-chat/parley/chatserver/store"
)

// Effects is what group changes do beyond the store, on every replica.
type Effects interface {
	// Unsubscribe ends user's subscriptions to channel on every replica,
	// each with an unsubscribe push carrying code and reason.
	Unsubscribe(ctx context.Context, user, channel string, code uint32, reason string) error
	// Notify sends data to user's personal channel, live and not stored.
	Notify(ctx context.Context, user string, data []byte) error
	// Forget drops a deleted group's history, so a group made later under
	// the same id starts empty.
	Forget(ctx context.Context, channel string) error
}

// Caller is who asks: a connection's user, or the HTTP API (System), which
// acts with an owner's rights and is recorded as "api" in the audit log.
type Caller struct {
	User   string
	System bool
}

func (c Caller) actor() string {
	if c.System {
		return "api"
	}
	return c.User
}

// Service applies the rules. It is safe for concurrent use.
type Service struct {
	st    store.Groups
	authz *auth.Authorizer
	cfg   config.Groups
	fx    Effects
	log   *slog.Logger
	now   func() time.Time
	// groupNS are the group namespaces, the first the default for create.
	groupNS []string

	searchMu sync.Mutex
	searches map[string]*bucket.Bucket

	// written are the profiles this replica wrote (Connected).
	profileMu sync.Mutex
	written   map[string]store.Profile

	// slots and running are the asynchronous inbox fan-outs (fanout.go).
	slots   chan struct{}
	running sync.WaitGroup
}

// New builds the service for cfg's group namespaces.
func New(cfg config.Config, authz *auth.Authorizer, st store.Groups, fx Effects, log *slog.Logger) *Service {
	s := &Service{st: st, authz: authz, cfg: cfg.Groups, fx: fx, log: log, now: time.Now, searches: map[string]*bucket.Bucket{},
		slots: make(chan struct{}, fanOutsInFlight), written: map[string]store.Profile{}}
	for _, ns := range cfg.Namespaces {
		if ns.Group {
			s.groupNS = append(s.groupNS, ns.Name)
		}
	}
	return s
}

// Errors every caller may get; the messages say what to do.
var (
	ErrUnknownGroup  = &codes.Error{Code: codes.ErrUnknownChannel.Code, Message: "unknown group"}
	ErrNotMember     = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: not a member of this group"}
	ErrNotAdmin      = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: admins only"}
	ErrNotOwner      = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: the owner only"}
	ErrBanned        = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: banned from this group"}
	ErrOutranked     = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: the target's role is not below yours"}
	ErrAdminsPost    = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: only admins post in this group"}
	ErrAdminsInvite  = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: only admins invite to this group"}
	ErrGroupFull     = &codes.Error{Code: codes.ErrLimitExceeded.Code, Message: "limit exceeded: the group has its maximum of members"}
	ErrTooManyGroups = &codes.Error{Code: codes.ErrLimitExceeded.Code, Message: "limit exceeded: the user is in the maximum number of groups"}
	ErrInvites       = &codes.Error{Code: codes.ErrLimitExceeded.Code, Message: "limit exceeded: invites per hour"}
	ErrSearches      = &codes.Error{Code: codes.ErrTooManyRequests.Code, Message: "too many requests: searches per minute", Temporary: true}
	ErrAlreadyMember = &codes.Error{Code: codes.ErrBadRequest.Code, Message: "bad request: already a member"}
	ErrInvite        = &codes.Error{Code: codes.ErrBadRequest.Code, Message: "bad request: invite code unknown, expired or used up"}
	ErrOwnerLeaves   = &codes.Error{Code: codes.ErrBadRequest.Code, Message: "bad request: the owner must transfer ownership or delete the group"}
	ErrAnonymous     = &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: anonymous users have no groups"}
)

func badRequest(format string, args ...any) error {
	return &codes.Error{Code: codes.ErrBadRequest.Code, Message: "bad request: " + fmt.Sprintf(format, args...)}
}

// mapErr turns the store's errors into protocol errors.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return ErrUnknownGroup
	case errors.Is(err, store.ErrNotMember):
		return &codes.Error{Code: codes.ErrBadRequest.Code, Message: "bad request: not a member of this group"}
	case errors.Is(err, store.ErrAlreadyMember):
		return ErrAlreadyMember
	case errors.Is(err, store.ErrBanned):
		return ErrBanned
	case errors.Is(err, store.ErrGroupFull):
		return ErrGroupFull
	case errors.Is(err, store.ErrTooManyGroups):
		return ErrTooManyGroups
	case errors.Is(err, store.ErrInviteInvalid):
		return ErrInvite
	case errors.Is(err, store.ErrAlreadyExists):
		return badRequest("a group with this id exists")
	case errors.Is(err, store.ErrPrecondition):
		return ErrNotOwner
	}
	return err
}

// IsGroup reports whether channel is in a group namespace.
func (s *Service) IsGroup(channel string) bool {
	ns, err := s.authz.Namespace(channel)
	return err == nil && ns.Group
}

// Op is what a connection wants to do in a channel.
type Op int

const (
	// OpRead covers subscribe, history, presence, receipts and unread counts.
	OpRead Op = iota
	// OpPublish covers publish, edit, delete of one's own messages and typing.
	OpPublish
)

// Check decides a command in a group channel from membership: nil for a
// channel outside group namespaces (the namespace rules alone decide there).
// Called on every command, so a change of membership applies to the next one.
func (s *Service) Check(ctx context.Context, subj auth.Subject, channel string, op Op) error {
	if !s.IsGroup(channel) {
		return nil
	}
	if subj.Anonymous || subj.User == "" {
		return ErrNotMember
	}
	m, err := s.st.Member(ctx, channel, subj.User)
	if errors.Is(err, store.ErrNotMember) {
		return ErrNotMember
	}
	if err != nil {
		return fmt.Errorf("membership of %q: %w", channel, err)
	}
	if op == OpRead {
		return nil
	}
	if m.Muted(s.now()) {
		return &codes.Error{Code: codes.ErrPermissionDenied.Code, Message: "permission denied: muted until " + m.MutedUntil.UTC().Format(time.RFC3339)}
	}
	if m.Role == store.RoleMember {
		g, err := s.st.Group(ctx, channel)
		if err != nil {
			return mapErr(err)
		}
		if g.WhoPosts == store.AllowAdmins {
			return ErrAdminsPost
		}
	}
	return nil
}

// Readable keeps the channels whose group membership lets subj read them
// (every channel outside group namespaces stays), with one store query
// however many groups are named.
func (s *Service) Readable(ctx context.Context, subj auth.Subject, channels []string) ([]string, error) {
	var mine map[string]bool
	out := channels[:0:0]
	for _, ch := range channels {
		if !s.IsGroup(ch) {
			out = append(out, ch)
			continue
		}
		if subj.Anonymous || subj.User == "" {
			continue
		}
		if mine == nil {
			gs, err := s.st.GroupsOf(ctx, subj.User)
			if err != nil {
				return nil, fmt.Errorf("groups of %q: %w", subj.User, err)
			}
			mine = make(map[string]bool, len(gs))
			for _, g := range gs {
				mine[g] = true
			}
		}
		if mine[ch] {
			out = append(out, ch)
		}
	}
	return out, nil
}

// CanModerate reports whether user may moderate channel (delete others'
// messages): an admin or the owner of the group.
func (s *Service) CanModerate(ctx context.Context, user, channel string) bool {
	if !s.IsGroup(channel) || user == "" {
		return false
	}
	m, err := s.st.Member(ctx, channel, user)
	return err == nil && rank(m.Role) <= rank(store.RoleAdmin)
}

// rank orders roles: lower is more.
func rank(role string) int {
	switch role {
	case store.RoleOwner:
		return 0
	case store.RoleAdmin:
		return 1
	case store.RoleMember:
		return 2
	}
	return 3
}

// role is the caller's role in the group: the API is an owner, a
// non-member gets ErrNotMember (ErrUnknownGroup when there is no group).
func (s *Service) role(ctx context.Context, c Caller, channel string) (string, error) {
	if c.System {
		if _, err := s.st.Group(ctx, channel); err != nil {
			return "", mapErr(err)
		}
		return store.RoleOwner, nil
	}
	m, err := s.st.Member(ctx, channel, c.User)
	if errors.Is(err, store.ErrNotMember) {
		if _, gerr := s.st.Group(ctx, channel); errors.Is(gerr, store.ErrNotFound) {
			return "", ErrUnknownGroup
		}
		return "", ErrNotMember
	}
	if err != nil {
		return "", err
	}
	return m.Role, nil
}

// atLeast fails unless the caller's role is want or higher.
func (s *Service) atLeast(ctx context.Context, c Caller, channel, want string) (string, error) {
	r, err := s.role(ctx, c, channel)
	if err != nil {
		return "", err
	}
	if rank(r) > rank(want) {
		if want == store.RoleOwner {
			return r, ErrNotOwner
		}
		return r, ErrNotAdmin
	}
	return r, nil
}

// groupChannel checks that channel names a group namespace's channel.
func (s *Service) groupChannel(channel string) error {
	if channel == "" {
		return badRequest("channel is required")
	}
	if !s.IsGroup(channel) {
		return badRequest("%q is not in a group namespace", channel)
	}
	return nil
}

// newID is a group id or an invite code: 16 random bytes in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validID is what a chosen group id may look like.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) < 0
}

// allowSearch spends one of user's searches on this replica.
func (s *Service) allowSearch(user string) bool {
	s.searchMu.Lock()
	defer s.searchMu.Unlock()
	b := s.searches[user]
	if b == nil {
		if len(s.searches) > 100_000 {
			// Full buckets are the same as new ones: drop them all rather
			// than grow without bound (a user loses at most a minute's wait).
			clear(s.searches)
		}
		per := float64(s.cfg.Searches())
		b = bucket.New(per/60, per)
		s.searches[user] = b
	}
	return b.Take(1)
}
