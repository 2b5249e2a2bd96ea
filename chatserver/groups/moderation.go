package groups

// Moderation: bans, mutes and the audit log. Deleting another member's
// message is the chat "delete" RPC, which asks CanModerate.

import (
	"context"
	"encoding/json"
	"time"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/store"
)

func (s *Service) ban(ctx context.Context, c Caller, data []byte) (any, error) {
	var req userReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if err := checkUser(req.User); err != nil {
		return nil, err
	}
	// A non-member may be banned ahead (a known spammer); a member only by
	// someone above them.
	if _, err := s.st.Member(ctx, req.Channel, req.User); err == nil {
		if err := s.outranks(ctx, c, req.Channel, req.User); err != nil {
			return nil, err
		}
	} else if _, err := s.atLeast(ctx, c, req.Channel, store.RoleAdmin); err != nil {
		return nil, err
	}
	if err := s.st.RemoveMember(ctx, req.Channel, req.User, true, store.Change{Actor: c.actor(), Action: "ban", Target: req.User, Detail: reasonDetail(req.Reason)}); err != nil {
		return nil, err
	}
	s.cutOff(ctx, req.User, req.Channel, codes.UnsubscribeBanned, "banned from the group", event{Type: "member", Channel: req.Channel, Event: "banned", By: c.actor(), Reason: req.Reason})
	return map[string]string{}, nil
}

func (s *Service) unban(ctx context.Context, c Caller, data []byte) (any, error) {
	var req userReq
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	if _, err := s.atLeast(ctx, c, req.Channel, store.RoleAdmin); err != nil {
		return nil, err
	}
	if err := s.st.Unban(ctx, req.Channel, req.User, store.Change{Actor: c.actor(), Action: "unban", Target: req.User}); err != nil {
		if err == store.ErrNotFound {
			return nil, badRequest("%q is not banned", req.User)
		}
		return nil, err
	}
	return map[string]string{}, nil
}

func (s *Service) mute(ctx context.Context, c Caller, data []byte) (any, error) {
	var req struct {
		Channel string `json:"channel"`
		User    string `json:"user"`
		// Seconds the member may not post; 0 lifts a mute.
		Duration int    `json:"duration"`
		Reason   string `json:"reason,omitempty"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	d := time.Duration(req.Duration) * time.Second
	if req.Duration < 0 || d > s.cfg.MaxMute() {
		return nil, badRequest("duration must be 0-%d seconds", int(s.cfg.MaxMute()/time.Second))
	}
	if err := s.outranks(ctx, c, req.Channel, req.User); err != nil {
		return nil, err
	}
	var until time.Time
	action := "unmute"
	if d > 0 {
		until, action = s.now().Add(d).UTC().Truncate(time.Millisecond), "mute"
	}
	detail, _ := json.Marshal(map[string]any{"until": until, "reason": req.Reason})
	if err := s.st.SetMutedUntil(ctx, req.Channel, req.User, until, store.Change{Actor: c.actor(), Action: action, Target: req.User, Detail: detail}); err != nil {
		return nil, err
	}
	s.notify(ctx, req.User, event{Type: "member", Channel: req.Channel, Event: action + "d", By: c.actor(), Until: until, Reason: req.Reason})
	return map[string]any{"muted_until": until}, nil
}

func (s *Service) audit(ctx context.Context, c Caller, data []byte) (any, error) {
	var req struct {
		Channel string `json:"channel"`
		Before  int64  `json:"before,omitempty"`
		Limit   int    `json:"limit,omitempty"`
	}
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := s.groupChannel(req.Channel); err != nil {
		return nil, err
	}
	p := pageReq{Limit: req.Limit}
	if err := p.check(); err != nil || req.Before < 0 {
		return nil, badRequest("limit must be 0-%d and before not negative", MaxPage)
	}
	if _, err := s.atLeast(ctx, c, req.Channel, store.RoleAdmin); err != nil {
		return nil, err
	}
	entries, err := s.st.Audit(ctx, req.Channel, req.Before, p.Limit)
	if err != nil {
		return nil, err
	}
	if entries == nil {
		entries = []store.AuditEntry{}
	}
	return map[string]any{"entries": entries}, nil
}

// RecordDelete notes in the audit log that a moderator deleted another
// member's message (the chat "delete" RPC asks CanModerate first).
func (s *Service) RecordDelete(ctx context.Context, moderator, channel, author string, offset uint64) {
	detail, _ := json.Marshal(map[string]uint64{"offset": offset})
	if err := s.st.Record(ctx, channel, store.Change{Actor: moderator, Action: "delete_message", Target: author, Detail: detail}); err != nil {
		s.log.Warn("audit a moderator's delete", "channel", channel, "error", err)
	}
}
