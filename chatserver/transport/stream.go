package transport

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/metrics"
	"github.com/parley-chat/parley/chatserver/session"
)

// The streaming transports (HTTP-streaming, SSE) share everything but the
// framing: a long-lived response carries the server's replies and pushes,
// and the client's commands after connect arrive as /emulation requests
// (emulation.go) addressed to the connection's emulation session. The
// session layer sees a Transport like the WebSocket's: Enqueue never
// blocks, the queue is bounded in bytes, and Close ends the stream.

// DefaultBodyLimit bounds a streaming connect request (body or cf_connect
// parameter) when limits.maxMessageBytes is 0.
const DefaultBodyLimit = 64 << 10

// inboundQueue bounds the emulated frames waiting for a session: a client
// that floods /emulation waits (its requests block) instead of queuing
// without bound.
const inboundQueue = 16

// framing writes a batch of encoded replies in a transport's format.
type framing func(dst []byte, proto protocol.Type, msgs [][]byte) []byte

// streamConn is one streaming connection's write side, and the queue of the
// emulated frames its session has still to handle.
type streamConn struct {
	proto    protocol.Type
	frame    framing
	maxQueue int
	metrics  *metrics.Metrics
	session  string
	rc       *http.ResponseController

	mu        sync.Mutex
	queue     [][]byte
	queued    int
	closeWith *codes.Disconnect
	cut       bool // writes are cut short (slow client, or the grace period is over)
	finished  bool // the handler returned: rc may no longer be used
	wake      chan struct{}

	in   chan inbound
	gone chan struct{} // closed when the stream ended: nothing more is handled
}

// inbound is one frame of commands; done receives the frame's outcome
// (nil, or the disconnect it caused) once the session handled it.
type inbound struct {
	data []byte
	done chan error
}

func newStreamConn(w http.ResponseWriter, proto protocol.Type, frame framing, maxQueue int, m *metrics.Metrics) *streamConn {
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	return &streamConn{
		proto: proto, frame: frame, maxQueue: maxQueue, metrics: m, session: hex.EncodeToString(idb[:]),
		rc: http.NewResponseController(w), wake: make(chan struct{}, 1),
		in: make(chan inbound, inboundQueue), gone: make(chan struct{}),
	}
}

// Protocol implements session.Transport.
func (c *streamConn) Protocol() protocol.Type { return c.proto }

// EmulationSession implements session.Emulated.
func (c *streamConn) EmulationSession() string { return c.session }

var (
	_ session.Transport = (*streamConn)(nil)
	_ session.Emulated  = (*streamConn)(nil)
)

// Enqueue implements session.Transport.
func (c *streamConn) Enqueue(data []byte) bool {
	one := [1][]byte{data}
	return c.EnqueueBatch(one[:])
}

// EnqueueBatch implements session.Transport: the bound is on what waits for
// the writer, as on the WebSocket.
func (c *streamConn) EnqueueBatch(data [][]byte) bool {
	size := 0
	for _, d := range data {
		size += len(d)
	}
	c.mu.Lock()
	if c.closeWith != nil || c.finished {
		c.mu.Unlock()
		return true // closing anyway: not a slow consumer
	}
	if c.maxQueue > 0 && c.queued > 0 && c.queued+size > c.maxQueue {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, data...)
	c.queued += size
	c.mu.Unlock()
	c.signal()
	return true
}

// Close implements session.Transport: the first close wins. A slow client
// is not waited for: the write blocked on it is cut short.
func (c *streamConn) Close(d codes.Disconnect) {
	c.mu.Lock()
	first := c.closeWith == nil
	if first {
		c.closeWith = &d
		if d == codes.DisconnectSlow {
			c.cutLocked()
		}
	}
	c.mu.Unlock()
	c.signal()
}

// abort cuts the stream now (the grace period is over).
func (c *streamConn) abort() {
	c.mu.Lock()
	if c.closeWith == nil {
		d := codes.DisconnectShutdown
		c.closeWith = &d
	}
	c.cutLocked()
	c.mu.Unlock()
	c.signal()
}

// cutLocked fails the write in progress now and every later one.
func (c *streamConn) cutLocked() {
	c.cut = true
	if !c.finished {
		_ = c.rc.SetWriteDeadline(time.Now())
	}
}

func (c *streamConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// deliver queues an emulated frame for the session and waits until the
// session handled it, the stream ended, or ctx ended.
func (c *streamConn) deliver(ctx context.Context, data []byte) error {
	in := inbound{data: data, done: make(chan error, 1)}
	select {
	case c.in <- in:
	case <-c.gone:
		return errStreamGone
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-in.done:
		return nil // a disconnect it caused reaches the client on the stream
	case <-c.gone:
		// The read loop answers a frame before a disconnect it caused
		// closes the stream: a frame that was handled counts as delivered.
		select {
		case <-in.done:
			return nil
		default:
			return errStreamGone
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errStreamGone = errors.New("stream closed")

// writeLoop writes what the session queues until the stream closes: the
// client went away (ctx), a write failed, or Close was called (then the
// disconnect goes out as a push, the stream's way to carry a close code).
func (c *streamConn) writeLoop(ctx context.Context, w http.ResponseWriter) {
	buf := getFrameBuf()
	defer putFrameBuf(buf)
	for {
		select {
		case <-c.wake:
		case <-ctx.Done():
			return
		}
		c.mu.Lock()
		batch, closeWith := c.queue, c.closeWith
		c.queue, c.queued = nil, 0
		c.mu.Unlock()
		slow := closeWith != nil && *closeWith == codes.DisconnectSlow
		if len(batch) > 0 && !slow {
			*buf = c.frame((*buf)[:0], c.proto, batch)
			if !c.write(w, *buf) {
				return
			}
		}
		if closeWith != nil {
			if !slow && *closeWith != codes.DisconnectConnectionClosed {
				if push, err := protocol.GetReplyEncoder(c.proto).Encode(&protocol.Reply{Push: &protocol.Push{
					Disconnect: &protocol.Disconnect{Code: closeWith.Code, Reason: closeWith.CloseReason()},
				}}); err == nil {
					*buf = c.frame((*buf)[:0], c.proto, [][]byte{push})
					c.write(w, *buf)
				}
			}
			return
		}
	}
}

// write writes and flushes b within writeTimeout; false: the stream is broken.
func (c *streamConn) write(w http.ResponseWriter, b []byte) bool {
	c.mu.Lock()
	cut := c.cut
	if !cut {
		_ = c.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	c.mu.Unlock()
	if cut {
		return false
	}
	n, err := w.Write(b)
	c.metrics.BytesOut.Add(float64(n))
	if err == nil {
		err = c.rc.Flush()
	}
	if err != nil {
		return false
	}
	c.mu.Lock()
	if !c.cut { // a cut meanwhile set its deadline: keep it
		_ = c.rc.SetWriteDeadline(time.Time{})
	}
	c.mu.Unlock()
	return true
}

// finish marks the handler returned: rc is off limits from now on.
func (c *streamConn) finish() {
	c.mu.Lock()
	c.finished = true
	c.mu.Unlock()
	close(c.gone)
}

// readLoop is the stream's read pump: it hands the connect frame, then
// every emulated frame, to the session, one at a time and in arrival order.
func (h *Handler) readLoop(c *streamConn, sess *session.Session, first []byte) {
	// handle runs a frame; answered (when set) is called before a
	// disconnect the frame caused closes the stream, so the emulation
	// request that carried it gets its answer rather than "session gone".
	handle := func(data []byte, answered func(error)) error {
		err := sess.HandleFrame(data)
		if answered != nil {
			answered(err)
		}
		if err != nil {
			var d codes.Disconnect
			if !errors.As(err, &d) {
				d = codes.DisconnectServerError
			}
			h.n.Metrics().Disconnect(d.Code)
			c.Close(d)
			return d
		}
		return nil
	}
	if handle(first, nil) != nil {
		return
	}
	for {
		select {
		case in := <-c.in:
			if handle(in.data, func(err error) { in.done <- err }) != nil {
				return
			}
		case <-c.gone:
			return
		}
	}
}

// streamHeaders are what every streaming response carries: no caching, and
// no buffering by nginx-like proxies (X-Accel-Buffering), which would hold
// the stream's frames back.
func streamHeaders(w http.ResponseWriter, r *http.Request, contentType string) {
	hd := w.Header()
	if r.ProtoMajor == 1 {
		hd.Set("Connection", "keep-alive") // HTTP/2 forbids connection-specific headers
	}
	hd.Set("Content-Type", contentType)
	hd.Set("X-Accel-Buffering", "no")
	hd.Set("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0")
	hd.Set("Pragma", "no-cache")
	hd.Set("Expires", "0")
}

// cors applies the origin rule of the WebSocket to a plain HTTP request: it
// answers 403 to a refused origin, and allows an accepted cross-origin one
// (with credentials: browsers send cookies only when told they may). It
// returns false when the request was answered.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request, methods string) bool {
	origin := r.Header.Get("Origin")
	if !h.checkOrigin(r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return false
	}
	if origin != "" {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Set("Access-Control-Allow-Credentials", "true")
		hd.Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions { // a browser's preflight
		hd := w.Header()
		hd.Set("Access-Control-Allow-Methods", methods)
		hd.Set("Access-Control-Allow-Headers", "Content-Type")
		hd.Set("Access-Control-Max-Age", "300")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// admit counts a new connection in, unless the server is shutting down (then
// it answers 503 and returns false).
func (h *Handler) admit(w http.ResponseWriter) bool {
	h.mu.Lock()
	refuse := h.closing || h.n.ShuttingDown()
	if !refuse {
		h.wg.Add(1)
	}
	h.mu.Unlock()
	if refuse {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	}
	return !refuse
}

// bodyLimit bounds a connect request and an emulated frame.
func (h *Handler) bodyLimit() int64 {
	if h.maxMsg > 0 {
		return h.maxMsg
	}
	return DefaultBodyLimit
}

// serveStream runs one streaming connection: headers, the connect frame,
// then replies and pushes until the stream ends. The handler's goroutine is
// the writer; a second one runs the session's commands.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, proto protocol.Type, contentType string, frame framing, preamble []byte, connect []byte) {
	c := newStreamConn(w, proto, frame, h.maxQueue, h.n.Metrics())
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.streams[c.session] = c
	lateForShutdown := h.closing
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		delete(h.streams, c.session)
		h.mu.Unlock()
		h.wg.Done()
	}()
	streamHeaders(w, r, contentType)
	w.WriteHeader(http.StatusOK)
	if len(preamble) > 0 {
		if !c.write(w, preamble) {
			c.finish()
			return
		}
	} else if err := c.rc.Flush(); err != nil {
		c.finish()
		return
	}
	if lateForShutdown {
		c.Close(codes.DisconnectShutdown)
	}
	sess := session.New(h.n, c)
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		h.readLoop(c, sess, connect)
	}()
	c.writeLoop(r.Context(), w)
	c.finish()
	<-reading
	sess.Close()
}

// appendLines frames JSON replies one per line (HTTP-streaming, JSON).
func appendLines(dst []byte, _ protocol.Type, msgs [][]byte) []byte {
	for _, m := range msgs {
		dst = append(append(dst, m...), '\n')
	}
	return dst
}

// appendDelimited frames protobuf replies each behind its varint length
// (HTTP-streaming, protobuf): the stream is one endless protobuf frame.
func appendDelimited(dst []byte, _ protocol.Type, msgs [][]byte) []byte {
	for _, m := range msgs {
		dst = append(binary.AppendUvarint(dst, uint64(len(m))), m...)
	}
	return dst
}

// acceptsMethod answers 405 unless r's method is one of methods.
func acceptsMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if slices.Contains(methods, r.Method) {
		return true
	}
	w.Header().Set("Allow", joinMethods(methods))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func joinMethods(m []string) string {
	out := ""
	for i, s := range m {
		if i > 0 {
			out += ", "
		}
		out += s
	}
	return out
}
