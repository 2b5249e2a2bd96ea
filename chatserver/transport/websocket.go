// Package transport is how frames travel between clients and sessions:
// WebSocket (this file), and the fallbacks HTTP-streaming (httpstream.go) and
// SSE (sse.go), whose commands after connect arrive at /emulation
// (emulation.go) and are routed by the node to the replica holding the
// session. One Handler owns the connections of every transport, so
// Shutdown and NumConns cover them all (stream.go: the streams' write side).
//
// It accepts WebSocket connections at /connection/websocket
// (gorilla/websocket), picks JSON or protobuf framing, and runs one read pump
// per connection, and a write pump only while one is needed. Writes go out inline, without blocking,
// from whoever enqueues them; the write pump takes over only when a socket is
// full, draining a byte-bounded queue in batched frames (conn.go).
//
// Clients may negotiate permessage-deflate: their compressed frames are read,
// but the server writes uncompressed messages (RFC 7692 allows either per
// message), as Centrifugo does by default: deflate per connection costs more
// CPU and memory than a chat message's bytes are worth.
package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/session"
)

// Path is where clients connect.
const Path = "/connection/websocket"

// ProtobufSubprotocol selects protobuf framing (what centrifuge SDKs send).
const ProtobufSubprotocol = "centrifuge-protobuf"

// CloseMessageTooBig is the WebSocket close code for an oversized message.
const CloseMessageTooBig = websocket.CloseMessageTooBig

const writeTimeout = 10 * time.Second

// Handler upgrades HTTP requests (and serves the streaming transports) and
// owns every connection until it closes.
type Handler struct {
	n        *node.Node
	log      *slog.Logger
	upgrader websocket.Upgrader
	maxMsg   int64
	maxQueue int

	mu      sync.Mutex
	conns   map[closer]struct{}
	closing bool
	wg      sync.WaitGroup
	// streams are the emulated connections by their emulation session
	// (stream.go); emulationWait bounds an /emulation request.
	streams       map[string]*streamConn
	emulationWait time.Duration
	checkOrigin   func(*http.Request) bool
}

// closer is a connection of any transport, as Shutdown sees it.
type closer interface {
	Close(d codes.Disconnect)
	// abort cuts the connection now, without a goodbye.
	abort()
}

// NewHandler builds the WebSocket handler for a node.
func NewHandler(n *node.Node) *Handler {
	cfg := n.Config()
	h := &Handler{
		n: n, log: n.Logger(), conns: map[closer]struct{}{}, streams: map[string]*streamConn{},
		emulationWait: DefaultEmulationWait,
		maxMsg:        int64(cfg.Limits.MaxMessageBytes), maxQueue: cfg.Limits.WriteQueueBytes,
	}
	h.upgrader = websocket.Upgrader{
		// A small read buffer of its own (the HTTP server's 4 KB one is freed
		// with the request; commands are small, and a larger frame is read
		// past the buffer straight into the message); the pool lends a write
		// buffer only while a frame is written, so idle connections hold
		// none. Together ~5 KB less per idle connection.
		ReadBufferSize:    1024,
		WriteBufferPool:   &sync.Pool{},
		Subprotocols:      []string{ProtobufSubprotocol},
		EnableCompression: true,
		CheckOrigin:       checkOrigin(cfg.HTTP.AllowedOrigins),
	}
	h.checkOrigin = h.upgrader.CheckOrigin
	n.SetEmulationHandler(h.emulateLocal)
	return h
}

// checkOrigin allows same-origin requests (and non-browser clients without an
// Origin header) unless the config lists origins, "*" allowing any.
func checkOrigin(allowed []string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" || slices.Contains(allowed, "*") || slices.Contains(allowed, origin) {
			return true
		}
		for _, scheme := range []string{"http://", "https://"} {
			if origin == scheme+r.Host {
				return true
			}
		}
		return false
	}
}

// ServeHTTP upgrades the request and runs the connection until it closes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	// The node drains before Shutdown sets closing: either refuses, and a
	// refused request must not count in wg (Shutdown would wait for it).
	refuse := h.closing || h.n.ShuttingDown()
	if !refuse {
		h.wg.Add(1)
	}
	h.mu.Unlock()
	if refuse {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.wg.Done()
		return // the upgrader already answered with an HTTP error
	}
	proto := protocol.TypeJSON
	if ws.Subprotocol() == ProtobufSubprotocol || r.URL.Query().Get("format") == "protobuf" || r.URL.Query().Get("cf_protocol") == "protobuf" {
		proto = protocol.TypeProtobuf
	}
	c := newConn(ws, proto, h.maxQueue, h.n.Metrics())
	h.mu.Lock()
	h.conns[c] = struct{}{}
	// Shutdown may have listed the connections while this one was upgrading.
	lateForShutdown := h.closing
	h.mu.Unlock()
	if lateForShutdown {
		c.Close(codes.DisconnectShutdown)
	}
	// The connection is hijacked: serve it from a goroutine of its own and
	// return, so net/http's per-request state (the request, its headers, the
	// response's buffered writer, the connection's context) is freed rather
	// than held for the connection's lifetime (~6 KB per idle connection).
	go func() {
		defer h.wg.Done()
		defer func() {
			h.mu.Lock()
			delete(h.conns, c)
			h.mu.Unlock()
		}()
		sess := session.New(h.n, c)
		h.readPump(c, sess)
		sess.Close()
		c.Close(codes.DisconnectConnectionClosed)
		<-c.done
	}()
}

func (h *Handler) readPump(c *conn, sess *session.Session) {
	if h.maxMsg > 0 {
		c.ws.SetReadLimit(h.maxMsg) // bytes on the wire
	}
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		var data []byte
		if h.maxMsg > 0 {
			// Bound the decompressed size too: a small compressed frame may inflate.
			data, err = io.ReadAll(io.LimitReader(r, h.maxMsg+1))
			if err == nil && int64(len(data)) > h.maxMsg {
				h.n.Metrics().Disconnect(CloseMessageTooBig)
				c.Close(codes.Disconnect{Code: CloseMessageTooBig, Reason: "message too big"})
				return
			}
		} else {
			data, err = io.ReadAll(r)
		}
		if err != nil {
			return
		}
		if err := sess.HandleFrame(data); err != nil {
			var d codes.Disconnect
			if !errors.As(err, &d) {
				d = codes.DisconnectServerError
			}
			h.n.Metrics().Disconnect(d.Code)
			c.Close(d)
			return
		}
	}
}

// AfterGraceWait bounds how long Shutdown waits, once ctx has ended and it
// closed the remaining sockets, for their sessions to release what they hold
// (subscriptions, presence): a store or broker that hangs must not hold the
// process past its grace period until it is killed.
const AfterGraceWait = time.Second

// Shutdown stops accepting connections and disconnects every open one with
// "shutdown" (clients reconnect, to another replica), spreading the
// disconnects over spread so clients do not all come back at once. It returns
// when every connection is gone or ctx ends (then it closes the rest at once
// and waits at most AfterGraceWait for them).
func (h *Handler) Shutdown(ctx context.Context, spread time.Duration) error {
	h.mu.Lock()
	h.closing = true
	conns := make([]closer, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	timers := make([]*time.Timer, 0, len(conns))
	for _, c := range conns {
		var delay time.Duration
		if spread > 0 {
			delay = rand.N(spread)
		}
		timers = append(timers, time.AfterFunc(delay, func() { c.Close(codes.DisconnectShutdown) }))
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, t := range timers {
			t.Stop()
		}
		h.mu.Lock()
		for c := range h.conns {
			c.Close(codes.DisconnectShutdown)
			c.abort()
		}
		h.mu.Unlock()
		select {
		case <-done:
		case <-time.After(AfterGraceWait):
			h.log.Warn("connections still releasing after the grace period", "connections", h.NumConns())
		}
		return ctx.Err()
	}
}

// NumConns counts open connections of every transport (connected or not yet).
func (h *Handler) NumConns() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}
