package auth

import (
	"slices"
	"strings"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
)

// Subject is who asks: the connection's user and what its token granted.
type Subject struct {
	User      string
	Anonymous bool
	// Grants are channels or "ns:*" patterns from the connection token.
	Grants []string
}

// Authorizer applies the per-namespace rules of the config. It returns
// protocol errors (codes.Err*) so the session can reply with them directly.
type Authorizer struct {
	namespaces map[string]config.Namespace
	personal   string
}

// NewAuthorizer indexes the config's namespaces.
func NewAuthorizer(cfg config.Config) *Authorizer {
	a := &Authorizer{namespaces: map[string]config.Namespace{}}
	for _, ns := range cfg.Namespaces {
		a.namespaces[ns.Name] = ns
		if ns.Personal && a.personal == "" {
			a.personal = ns.Name
		}
	}
	return a
}

// MaxChannelLength bounds channel names.
const MaxChannelLength = 255

// Namespace returns the config of the channel's namespace.
func (a *Authorizer) Namespace(channel string) (config.Namespace, error) {
	if channel == "" || len(channel) > MaxChannelLength {
		return config.Namespace{}, codes.ErrBadRequest
	}
	name := ""
	if i := strings.IndexByte(channel, ':'); i >= 0 {
		name = channel[:i]
	}
	ns, ok := a.namespaces[name]
	if !ok {
		return config.Namespace{}, codes.ErrUnknownChannel
	}
	return ns, nil
}

// PersonalChannel returns the user's personal channel, or "" when no namespace
// is personal or the user is anonymous.
func (a *Authorizer) PersonalChannel(user string) string {
	if a.personal == "" || user == "" {
		return ""
	}
	return a.personal + ":#" + user
}

// AllowedUsers returns the users a user-limited channel ("dm:#alice,bob") is
// limited to, and false for an ordinary channel.
func AllowedUsers(channel string) ([]string, bool) {
	i := strings.IndexByte(channel, '#')
	if i < 0 {
		return nil, false
	}
	return strings.Split(channel[i+1:], ","), true
}

// userLimited reports whether the channel is limited to users and whether
// user is one of them.
func userLimited(channel, user string) (limited, member bool) {
	users, ok := AllowedUsers(channel)
	if !ok {
		return false, false
	}
	return true, user != "" && slices.Contains(users, user)
}

func granted(grants []string, channel string) bool {
	for _, g := range grants {
		if g == channel {
			return true
		}
		if strings.HasSuffix(g, ":*") && strings.HasPrefix(channel, g[:len(g)-1]) {
			return true
		}
	}
	return false
}

// CanSubscribe decides a subscribe. tokenOK says a valid subscription token for
// this user and channel came with the request.
func (a *Authorizer) CanSubscribe(s Subject, channel string, tokenOK bool) error {
	ns, err := a.Namespace(channel)
	if err != nil {
		return err
	}
	if limited, member := userLimited(channel, s.User); limited && (!member || s.Anonymous) {
		return codes.ErrPermissionDenied
	}
	// A user-limited channel's members pass the namespace's rules like
	// anyone: "#" in a name is no way around allowSubscribe: token.
	if s.Anonymous && !ns.AllowAnonymous {
		return codes.ErrPermissionDenied
	}
	if tokenOK {
		return nil
	}
	if ns.AllowSubscribe == "token" && !granted(s.Grants, channel) {
		return codes.ErrPermissionDenied
	}
	return nil
}

// CanPublish decides a client publish; subscribed says the connection is
// subscribed to the channel.
func (a *Authorizer) CanPublish(s Subject, channel string, subscribed bool) error {
	ns, err := a.Namespace(channel)
	if err != nil {
		return err
	}
	if limited, member := userLimited(channel, s.User); limited && (!member || s.Anonymous) {
		return codes.ErrPermissionDenied
	}
	if s.Anonymous && !(ns.AllowAnonymous && ns.AllowAnonymousPublish) {
		return codes.ErrPermissionDenied
	}
	switch ns.AllowPublish {
	case config.PublishNone:
		return codes.ErrPermissionDenied
	case config.PublishAuthenticated:
		if s.Anonymous && !subscribed {
			return codes.ErrPermissionDenied // anonymous publishers publish as subscribers do
		}
		return nil
	default:
		if !subscribed {
			return codes.ErrPermissionDenied
		}
		return nil
	}
}

// CanRead is the permission every read path shares (history, presence,
// unread counts, receipts): the caller is subscribed, or could subscribe
// without a subscription token. A DM between two others, another user's
// personal channel or a token-only channel without a grant reveals nothing.
func (a *Authorizer) CanRead(s Subject, channel string, subscribed bool) (config.Namespace, error) {
	ns, err := a.Namespace(channel)
	if err != nil {
		return ns, err
	}
	if limited, member := userLimited(channel, s.User); limited && (!member || s.Anonymous) {
		// Checked even when subscribed: a user-limited channel's name is its only grant.
		return ns, codes.ErrPermissionDenied
	}
	if subscribed {
		return ns, nil
	}
	return ns, a.CanSubscribe(s, channel, false)
}

// canRead applies CanRead, then a namespace's allowHistory/allowPresence
// rule: "subscribers" (default) or "authenticated".
func (a *Authorizer) canRead(s Subject, channel string, rule string, subscribed bool) error {
	if _, err := a.CanRead(s, channel, subscribed); err != nil {
		return err
	}
	if subscribed {
		return nil
	}
	if rule == config.PublishAuthenticated && !s.Anonymous {
		return nil
	}
	return codes.ErrPermissionDenied
}

// CanHistory decides a history read.
func (a *Authorizer) CanHistory(s Subject, channel string, subscribed bool) (config.Namespace, error) {
	ns, err := a.Namespace(channel)
	if err != nil {
		return ns, err
	}
	if ns.History.Size == 0 {
		return ns, codes.ErrNotAvailable
	}
	return ns, a.canRead(s, channel, ns.AllowHistory, subscribed)
}

// CanPresence decides a presence or presence_stats read.
func (a *Authorizer) CanPresence(s Subject, channel string, subscribed bool) error {
	ns, err := a.Namespace(channel)
	if err != nil {
		return err
	}
	if !ns.Presence {
		return codes.ErrNotAvailable
	}
	if s.Anonymous && !(ns.AllowAnonymous && ns.AllowAnonymousPresence) {
		return codes.ErrPermissionDenied
	}
	return a.canRead(s, channel, ns.AllowPresence, subscribed)
}
