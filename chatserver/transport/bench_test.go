package transport_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// minimalClient opens a WebSocket with a hand-written handshake and sends one
// frame, so the client side costs little more than a socket and the
// measurement below is dominated by the server's per-connection state.
func minimalClient(b *testing.B, addr string, frame []byte) net.Conn {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	_, err = fmt.Fprintf(conn, "GET /connection/websocket HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("handshake: %v %v", resp, err)
	}
	// A masked text frame (mask key 0: payload unchanged).
	hdr := []byte{0x81}
	switch n := len(frame); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	default:
		hdr = append(hdr, 0x80|126, 0, 0)
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
	}
	hdr = append(hdr, 0, 0, 0, 0)
	if _, err := conn.Write(append(hdr, frame...)); err != nil {
		b.Fatal(err)
	}
	return conn
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// BenchmarkConnectionMemory reports the heap and stack held per idle
// connection that is connected and subscribed to one channel (bytes/conn).
func BenchmarkConnectionMemory(b *testing.B) {
	cfg := servertest.Config()
	cfg.Limits.ConnectionsPerUser = 0
	srv := servertest.Start(b, cfg, nil, nil)
	const n = 500
	token := servertest.Token(b, "bench")
	frame := []byte(`{"id":1,"connect":{"token":"` + token + `"}}` + "\n" + `{"id":2,"subscribe":{"channel":"open:bench"}}`)
	for b.Loop() {
		before := heap()
		conns := make([]net.Conn, 0, n)
		for range n {
			conns = append(conns, minimalClient(b, srv.Addr, frame))
		}
		deadline := time.Now().Add(30 * time.Second)
		for srv.Node.Hub().NumSubscribers("open:bench") < n {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d subscribed", srv.Node.Hub().NumSubscribers("open:bench"), n)
			}
			time.Sleep(time.Millisecond)
		}
		after := heap()
		b.ReportMetric(float64(after-before)/n, "bytes/conn")
		for _, c := range conns {
			_ = c.Close()
		}
		for srv.Conns.NumConns() > 0 {
			time.Sleep(time.Millisecond)
		}
	}
}
