package transport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/metrics"
)

// The frames built by hand carry exactly what protocol's data encoders
// produce, under a header any WebSocket reader accepts, at every length class.
func TestFramesMatchTheProtocolEncoders(t *testing.T) {
	sizes := [][]int{{0}, {1}, {125}, {126}, {65535}, {65536}, {3, 200, 70000}, {10, 10, 10, 10}}
	for _, proto := range []protocol.Type{protocol.TypeJSON, protocol.TypeProtobuf} {
		for _, sz := range sizes {
			t.Run(fmt.Sprintf("%s/%v", proto, sz), func(t *testing.T) {
				var msgs [][]byte
				for i, n := range sz {
					msgs = append(msgs, bytes.Repeat([]byte{byte('a' + i)}, n))
				}
				enc := protocol.GetDataEncoder(proto)
				defer protocol.PutDataEncoder(proto, enc)
				for _, m := range msgs {
					if err := enc.Encode(m); err != nil {
						t.Fatal(err)
					}
				}
				want := enc.Finish()
				frame := appendFrame([]byte("prefix"), proto, msgs)[len("prefix"):]
				op, payload := parseFrame(t, frame)
				if wantOp := map[protocol.Type]byte{protocol.TypeJSON: opText, protocol.TypeProtobuf: opBinary}[proto]; op != wantOp {
					t.Fatalf("opcode %d, want %d", op, wantOp)
				}
				if !bytes.Equal(payload, want) {
					t.Fatalf("payload differs from the encoder's (%d vs %d bytes)", len(payload), len(want))
				}
			})
		}
	}
}

// parseFrame reads one complete unmasked frame per RFC 6455 §5.2.
func parseFrame(t *testing.T, f []byte) (op byte, payload []byte) {
	t.Helper()
	if len(f) < 2 || f[0]&0x80 == 0 || f[0]&0x70 != 0 || f[1]&0x80 != 0 {
		t.Fatalf("bad header % x", f[:min(len(f), 2)])
	}
	n, rest := uint64(f[1]&0x7f), f[2:]
	switch n {
	case 126:
		n, rest = uint64(binary.BigEndian.Uint16(rest)), rest[2:]
		if n < 126 {
			t.Fatal("16-bit length used for a short payload")
		}
	case 127:
		n, rest = binary.BigEndian.Uint64(rest), rest[8:]
		if n <= 0xFFFF {
			t.Fatal("64-bit length used for a 16-bit payload")
		}
	}
	if uint64(len(rest)) != n {
		t.Fatalf("length %d, frame carries %d", n, len(rest))
	}
	return f[0] & 0x0f, rest
}

// pair returns the server side of a real WebSocket over loopback TCP (a conn
// with its pumps running) and the client side.
func pair(t *testing.T, maxQueue int) (*conn, *websocket.Conn) {
	t.Helper()
	got := make(chan *conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := newConn(ws, protocol.TypeJSON, maxQueue, metrics.New())
		go func() { // the read pump: control frames are handled while reading
			for {
				if _, _, err := ws.NextReader(); err != nil {
					c.Close(codes.DisconnectConnectionClosed)
					return
				}
			}
		}()
		got <- c
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := <-got
	if c.raw == nil {
		t.Fatal("a loopback TCP connection should take the inline path")
	}
	t.Cleanup(func() {
		c.Close(codes.DisconnectShutdown)
		<-c.done
		_ = client.Close()
	})
	return c, client
}

// A client that stops reading makes inline writes fall short; the pump
// finishes the half-written frame and then the backlog, and the client,
// reading again, gets every message whole and in order.
func TestBackloggedConnectionKeepsOrder(t *testing.T) {
	c, client := pair(t, 64<<20)
	const n = 3000
	payload := strings.Repeat("x", 8<<10) // 24 MB in all: more than loopback's socket buffers hold
	fellBack := false
	for i := range n {
		if !c.Enqueue(fmt.Appendf(nil, `{"i":%d,"p":"%s"}`, i, payload)) {
			t.Fatalf("message %d refused", i)
		}
		c.mu.Lock()
		fellBack = fellBack || c.pending != nil || len(c.queue) > 0
		c.mu.Unlock()
	}
	if !fellBack {
		t.Fatal("the socket took everything: the test did not exercise the pump")
	}
	next := 0
	_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
	for next < n {
		_, data, err := client.ReadMessage()
		if err != nil {
			t.Fatalf("after %d messages: %v", next, err)
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			var i int
			if _, err := fmt.Sscanf(string(line), `{"i":%d,`, &i); err != nil || i != next {
				t.Fatalf("got message %d (%v), want %d", i, err, next)
			}
			next++
		}
	}
}

// Pings are answered through the same writer as data, so a pong never lands
// inside a half-written frame: here every ping arrives while the socket is
// full and a frame is half out, and the pump is held off (as if the pings
// came between an inline write falling short and the pump taking over).
func TestPongsDoNotInterleaveWithData(t *testing.T) {
	c, client := pair(t, 64<<20)
	pongs := make(chan string, 100)
	client.SetPongHandler(func(s string) error { pongs <- s; return nil })
	payload := strings.Repeat("y", 64<<10)
	const n, pings = 300, 5
	for i := range n { // ~19 MB: the client is not reading yet
		c.Enqueue(fmt.Appendf(nil, `{"i":%d,"p":"%s"}`, i, payload))
	}
	c.mu.Lock()
	backlogged := c.pending != nil || len(c.queue) > 0
	c.writing = true // hold the pump off
	c.mu.Unlock()
	if !backlogged {
		t.Fatal("the socket took everything: no half-written frame to protect")
	}
	for i := range pings {
		if err := client.WriteControl(websocket.PingMessage, fmt.Appendf(nil, "ping-%d", i), time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		queued := len(c.control)
		c.mu.Unlock()
		if queued == pings {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pongs queued behind the data", queued, pings)
		}
	}
	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
	c.signal()
	next := 0
	_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
	for next < n {
		_, data, err := client.ReadMessage() // pongs are handled inside ReadMessage
		if err != nil {
			t.Fatalf("after %d messages: %v", next, err)
		}
		next += bytes.Count(data, []byte("\n")) + 1
	}
	// The last pongs may trail the data: read (nothing) a while longer.
	_ = client.SetReadDeadline(time.Now().Add(time.Second))
	_, _, _ = client.ReadMessage()
	if len(pongs) != pings {
		t.Fatalf("%d pongs, want %d", len(pongs), pings)
	}
	for i := range pings {
		if p := <-pongs; p != fmt.Sprintf("ping-%d", i) {
			t.Fatalf("pong %q, want ping-%d", p, i)
		}
	}
}

// The pump runs only while it has work: a connection whose writes all went
// out inline never starts one, and one that fell behind stops it once the
// backlog is written.
func TestPumpOnlyWhileNeeded(t *testing.T) {
	c, client := pair(t, 64<<20)
	pumping := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pumping
	}
	for i := range 10 {
		c.Enqueue(fmt.Appendf(nil, `{"i":%d}`, i))
		if pumping() {
			t.Fatal("a pump started for writes the socket took at once")
		}
	}
	payload := strings.Repeat("z", 64<<10)
	for i := range 300 { // ~19 MB: the socket fills, the pump takes over
		c.Enqueue(fmt.Appendf(nil, `{"i":%d,"p":"%s"}`, i, payload))
	}
	if !pumping() {
		t.Fatal("no pump for a full socket")
	}
	_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
	for got := 0; got < 310; {
		_, data, err := client.ReadMessage()
		if err != nil {
			t.Fatalf("after %d messages: %v", got, err)
		}
		got += bytes.Count(data, []byte("\n")) + 1
	}
	for deadline := time.Now().Add(5 * time.Second); pumping(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pump outlived its backlog")
		}
	}
}

// The write queue's byte bound applies to what waits behind a full socket,
// not to a batch the socket takes at once: a burst of publications larger
// than the bound reaches a client that keeps up.
func TestBatchLargerThanTheQueueBoundGoesOutInline(t *testing.T) {
	c, client := pair(t, 1<<10)
	var batch [][]byte
	for i := range 10 {
		batch = append(batch, fmt.Appendf(nil, `{"i":%d,"p":"%s"}`, i, strings.Repeat("q", 500)))
	}
	if !c.EnqueueBatch(batch) {
		t.Fatal("a 5 KB batch on an idle connection was refused by a 1 KB queue bound")
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := client.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("\n")) + 1; n != 10 {
		t.Fatalf("%d messages in the frame, want 10", n)
	}
}
