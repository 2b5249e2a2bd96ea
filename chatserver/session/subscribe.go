package session

// Subscriptions: subscribe (with recovery and delta negotiation), the
// server-side personal channel, unsubscribe, and going live in order.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/groups"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/store"
)

// subscribeFlagRejectUnrecovered asks for error 112 instead of a subscribe
// that could not recover (centrifuge-go sends it with GetState).
const subscribeFlagRejectUnrecovered int64 = 2

// subscribeServerSide subscribes the connection to a channel the server chose
// (the personal channel) and returns the result for the connect reply; req
// is what the client sent for it in connect.subs (recover, epoch, offset),
// or nil. The subscription buffers what arrives until the connect reply is
// queued (goLiveLocked), so no publication overtakes the reply announcing it.
func (s *Session) subscribeServerSide(ctx context.Context, channel string, req *protocol.SubscribeRequest) (*subscription, *protocol.SubscribeResult, error) {
	ns, err := s.n.Authorizer().Namespace(channel)
	if err != nil {
		return nil, nil, err
	}
	sub := &subscription{ns: ns}
	s.mu.Lock()
	s.subs[channel] = sub
	info := s.clientInfoLocked(sub)
	s.mu.Unlock()
	fail := func(err error) (*subscription, *protocol.SubscribeResult, error) {
		s.mu.Lock()
		if s.subs[channel] == sub {
			delete(s.subs, channel)
		}
		s.mu.Unlock()
		s.dropSubscription(channel, sub, info)
		return nil, nil, err
	}
	if err := s.n.Subscribe(ctx, channel, s); err != nil {
		return fail(err)
	}
	if req == nil {
		req = &protocol.SubscribeRequest{}
	}
	res, err := s.streamResult(ctx, channel, ns, req.Recover, message.StreamPosition{Offset: req.Offset, Epoch: req.Epoch}, false)
	if err != nil {
		return fail(err)
	}
	return sub, res, nil
}

func (s *Session) subscribe(ctx context.Context, id uint32, req *protocol.SubscribeRequest) error {
	channel := req.Channel
	ns, err := s.n.Authorizer().Namespace(channel)
	if err != nil {
		return err
	}
	subj := s.subject()
	var (
		chanInfo  []byte
		tokenOK   bool
		expiresIn time.Duration
		expires   bool
	)
	if req.Token != "" {
		claims, err := s.n.Verifier().VerifySubscription(ctx, req.Token, subj.User, channel)
		if err != nil {
			if errors.Is(err, auth.ErrTokenExpired) {
				return codes.ErrTokenExpired
			}
			s.log.Info("invalid subscription token", "channel", channel, "error", err)
			return codes.ErrPermissionDenied
		}
		tokenOK, chanInfo = true, claims.Info
		expiresIn, expires = auth.ExpiresIn(claims.RegisteredClaims, time.Now())
	}
	if err := s.n.Authorizer().CanSubscribe(subj, channel, tokenOK); err != nil {
		return err
	}
	if req.Delta != "" && req.Delta != deltaFossil {
		return codes.ErrBadRequest // the only delta type there is
	}
	sub := &subscription{ns: ns, chanInfo: chanInfo, joinLeave: req.JoinLeave && ns.JoinLeave,
		delta: req.Delta == deltaFossil && slices.Contains(ns.AllowedDeltaTypes, deltaFossil)}
	if sub.delta {
		s.usedDelta.Store(true) // before the hub can deliver to sub
	}
	s.mu.Lock()
	if _, ok := s.subs[channel]; ok {
		s.mu.Unlock()
		return codes.ErrAlreadySubscribed
	}
	if limit := s.n.Config().Limits.SubscriptionsPerConnection; limit > 0 && len(s.subs) >= limit {
		s.mu.Unlock()
		return codes.ErrLimitExceeded
	}
	s.subs[channel] = sub
	info := s.clientInfoLocked(sub)
	s.mu.Unlock()

	fail := func(err error) error {
		s.mu.Lock()
		if s.subs[channel] == sub {
			delete(s.subs, channel)
		}
		s.mu.Unlock()
		s.dropSubscription(channel, sub, info)
		return err
	}
	// Membership is read after the subscription is registered: a removal
	// committed before this read is seen here, and one committed after it
	// sends its unsubscribe to a subscription that already exists.
	if err := s.n.Groups().Check(ctx, subj, channel, groups.OpRead); err != nil {
		return fail(err)
	}
	if err := s.n.Subscribe(ctx, channel, s); err != nil {
		return fail(err)
	}
	res, err := s.streamResult(ctx, channel, ns, req.Recover, message.StreamPosition{Offset: req.Offset, Epoch: req.Epoch}, req.Positioned)
	if err != nil {
		return fail(err)
	}
	if res.WasRecovering && !res.Recovered && req.Flag&subscribeFlagRejectUnrecovered != 0 {
		return fail(codes.ErrUnrecoverablePosition)
	}
	if sub.delta {
		res.Delta = true
		s.deltaMode(sub, res)
	}
	if ns.Presence || ns.JoinLeave {
		if err := s.n.Join(ctx, channel, ns, info); err != nil {
			s.log.Warn("join", "channel", channel, "error", err)
		} else {
			sub.joined = true
		}
	}
	if expires {
		res.Expires, res.Ttl = true, ttlSeconds(expiresIn)
		sub.expireTimer = time.AfterFunc(expiresIn+s.n.Config().Auth.CloseDelay(), func() { s.Disconnect(codes.DisconnectSubExpired) })
	}

	data, err := protocol.GetReplyEncoder(s.proto).Encode(&protocol.Reply{Id: id, Subscribe: res})
	if err != nil {
		_ = fail(err)
		return codes.DisconnectInappropriateProtocol
	}
	// Reply, then whatever arrived meanwhile and is newer than the reply's
	// position, then live: all under s.mu so nothing overtakes.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[channel] != sub {
		return nil // unsubscribed or closed meanwhile
	}
	s.enqueue(data, s.n.Metrics().OutReply)
	s.goLiveLocked(sub, res)
	return nil
}

// streamResult is a subscribe result's stream part: in a namespace with
// history the channel's position and, when the client asks to recover from
// since, what it missed (Recovered says it got all of it).
func (s *Session) streamResult(ctx context.Context, channel string, ns config.Namespace, recover bool, since message.StreamPosition, positioned bool) (*protocol.SubscribeResult, error) {
	res := &protocol.SubscribeResult{}
	if ns.History.Size == 0 {
		return res, nil
	}
	res.Recoverable = ns.Recovery
	res.Positioned = ns.Recovery || positioned
	var pos message.StreamPosition
	if recover && ns.Recovery {
		res.WasRecovering = true
		pubs, p, err := s.n.History(ctx, channel, store.HistoryOptions{Since: &since, Limit: ns.History.Size})
		switch {
		case errors.Is(err, store.ErrEpochMismatch):
			pos = p
		case err != nil:
			return nil, err
		default:
			pos = p
			res.Recovered = recovered(since.Offset, pubs, pos)
			if res.Recovered {
				res.Publications = s.wirePublications(pubs)
			}
		}
	} else {
		var err error
		if pos, err = s.n.SubscribedPosition(ctx, channel); err != nil {
			return nil, err
		}
	}
	res.Epoch, res.Offset = pos.Epoch, pos.Offset
	return res, nil
}

// deltaFossil is the one delta type of the protocol.
const deltaFossil = "fossil"

// deltaMode rewrites a delta subscription's recovered publications as the
// SDKs expect them (in full; data as a JSON string in the JSON protocol)
// and makes the last one the base of the first delta.
func (s *Session) deltaMode(sub *subscription, res *protocol.SubscribeResult) {
	out := res.Publications[:0]
	for _, p := range res.Publications {
		data := p.Data
		if s.proto == protocol.TypeJSON {
			quoted, err := json.Marshal(string(data))
			if err != nil || !utf8.Valid(data) {
				continue // cannot travel as a JSON string: skipped as binary is
			}
			data = quoted
		}
		out = append(out, &protocol.Publication{Data: data, Info: p.Info, Offset: p.Offset, Tags: p.Tags, Time: p.Time})
		sub.prev = p.Data
	}
	res.Publications = out
}

// goLiveLocked ends a subscription's setup once its result is queued: the
// publications buffered meanwhile that the result did not cover follow it,
// then live ones. Called with s.mu held.
func (s *Session) goLiveLocked(sub *subscription, res *protocol.SubscribeResult) {
	hist := sub.ns.History.Size > 0
	for i, d := range sub.buffer {
		if off := sub.bufferOffs[i]; off == 0 || off > res.Offset || !hist {
			if delta := sub.bufferDeltas[i]; delta != nil {
				s.sendDeltaLocked(sub, delta)
				continue
			}
			s.enqueue(d, s.n.Metrics().OutPush)
		}
	}
	sub.buffer, sub.bufferOffs, sub.bufferDeltas, sub.bufferBytes = nil, nil, nil, 0
	if hist {
		sub.skipUpTo = res.Offset
	}
	sub.live = true
}

// wirePublications converts stored publications for this client: a JSON
// client does not get those whose data is binary (see config.Namespace.AllowBinary).
func (s *Session) wirePublications(pubs []*message.Publication) []*protocol.Publication {
	out := make([]*protocol.Publication, 0, len(pubs))
	for _, p := range pubs {
		if s.proto == protocol.TypeJSON && !node.JSONCarries(p) {
			continue
		}
		out = append(out, node.ToProtoPublication(p))
	}
	return out
}

// recovered reports whether pubs continue the client's position without a gap
// up to the stream's top.
func recovered(from uint64, pubs []*message.Publication, top message.StreamPosition) bool {
	next := from + 1
	for _, p := range pubs {
		if p.Offset != next {
			return false
		}
		next++
	}
	return next-1 == top.Offset
}

func (s *Session) unsubscribe(_ context.Context, req *protocol.UnsubscribeRequest) (*protocol.Reply, error) {
	s.mu.Lock()
	sub := s.subs[req.Channel]
	delete(s.subs, req.Channel)
	var info message.ClientInfo
	if sub != nil {
		info = s.clientInfoLocked(sub)
	}
	s.mu.Unlock()
	if sub != nil {
		s.dropSubscription(req.Channel, sub, info)
	}
	return &protocol.Reply{Unsubscribe: &protocol.UnsubscribeResult{}}, nil
}
