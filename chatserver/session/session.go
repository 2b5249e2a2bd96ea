// Package session is one client connection's state machine: it decodes the
// Centrifuge protocol commands of a frame, dispatches them (connect, subscribe
// with recovery, publish, history, presence, refresh, rpc, send …), enforces
// per-connection limits, keeps the application ping/pong going and decides
// disconnect codes. The transport feeds it frames and writes what it queues.
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/hub"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/node"
)

// Transport is the connection under a session: it writes queued replies in
// batches and closes with a disconnect code. Enqueue and Close never block.
type Transport interface {
	Protocol() protocol.Type
	// Enqueue queues one encoded reply (no framing). It returns false when the
	// connection's write queue is over its byte bound or the connection is closed.
	Enqueue(data []byte) bool
	// EnqueueBatch queues several replies to go out together (one frame).
	EnqueueBatch(data [][]byte) bool
	// Close flushes what is queued, sends a close frame with d and closes.
	Close(d codes.Disconnect)
}

// Emulated is implemented by transports whose client sends commands as
// separate HTTP requests (bidirectional emulation): the connect reply carries
// the session those requests must name. It is a secret of the connection,
// unlike the client id, which other users see in presence.
type Emulated interface {
	EmulationSession() string
}

// Default timings; config.HTTP.PingInterval and PongTimeout override them.
const (
	DefaultPingInterval = 25 * time.Second
	DefaultPongTimeout  = 10 * time.Second
	// commandTimeout bounds the store and broker calls of one command.
	commandTimeout = 10 * time.Second
)

type state int

const (
	stateConnecting state = iota
	stateConnected
	stateClosed
)

// Session is one connection. Its exported methods are safe for concurrent use;
// HandleFrame must be called from one goroutine (the read pump).
type Session struct {
	n     *node.Node
	t     Transport
	proto protocol.Type
	id    string
	log   *slog.Logger

	pingInterval time.Duration
	pongTimeout  time.Duration

	mu          sync.Mutex
	state       state
	user        string
	anonymous   bool
	connInfo    []byte
	grants      []string
	subs        map[string]*subscription
	timer       *time.Timer // stale before connect, then ping/pong
	expireTimer *time.Timer
	waitingPong bool
	// usedDelta is set (for good) by the first subscription with deltas.
	usedDelta atomic.Bool
	// budgets are read and spent by the read pump only (budget.go).
	budgets budgets
}

type subscription struct {
	ns          config.Namespace
	live        bool
	buffer      [][]byte
	bufferOffs  []uint64
	bufferBytes int
	// bufferDeltas[i], when set, is buffer[i] for a delta subscription: the
	// publication, encoded when it goes out (its delta depends on what went
	// out before it).
	bufferDeltas []*hub.Delta
	// delta says the subscription negotiated fossil deltas; prev is the data
	// of the last publication sent on it, the base of the next delta.
	delta bool
	prev  []byte
	// skipUpTo is the offset in the subscribe reply: a live publication at or
	// below it was already covered by the reply (its position or recovered
	// publications) and is dropped. The node delivers in offset order, so
	// the first newer publication ends the check.
	skipUpTo    uint64
	chanInfo    []byte
	expireTimer *time.Timer
	joined      bool
	// joinLeave says the client asked for join/leave pushes (the subscribe
	// request's join_leave flag); the namespace must enable them too.
	joinLeave bool
}

// New creates a session for a freshly upgraded connection. The client must
// send connect within the ping interval or it is closed as stale.
func New(n *node.Node, t Transport) *Session {
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	cfg := n.Config()
	s := &Session{
		n: n, t: t, proto: t.Protocol(), id: hex.EncodeToString(idb[:]),
		subs:         map[string]*subscription{},
		pingInterval: DefaultPingInterval, pongTimeout: DefaultPongTimeout,
	}
	if cfg.HTTP.PingInterval > 0 {
		s.pingInterval = cfg.HTTP.PingInterval.D()
	}
	if cfg.HTTP.PongTimeout > 0 {
		s.pongTimeout = cfg.HTTP.PongTimeout.D()
	}
	if s.pongTimeout >= s.pingInterval {
		s.pongTimeout = s.pingInterval / 2
	}
	s.budgets = newBudgets(cfg.Limits.CommandCostPerSecond, cfg.Limits.PublishesPerSecond)
	s.log = n.Logger().With("client", s.id)
	s.timer = time.AfterFunc(s.pingInterval, func() {
		s.mu.Lock()
		stale := s.state == stateConnecting
		s.mu.Unlock()
		if stale {
			s.Disconnect(codes.DisconnectStale)
		}
	})
	return s
}

// ID implements hub.Subscriber.
func (s *Session) ID() string { return s.id }

// UserID implements hub.Subscriber.
func (s *Session) UserID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user
}

// Protocol implements hub.Subscriber.
func (s *Session) Protocol() protocol.Type { return s.proto }

var _ hub.Subscriber = (*Session)(nil)

// enqueue queues an encoded reply and counts it; a full queue disconnects the client
// as slow. Called with s.mu held or not: it touches only the transport.
func (s *Session) enqueue(data []byte, counter prometheus.Counter) {
	s.queued(s.t.Enqueue(data), 1, counter)
}

// queued counts n queued messages, or disconnects the client as slow when
// its queue refused them.
func (s *Session) queued(ok bool, n int, counter prometheus.Counter) {
	if !ok {
		s.n.Metrics().Disconnect(codes.DisconnectSlow.Code)
		s.t.Close(codes.DisconnectSlow)
		return
	}
	counter.Add(float64(n))
}

// DeliverPublication implements hub.Subscriber. While a subscription is being
// set up its publications are buffered, so none fall between the history read
// and going live.
func (s *Session) DeliverPublication(channel string, offset uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[channel]
	if sub == nil || s.state != stateConnected {
		return
	}
	if !sub.live {
		s.bufferLocked(sub, offset, data)
		return
	}
	if sub.skipUpTo > 0 && offset > 0 {
		if offset <= sub.skipUpTo {
			return
		}
		sub.skipUpTo = 0
	}
	s.enqueue(data, s.n.Metrics().OutPush)
}

// DeliverPublications implements hub.Subscriber: consecutive publications
// of one channel, filtered as DeliverPublication filters each, go to the
// transport together so they leave in one frame.
func (s *Session) DeliverPublications(channel string, offsets []uint64, data [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[channel]
	if sub == nil || s.state != stateConnected {
		return
	}
	if !sub.live {
		for i, d := range data {
			s.bufferLocked(sub, offsets[i], d)
		}
		return
	}
	send := data
	if sub.skipUpTo > 0 {
		send = nil
		for i, d := range data {
			if off := offsets[i]; off > 0 && sub.skipUpTo > 0 {
				if off <= sub.skipUpTo {
					continue
				}
				sub.skipUpTo = 0
			}
			send = append(send, d)
		}
	}
	if len(send) == 0 {
		return
	}
	s.queued(s.t.EnqueueBatch(send), len(send), s.n.Metrics().OutPush)
}

// bufferLocked holds a push for a subscription being set up; offset 0 means
// "not a stored publication" (always sent after the reply).
func (s *Session) bufferLocked(sub *subscription, offset uint64, data []byte) {
	s.bufferItemLocked(sub, offset, data, nil, len(data))
}

func (s *Session) bufferItemLocked(sub *subscription, offset uint64, data []byte, d *hub.Delta, size int) {
	sub.buffer = append(sub.buffer, data)
	sub.bufferOffs = append(sub.bufferOffs, offset)
	sub.bufferDeltas = append(sub.bufferDeltas, d)
	sub.bufferBytes += size
	if limit := s.n.Config().Limits.WriteQueueBytes; limit > 0 && sub.bufferBytes > limit {
		s.t.Close(codes.DisconnectSlow)
	}
}

var _ hub.DeltaSubscriber = (*Session)(nil)

// DeliverJoinLeave implements hub.JoinLeaveSubscriber: only subscriptions
// that asked for join/leave get them, and while one is being set up they wait
// behind its subscribe reply like publications do.
func (s *Session) DeliverJoinLeave(channel string, data []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[channel]
	if sub == nil || !sub.joinLeave || s.state != stateConnected {
		return false
	}
	if !sub.live {
		s.bufferLocked(sub, 0, data)
		return true
	}
	s.enqueue(data, s.n.Metrics().OutPush)
	return true
}

var _ hub.JoinLeaveSubscriber = (*Session)(nil)

// DeliverPush implements hub.Subscriber.
func (s *Session) DeliverPush(data []byte) {
	s.mu.Lock()
	live := s.state == stateConnected
	s.mu.Unlock()
	if live {
		s.enqueue(data, s.n.Metrics().OutPush)
	}
}

// Disconnect implements hub.Subscriber: close the connection with d.
func (s *Session) Disconnect(d codes.Disconnect) {
	s.n.Metrics().Disconnect(d.Code)
	s.t.Close(d)
}

// ServerUnsubscribe implements node.Unsubscriber: drop a subscription and
// tell the client with an unsubscribe push.
func (s *Session) ServerUnsubscribe(channel string, code uint32, reason string) {
	s.mu.Lock()
	sub := s.subs[channel]
	if sub == nil || s.state != stateConnected {
		s.mu.Unlock()
		return
	}
	delete(s.subs, channel)
	info := s.clientInfoLocked(sub)
	s.mu.Unlock()
	s.dropSubscription(channel, sub, info)
	if data, err := node.EncodeUnsubscribePush(s.proto, channel, code, reason); err == nil {
		s.enqueue(data, s.n.Metrics().OutPush)
	}
}

func (s *Session) clientInfoLocked(sub *subscription) message.ClientInfo {
	ci := message.ClientInfo{User: s.user, Client: s.id, ConnInfo: s.connInfo}
	if sub != nil {
		ci.ChanInfo = sub.chanInfo
	}
	return ci
}

func (s *Session) subject() auth.Subject {
	s.mu.Lock()
	defer s.mu.Unlock()
	return auth.Subject{User: s.user, Anonymous: s.anonymous, Grants: s.grants}
}

func (s *Session) subscribed(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[channel]
	return sub != nil
}

// HandleFrame decodes and runs every command in one transport frame. A
// non-nil error is a codes.Disconnect the transport must close with.
func (s *Session) HandleFrame(frame []byte) error {
	if len(frame) == 0 {
		s.n.Metrics().MalformedFrames.Inc()
		return codes.DisconnectBadRequest
	}
	dec := protocol.GetCommandDecoder(s.proto, frame)
	defer protocol.PutCommandDecoder(s.proto, dec)
	for {
		cmd, err := dec.Decode()
		if cmd != nil {
			if d := s.handleCommand(cmd); d != nil {
				return d
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			s.n.Metrics().MalformedFrames.Inc()
			s.log.Debug("malformed frame", "error", err)
			return codes.DisconnectBadRequest
		}
	}
}

// handleCommand runs one command and queues its reply. It returns a
// disconnect when the connection must close.
func (s *Session) handleCommand(cmd *protocol.Command) error {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st == stateClosed {
		return codes.DisconnectConnectionClosed
	}
	ft := frameType(cmd)
	s.n.Metrics().MessagesIn.WithLabelValues(ft.String()).Inc()
	if ft == protocol.FrameTypeClientPong {
		if cmd.Id != 0 {
			return s.replyError(cmd.Id, codes.ErrMethodNotFound)
		}
		s.mu.Lock()
		s.waitingPong = false
		s.mu.Unlock()
		return nil
	}
	if st == stateConnecting && ft != protocol.FrameTypeConnect {
		return codes.DisconnectBadRequest
	}
	if st == stateConnected && ft == protocol.FrameTypeConnect {
		return codes.DisconnectBadRequest
	}
	if cmd.Id == 0 && ft != protocol.FrameTypeSend {
		return codes.DisconnectBadRequest // every command except send expects a reply
	}
	if !s.budgets.charge(s.commandCost(cmd, ft)) {
		return s.replyError(cmd.Id, codes.ErrTooManyRequests)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var (
		reply *protocol.Reply
		err   error
	)
	switch ft {
	case protocol.FrameTypeConnect:
		// connect queues its own reply so server-side subscriptions follow it.
		err = s.connect(ctx, cmd.Id, cmd.Connect)
	case protocol.FrameTypeSubscribe:
		// subscribe queues its own reply so buffered publications follow it.
		err = s.subscribe(ctx, cmd.Id, cmd.Subscribe)
	case protocol.FrameTypeUnsubscribe:
		reply, err = s.unsubscribe(ctx, cmd.Unsubscribe)
	case protocol.FrameTypePublish:
		reply, err = s.publish(ctx, cmd.Publish)
	case protocol.FrameTypeHistory:
		reply, err = s.history(ctx, cmd.History)
	case protocol.FrameTypePresence:
		reply, err = s.presence(ctx, cmd.Presence)
	case protocol.FrameTypePresenceStats:
		reply, err = s.presenceStats(ctx, cmd.PresenceStats)
	case protocol.FrameTypeRefresh:
		reply, err = s.refresh(ctx, cmd.Refresh)
	case protocol.FrameTypeSubRefresh:
		reply, err = s.subRefresh(ctx, cmd.SubRefresh)
	case protocol.FrameTypeRPC:
		reply, err = s.rpc(ctx, cmd.Rpc)
	case protocol.FrameTypeSend:
		return s.send(ctx, cmd.Send)
	case pingFrame:
		reply = &protocol.Reply{Ping: &protocol.PingResult{}}
	default:
		err = codes.ErrMethodNotFound
	}
	if err != nil {
		var d codes.Disconnect
		if errors.As(err, &d) {
			return d
		}
		pe := node.ErrorCode(err)
		if pe == codes.ErrInternal {
			s.log.Error("command failed", "command", ft.String(), "error", err)
		}
		return s.replyError(cmd.Id, pe)
	}
	if reply != nil {
		reply.Id = cmd.Id
		return s.writeReply(reply)
	}
	return nil
}

// replyError answers a command with e (id 0: a send, no answer) after
// spending the budget it belongs to: a refusal (111) spends the refusal
// budget, past which the client is disconnected with 3013 (it reconnects);
// an error the client caused spends the error budget, past which 3509.
func (s *Session) replyError(id uint32, e *codes.Error) error {
	s.n.Metrics().Error(e.Code)
	if e.Code == codes.ErrTooManyRequests.Code {
		if !s.budgets.refusals.Take(1) {
			s.n.Metrics().Disconnect(codes.DisconnectTooManyRequests.Code)
			return codes.DisconnectTooManyRequests
		}
	} else if clientFault(e) && !s.budgets.errors.Take(1) {
		s.n.Metrics().Disconnect(codes.DisconnectTooManyErrors.Code)
		return codes.DisconnectTooManyErrors
	}
	if id == 0 {
		return nil
	}
	return s.writeReply(&protocol.Reply{Id: id, Error: e.Proto()})
}

func (s *Session) writeReply(r *protocol.Reply) error {
	data, err := protocol.GetReplyEncoder(s.proto).Encode(r)
	if err != nil {
		// Only JSON can fail: a payload that is not JSON cannot reach a JSON client.
		return codes.DisconnectInappropriateProtocol
	}
	s.enqueue(data, s.n.Metrics().OutReply)
	return nil
}

const pingFrame protocol.FrameType = 250

func frameType(cmd *protocol.Command) protocol.FrameType {
	switch {
	case cmd.Connect != nil:
		return protocol.FrameTypeConnect
	case cmd.Subscribe != nil:
		return protocol.FrameTypeSubscribe
	case cmd.Unsubscribe != nil:
		return protocol.FrameTypeUnsubscribe
	case cmd.Publish != nil:
		return protocol.FrameTypePublish
	case cmd.Presence != nil:
		return protocol.FrameTypePresence
	case cmd.PresenceStats != nil:
		return protocol.FrameTypePresenceStats
	case cmd.History != nil:
		return protocol.FrameTypeHistory
	case cmd.Send != nil:
		return protocol.FrameTypeSend
	case cmd.Rpc != nil:
		return protocol.FrameTypeRPC
	case cmd.Refresh != nil:
		return protocol.FrameTypeRefresh
	case cmd.SubRefresh != nil:
		return protocol.FrameTypeSubRefresh
	case cmd.Ping != nil:
		return pingFrame
	}
	return protocol.FrameTypeClientPong
}

// Close releases everything the session holds: subscriptions (broker,
// presence, leave), its place in the hub, its timers. The transport calls it
// once, when the connection is gone.
func (s *Session) Close() {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	wasConnected := s.state == stateConnected
	s.state = stateClosed
	s.timer.Stop()
	if s.expireTimer != nil {
		s.expireTimer.Stop()
	}
	subs := s.subs
	s.subs = map[string]*subscription{}
	infos := make(map[string]message.ClientInfo, len(subs))
	for ch, sub := range subs {
		infos[ch] = s.clientInfoLocked(sub)
	}
	conn := s.clientInfoLocked(nil)
	s.mu.Unlock()
	for ch, sub := range subs {
		s.dropSubscription(ch, sub, infos[ch])
	}
	if wasConnected {
		if s.budgets.user != nil {
			s.n.ReleaseUserBudget(conn.User)
		}
		s.n.Hub().RemoveConn(s)
		s.n.Metrics().Connections.Dec()
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		if err := s.n.ReleaseConnection(ctx, conn); err != nil {
			s.log.Warn("release connection count", "error", err)
		}
		cancel()
	}
}

// dropSubscription undoes a subscription: hub and broker, presence, leave.
func (s *Session) dropSubscription(channel string, sub *subscription, info message.ClientInfo) {
	if sub.expireTimer != nil {
		sub.expireTimer.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	s.n.Unsubscribe(ctx, channel, s)
	if sub.joined {
		if err := s.n.Leave(ctx, channel, sub.ns, info); err != nil {
			s.log.Warn("leave", "channel", channel, "error", err)
		}
	}
}
