package transport

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/metrics"
)

// conn is one WebSocket connection's write side.
//
// The fast path writes inline: when nothing is queued and no write is in
// progress, Enqueue builds the frame and hands it to the socket with one
// non-blocking write(2) from the caller's goroutine (the hub's broadcast, or
// the session answering a command). A fan-out to thousands of connections
// then costs one system call per connection and no goroutine wake-ups, which
// is most of what a delivered message costs. Only when the socket cannot take
// the whole frame (the client reads slowly) does the rest go to the write
// pump, a goroutine per connection that blocks on the socket with a deadline;
// everything enqueued meanwhile queues behind it (bounded in bytes) and goes
// out batched in one frame, which is what the protocol's batched frames are for.
// The pump exists only while there is such work (or a close to send): an idle
// connection holds no writer goroutine, only its reader.
//
// Frames are built here rather than by gorilla's writer, which locks, copies
// and sets a deadline (a timer update) per message. A TLS connection, not a
// socket, takes the pump for every write through gorilla instead.
type conn struct {
	ws       *websocket.Conn
	nc       net.Conn
	raw      syscall.RawConn // nil: every write goes through gorilla in the pump
	proto    protocol.Type
	maxQueue int
	metrics  *metrics.Metrics

	mu         sync.Mutex
	queue      [][]byte
	queued     int
	control    [][]byte // complete control frames (pongs), written before data
	pending    *[]byte  // a frame an inline write left half written: finished first
	pendingOff int
	writing    bool // someone (inline or the pump) is writing to the socket
	broken     bool // a write failed: nothing more goes out
	pumping    bool // a pump goroutine is running
	finished   bool // the socket is closed and done is closed
	closeWith  *codes.Disconnect
	done       chan struct{}

	// Owned by whoever set writing: the frame of an inline write and its progress.
	wbuf []byte
	wn   int
	werr error
	step func(fd uintptr) bool // c.writeStep, bound once so a write allocates no closure
}

func newConn(ws *websocket.Conn, proto protocol.Type, maxQueue int, m *metrics.Metrics) *conn {
	c := &conn{ws: ws, nc: ws.NetConn(), proto: proto, maxQueue: maxQueue, metrics: m, done: make(chan struct{})}
	if sc, ok := c.nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.step = c.writeStep
			// Every write to the socket must come from here so frames never
			// interleave: gorilla's own answers to pings and close frames
			// would otherwise be written from the read pump. One exception
			// remains: on a protocol error or an oversized frame gorilla's
			// reader writes a close frame itself; if that meets a half-written
			// inline frame, the dying connection gets a corrupt tail.
			// Nothing else is affected: the connection is closed either way.
			ws.SetPingHandler(c.pong)
			ws.SetCloseHandler(func(int, string) error { return nil }) // the read pump's Close answers it
		}
	}
	return c
}

// Protocol implements session.Transport.
func (c *conn) Protocol() protocol.Type { return c.proto }

// Enqueue implements session.Transport.
func (c *conn) Enqueue(data []byte) bool {
	one := [1][]byte{data}
	return c.EnqueueBatch(one[:])
}

// EnqueueBatch implements session.Transport: the messages go out together,
// in one frame when they are written inline.
func (c *conn) EnqueueBatch(data [][]byte) bool {
	size := 0
	for _, d := range data {
		size += len(d)
	}
	c.mu.Lock()
	if c.closeWith != nil || c.broken {
		c.mu.Unlock()
		return true // closing anyway: not a slow consumer
	}
	// The byte bound is on what waits behind a full socket: a batch that
	// goes out inline is not held against it, whatever its size.
	if c.raw != nil && !c.writing && c.pending == nil && len(c.queue) == 0 && len(c.control) == 0 {
		c.writing = true
		c.mu.Unlock()
		c.writeInline(data)
		return true
	}
	if c.maxQueue > 0 && c.queued+size > c.maxQueue {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, data...)
	c.queued += size
	c.mu.Unlock()
	c.signal()
	return true
}

// writeInline writes the messages' frame without blocking; what the socket
// does not take is left to the pump. Called with c.writing set by the caller.
func (c *conn) writeInline(data [][]byte) {
	buf := getFrameBuf()
	*buf = appendFrame(*buf, c.proto, data)
	c.wbuf, c.wn, c.werr = *buf, 0, nil
	err := c.raw.Write(c.step)
	n, werr := c.wn, c.werr
	c.wbuf = nil
	if n > 0 {
		c.metrics.BytesOut.Add(float64(n))
	}
	if werr == nil && err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		werr = err // closed
	}
	c.mu.Lock()
	c.writing = false
	switch {
	case werr != nil:
		c.broken = true
		putFrameBuf(buf)
	case n < len(*buf):
		c.pending, c.pendingOff = buf, n
	default:
		putFrameBuf(buf)
	}
	kick := c.broken || c.pending != nil || len(c.queue) > 0 || len(c.control) > 0 || c.closeWith != nil
	c.mu.Unlock()
	if kick {
		c.signal()
	}
}

// writeStep is the RawConn callback: write what the socket takes now and
// report done either way (true), so the caller never waits for the socket.
func (c *conn) writeStep(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, err := syscall.Write(int(fd), c.wbuf[c.wn:])
		if n > 0 {
			c.wn += n
		}
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			c.werr = err
			return true
		case n <= 0:
			return true
		}
	}
	return true
}

// pong queues the answer to a WebSocket ping (gorilla's read pump calls it).
func (c *conn) pong(appData string) error {
	c.mu.Lock()
	if c.closeWith == nil && !c.broken && len(c.control) < 8 { // a ping flood earns no more
		c.control = append(c.control, appendControl(nil, opPong, []byte(appData)))
	}
	c.mu.Unlock()
	c.signal()
	return nil
}

// Close implements session.Transport: the first close wins. A slow client
// is not waited for: a write blocked on it is cut short so the close happens
// now rather than at the write timeout.
func (c *conn) Close(d codes.Disconnect) {
	c.mu.Lock()
	first := c.closeWith == nil
	if first {
		c.closeWith = &d
	}
	c.mu.Unlock()
	if first && d == codes.DisconnectSlow {
		_ = c.nc.SetWriteDeadline(time.Now())
	}
	c.signal()
}

// signal starts the pump if there is work for it and none is running (or
// an inline write is in progress: it signals again when it is done).
func (c *conn) signal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pumping || c.writing || c.finished {
		return
	}
	if c.broken || c.pending != nil || len(c.queue) > 0 || len(c.control) > 0 || c.closeWith != nil {
		c.pumping = true
		go c.pump()
	}
}

// pump finishes what inline writes could not, writes everything queued as
// one frame per round, then the close frame once Close was called, and
// closes the socket. It returns when there is nothing left to do.
func (c *conn) pump() {
	for {
		c.mu.Lock()
		if c.writing { // an inline write: it signals again when it is done
			c.pumping = false
			c.mu.Unlock()
			return
		}
		if c.broken {
			c.mu.Unlock()
			c.finish()
			return
		}
		control, pending, off, batch, closeWith := c.control, c.pending, c.pendingOff, c.queue, c.closeWith
		if len(control) == 0 && pending == nil && len(batch) == 0 && closeWith == nil {
			c.pumping = false
			c.mu.Unlock()
			return
		}
		c.control, c.pending, c.queue, c.queued = nil, nil, nil, 0
		c.writing = true
		c.mu.Unlock()
		err := c.flush(control, pending, off, batch, closeWith)
		if err == nil && closeWith != nil {
			msg := websocket.FormatCloseMessage(int(closeWith.Code), closeWith.CloseReason())
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		}
		if err != nil || closeWith != nil {
			c.finish()
			return
		}
		c.mu.Lock()
		c.writing = false
		c.mu.Unlock()
	}
}

func (c *conn) abort() { _ = c.ws.Close() }

// finish closes the socket for good; the pump calls it once, last.
func (c *conn) finish() {
	_ = c.ws.Close()
	c.mu.Lock()
	c.finished, c.writing, c.broken = true, true, true // nothing writes again
	c.mu.Unlock()
	close(c.done)
}

var errSlow = errors.New("slow client: queued data dropped")

// flush writes, blocking with a deadline: the rest of a half-written frame,
// pongs, and the queued messages as one frame. A client being disconnected
// as slow gets none of its backlog, only the close frame.
func (c *conn) flush(control [][]byte, pending *[]byte, off int, batch [][]byte, closeWith *codes.Disconnect) error {
	slow := closeWith != nil && *closeWith == codes.DisconnectSlow
	if pending != nil {
		defer putFrameBuf(pending)
		if slow {
			return errSlow // half a frame is out: a close frame cannot follow it
		}
		if err := c.write((*pending)[off:]); err != nil {
			return err
		}
	}
	if slow {
		batch = nil
	}
	if c.raw == nil {
		return c.writeGorilla(batch)
	}
	buf := getFrameBuf()
	defer putFrameBuf(buf)
	for _, f := range control {
		*buf = append(*buf, f...)
	}
	if len(batch) > 0 {
		*buf = appendFrame(*buf, c.proto, batch)
	}
	if len(*buf) == 0 {
		return nil
	}
	return c.write(*buf)
}

// write is the pump's blocking write. The deadline is cleared afterwards:
// inline writes find an expired one an error.
func (c *conn) write(b []byte) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	n, err := c.nc.Write(b)
	c.metrics.BytesOut.Add(float64(n))
	if err != nil {
		return err
	}
	return c.nc.SetWriteDeadline(time.Time{})
}

// writeGorilla writes batch as one message through gorilla (connections that
// are not plain sockets, e.g. TLS).
func (c *conn) writeGorilla(batch [][]byte) error {
	if len(batch) == 0 {
		return nil
	}
	buf := getFrameBuf()
	defer putFrameBuf(buf)
	*buf = appendFrame(*buf, c.proto, batch)
	payload := (*buf)[len(*buf)-batchLen(c.proto, batch):]
	msgType := websocket.TextMessage
	if c.proto == protocol.TypeProtobuf {
		msgType = websocket.BinaryMessage
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.ws.WriteMessage(msgType, payload); err != nil {
		return err
	}
	c.metrics.BytesOut.Add(float64(len(payload)))
	return nil
}
