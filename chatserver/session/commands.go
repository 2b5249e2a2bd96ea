package session

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/groups"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/store"
)

// Version is reported to clients in connect and refresh results.
const Version = "parley"

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
		// name and picture are the token's profile claims.
		name, picture string
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
		name, picture = claims.Name, claims.Picture
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
		s.expireTimer = time.AfterFunc(expiresIn+s.n.Config().Auth.CloseDelay(), s.expire)
	}
	s.timer.Stop()
	s.timer = time.AfterFunc(s.pingInterval, s.sendPing)
	s.mu.Unlock()
	s.n.Hub().AddConn(s)
	s.n.Metrics().Connections.Inc()
	if !anonymous {
		s.n.Groups().Connected(ctx, user, name, picture)
	}
	s.log.Debug("connected", "user", user, "anonymous", anonymous)

	res := &protocol.ConnectResult{
		Client: s.id, Version: Version, Expires: expires, Node: s.n.ID(),
		Ping: ttlSeconds(s.pingInterval), Pong: true, Time: time.Now().UnixMilli(),
	}
	if expires {
		res.Ttl = ttlSeconds(expiresIn)
	}
	if e, ok := s.t.(Emulated); ok {
		res.Session = e.EmulationSession()
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

func (s *Session) publish(ctx context.Context, req *protocol.PublishRequest) (*protocol.Reply, error) {
	subj := s.subject()
	if err := s.n.Authorizer().CanPublish(subj, req.Channel, s.subscribed(req.Channel)); err != nil {
		return nil, err
	}
	if err := s.n.Groups().Check(ctx, subj, req.Channel, groups.OpPublish); err != nil {
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
	if err := s.n.Groups().Check(ctx, s.subject(), req.Channel, groups.OpRead); err != nil {
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
	if err := s.n.Groups().Check(ctx, s.subject(), req.Channel, groups.OpRead); err != nil {
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
	if err := s.n.Groups().Check(ctx, s.subject(), req.Channel, groups.OpRead); err != nil {
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
		s.expireTimer = time.AfterFunc(in+s.n.Config().Auth.CloseDelay(), s.expire)
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
		sub.expireTimer = time.AfterFunc(in+s.n.Config().Auth.CloseDelay(), func() { s.Disconnect(codes.DisconnectSubExpired) })
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
