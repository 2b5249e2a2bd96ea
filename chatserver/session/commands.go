package session

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
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/store"
)

// Version is reported to clients in connect and refresh results.
const Version = "parley"

// subscribeFlagRejectUnrecovered asks for error 112 instead of a subscribe
// that could not recover (centrifuge-go sends it with GetState).
const subscribeFlagRejectUnrecovered int64 = 2

// tokenError maps a token verification failure: expired tokens get error 109
// (SDKs refresh and retry), anything else closes with "invalid token".
func (s *Session) tokenError(err error) error {
	if errors.Is(err, auth.ErrTokenExpired) {
		return codes.ErrTokenExpired
	}
	// The error says why (signature, audience, issuer) but never contains the token.
	s.log.Info("invalid token", "error", err)
	return codes.DisconnectInvalidToken
}

func ttlSeconds(d time.Duration) uint32 {
	if d < time.Second {
		return 1
	}
	return uint32(d / time.Second)
}

// connect authenticates the connection and queues its reply itself, so the
// server-side subscriptions it announces go live only after it.
func (s *Session) connect(ctx context.Context, id uint32, req *protocol.ConnectRequest) error {
	if s.n.ShuttingDown() {
		return codes.DisconnectShutdown
	}
	var (
		user      string
		anonymous bool
		info      []byte
		grants    []string
		expiresIn time.Duration
		expires   bool
	)
	if req.Token == "" {
		if !s.n.Config().Auth.AllowAnonymous {
			return codes.ErrUnauthorized
		}
		anonymous = true
	} else {
		claims, err := s.n.Verifier().VerifyConnection(ctx, req.Token)
		if err != nil {
			return s.tokenError(err)
		}
		user, info, grants = claims.Subject, claims.Info, claims.Channels
		anonymous = user == ""
		expiresIn, expires = auth.ExpiresIn(claims.RegisteredClaims, time.Now())
		if anonymous && !s.n.Config().Auth.AllowAnonymous {
			return codes.DisconnectInvalidToken
		}
	}
	if !anonymous {
		// This node first (no store call when it alone is over), then the cluster.
		if !s.n.UserConnectionsAllowed(user) {
			return codes.DisconnectConnectionLimit
		}
		admitted, err := s.n.AdmitConnection(ctx, message.ClientInfo{User: user, Client: s.id})
		if err != nil {
			s.log.Warn("connections per user across replicas", "error", err)
		}
		if !admitted {
			return codes.DisconnectConnectionLimit
		}
	}
	s.mu.Lock()
	s.user, s.anonymous, s.connInfo, s.grants = user, anonymous, info, grants
	if !anonymous {
		s.budgets.user = s.n.UserBudget(user)
	}
	s.state = stateConnected
	if expires {
		s.expireTimer = time.AfterFunc(expiresIn, s.expire)
	}
	s.timer.Stop()
	s.timer = time.AfterFunc(s.pingInterval, s.sendPing)
	s.mu.Unlock()
	s.n.Hub().AddConn(s)
	s.n.Metrics().Connections.Inc()
	s.log.Debug("connected", "user", user, "anonymous", anonymous)

	res := &protocol.ConnectResult{
		Client: s.id, Version: Version, Expires: expires, Node: s.n.ID(),
		Ping: ttlSeconds(s.pingInterval), Pong: true, Time: time.Now().UnixMilli(),
	}
	if expires {
		res.Ttl = ttlSeconds(expiresIn)
	}
	var serverSubs map[*subscription]*protocol.SubscribeResult
	if personal := s.n.Authorizer().PersonalChannel(user); personal != "" && !anonymous {
		sub, subRes, err := s.subscribeServerSide(ctx, personal, req.Subs[personal])
		if err != nil {
			s.log.Warn("personal channel subscribe", "channel", personal, "error", err)
		} else {
			res.Subs = map[string]*protocol.SubscribeResult{personal: subRes}
			serverSubs = map[*subscription]*protocol.SubscribeResult{sub: subRes}
		}
	}
	data, err := protocol.GetReplyEncoder(s.proto).Encode(&protocol.Reply{Id: id, Connect: res})
	if err != nil {
		return codes.DisconnectInappropriateProtocol
	}
	// The reply first, then what the server-side subscriptions buffered.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueue(data, s.n.Metrics().OutReply)
	for sub, subRes := range serverSubs {
		s.goLiveLocked(sub, subRes)
	}
	return nil
}

// expire closes a connection whose token expired without a refresh.
func (s *Session) expire() { s.Disconnect(codes.DisconnectExpired) }

// sendPing sends an application ping (an empty reply) and checks for the
// pong after PongTimeout.
func (s *Session) sendPing() {
	s.mu.Lock()
	if s.state != stateConnected {
		s.mu.Unlock()
		return
	}
	s.waitingPong = true
	s.timer = time.AfterFunc(s.pongTimeout, s.checkPong)
	s.mu.Unlock()
	data, _ := protocol.GetReplyEncoder(s.proto).Encode(&protocol.Reply{})
	s.enqueue(data, s.n.Metrics().OutPing)
	s.refreshPresence()
}

func (s *Session) checkPong() {
	s.mu.Lock()
	if s.state != stateConnected {
		s.mu.Unlock()
		return
	}
	if s.waitingPong {
		s.mu.Unlock()
		s.Disconnect(codes.DisconnectNoPong)
		return
	}
	s.timer = time.AfterFunc(s.pingInterval-s.pongTimeout, s.sendPing)
	s.mu.Unlock()
}

// refreshPresence keeps this connection's presence entries alive.
func (s *Session) refreshPresence() {
	s.mu.Lock()
	type entry struct {
		channel string
		info    message.ClientInfo
	}
	var entries []entry
	for ch, sub := range s.subs {
		if sub.joined {
			entries = append(entries, entry{ch, s.clientInfoLocked(sub)})
		}
	}
	conn := s.clientInfoLocked(nil)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if err := s.n.RefreshConnection(ctx, conn); err != nil {
		s.log.Warn("refresh connection count", "error", err)
	}
	for _, e := range entries {
		if err := s.n.RefreshPresence(ctx, e.channel, e.info); err != nil {
			s.log.Warn("refresh presence", "channel", e.channel, "error", err)
		}
	}
}

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
		sub.expireTimer = time.AfterFunc(expiresIn, func() { s.Disconnect(codes.DisconnectSubExpired) })
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
		if _, pos, err = s.n.History(ctx, channel, store.HistoryOptions{Limit: 0}); err != nil { // position only
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

func (s *Session) publish(ctx context.Context, req *protocol.PublishRequest) (*protocol.Reply, error) {
	subj := s.subject()
	if err := s.n.Authorizer().CanPublish(subj, req.Channel, s.subscribed(req.Channel)); err != nil {
		return nil, err
	}
	if !s.budgets.publish.Take(1) {
		return nil, codes.ErrTooManyRequests
	}
	s.mu.Lock()
	info := s.clientInfoLocked(s.subs[req.Channel])
	s.mu.Unlock()
	if _, err := s.n.Publish(ctx, req.Channel, req.Data, &info, node.PublishOptions{IdempotencyKey: req.Key}); err != nil {
		return nil, err
	}
	return &protocol.Reply{Publish: &protocol.PublishResult{}}, nil
}

func (s *Session) history(ctx context.Context, req *protocol.HistoryRequest) (*protocol.Reply, error) {
	ns, err := s.n.Authorizer().CanHistory(s.subject(), req.Channel, s.subscribed(req.Channel))
	if err != nil {
		return nil, err
	}
	limit := int(req.Limit)
	if limit < 0 || limit > ns.History.Size {
		limit = ns.History.Size
	}
	opts := store.HistoryOptions{Limit: limit, Reverse: req.Reverse}
	if req.Since != nil {
		opts.Since = &message.StreamPosition{Offset: req.Since.Offset, Epoch: req.Since.Epoch}
	}
	pubs, pos, err := s.n.History(ctx, req.Channel, opts)
	if err != nil {
		return nil, err
	}
	res := &protocol.HistoryResult{Epoch: pos.Epoch, Offset: pos.Offset, Publications: s.wirePublications(pubs)}
	return &protocol.Reply{History: res}, nil
}

func (s *Session) presence(ctx context.Context, req *protocol.PresenceRequest) (*protocol.Reply, error) {
	if err := s.n.Authorizer().CanPresence(s.subject(), req.Channel, s.subscribed(req.Channel)); err != nil {
		return nil, err
	}
	p, err := s.n.Presence(ctx, req.Channel)
	if err != nil {
		return nil, err
	}
	res := &protocol.PresenceResult{Presence: make(map[string]*protocol.ClientInfo, len(p))}
	for client, ci := range p {
		res.Presence[client] = node.ToProtoInfo(&ci)
	}
	return &protocol.Reply{Presence: res}, nil
}

func (s *Session) presenceStats(ctx context.Context, req *protocol.PresenceStatsRequest) (*protocol.Reply, error) {
	if err := s.n.Authorizer().CanPresence(s.subject(), req.Channel, s.subscribed(req.Channel)); err != nil {
		return nil, err
	}
	clients, users, err := s.n.PresenceStats(ctx, req.Channel)
	if err != nil {
		return nil, err
	}
	return &protocol.Reply{PresenceStats: &protocol.PresenceStatsResult{NumClients: uint32(clients), NumUsers: uint32(users)}}, nil
}

func (s *Session) refresh(ctx context.Context, req *protocol.RefreshRequest) (*protocol.Reply, error) {
	if req.Token == "" {
		return nil, codes.ErrBadRequest
	}
	claims, err := s.n.Verifier().VerifyConnection(ctx, req.Token)
	if err != nil {
		if errors.Is(err, auth.ErrTokenExpired) {
			return nil, codes.DisconnectExpired
		}
		return nil, s.tokenError(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if claims.Subject != s.user {
		s.log.Info("refresh token for another user")
		return nil, codes.DisconnectInvalidToken
	}
	if len(claims.Info) > 0 {
		s.connInfo = claims.Info
	}
	s.grants = claims.Channels
	res := &protocol.RefreshResult{Client: s.id, Version: Version}
	if s.expireTimer != nil {
		s.expireTimer.Stop()
		s.expireTimer = nil
	}
	if in, ok := auth.ExpiresIn(claims.RegisteredClaims, time.Now()); ok {
		res.Expires, res.Ttl = true, ttlSeconds(in)
		s.expireTimer = time.AfterFunc(in, s.expire)
	}
	return &protocol.Reply{Refresh: res}, nil
}

func (s *Session) subRefresh(ctx context.Context, req *protocol.SubRefreshRequest) (*protocol.Reply, error) {
	subj := s.subject()
	claims, err := s.n.Verifier().VerifySubscription(ctx, req.Token, subj.User, req.Channel)
	if err != nil {
		if errors.Is(err, auth.ErrTokenExpired) {
			return nil, codes.ErrTokenExpired
		}
		return nil, codes.ErrPermissionDenied
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[req.Channel]
	if sub == nil {
		return nil, codes.ErrBadRequest
	}
	if sub.expireTimer != nil {
		sub.expireTimer.Stop()
		sub.expireTimer = nil
	}
	res := &protocol.SubRefreshResult{}
	if in, ok := auth.ExpiresIn(claims.RegisteredClaims, time.Now()); ok {
		res.Expires, res.Ttl = true, ttlSeconds(in)
		sub.expireTimer = time.AfterFunc(in, func() { s.Disconnect(codes.DisconnectSubExpired) })
	}
	return &protocol.Reply{SubRefresh: res}, nil
}

func (s *Session) caller() node.Caller {
	s.mu.Lock()
	info := s.clientInfoLocked(nil)
	s.mu.Unlock()
	return node.Caller{Subject: s.subject(), Info: &info, Subscribed: s.subscribed}
}

func (s *Session) rpc(ctx context.Context, req *protocol.RPCRequest) (*protocol.Reply, error) {
	if publishRated(req.Method) && !s.budgets.publish.Take(1) {
		return nil, codes.ErrTooManyRequests
	}
	data, err := s.n.RPC(ctx, s.caller(), req.Method, req.Data)
	if err != nil {
		return nil, err
	}
	if s.proto == protocol.TypeJSON && !json.Valid(data) {
		return nil, codes.ErrInternal
	}
	return &protocol.Reply{Rpc: &protocol.RPCResult{Data: data}}, nil
}

// send is a fire-and-forget rpc: data is {"method": "...", "data": {...}} and
// no reply is sent (typing indicators, read receipts). Its errors spend the
// budgets as replies would; the only result is a disconnect past them.
func (s *Session) send(ctx context.Context, req *protocol.SendRequest) error {
	var msg struct {
		Method string          `json:"method"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(req.Data, &msg); err != nil || msg.Method == "" {
		return s.replyError(0, codes.ErrBadRequest)
	}
	if !s.budgets.charge(rpcCost(msg.Method, msg.Data)) || (publishRated(msg.Method) && !s.budgets.publish.Take(1)) {
		return s.replyError(0, codes.ErrTooManyRequests)
	}
	if _, err := s.n.RPC(ctx, s.caller(), msg.Method, msg.Data); err != nil {
		var d codes.Disconnect
		if errors.As(err, &d) {
			return d
		}
		return s.replyError(0, node.ErrorCode(err))
	}
	return nil
}
