package transport_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/centrifugal/protocol/cfjson"

	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// markerReader reads a connection to the end, reporting when the bytes
// seen so far contain want (checked across chunk boundaries).
type markerReader struct {
	mu   sync.Mutex
	want []byte
	seen chan struct{}
}

func (m *markerReader) expect(want string) chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.want, m.seen = []byte(want), make(chan struct{})
	return m.seen
}

func (m *markerReader) run(r *bufio.Reader) {
	var tail []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := append(tail, buf[:n]...)
			m.mu.Lock()
			if m.want != nil && bytes.Contains(chunk, m.want) {
				close(m.seen)
				m.want = nil
			}
			m.mu.Unlock()
			tail = append(tail[:0], chunk[max(0, len(chunk)-64):]...)
		}
		if err != nil {
			return
		}
	}
}

// streamBenchClient connects an HTTP-streaming (JSON) client over a raw
// socket and subscribes it to channel through /emulation.
func streamBenchClient(b *testing.B, srv *servertest.Server, token, channel string) (net.Conn, *bufio.Reader) {
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		b.Fatal(err)
	}
	body := servertest.EncodeCommands(b, protocol.TypeJSON, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{Token: token}})
	fmt.Fprintf(conn, "POST /connection/http_stream HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", srv.Addr, len(body), body)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		b.Fatal(err)
	}
	chunked := bufio.NewReader(resp.Body)
	line, err := chunked.ReadBytes('\n')
	if err != nil {
		b.Fatal(err)
	}
	var rep protocol.Reply
	if err := cfjson.Unmarshal(line, &rep, 0); err != nil || rep.Connect == nil {
		b.Fatalf("connect reply %q: %v", line, err)
	}
	if code, _ := servertest.PostEmulation(b, nil, srv.HTTP, protocol.TypeJSON, rep.Connect.Node, rep.Connect.Session,
		servertest.EncodeCommands(b, protocol.TypeJSON, &protocol.Command{Id: 2, Subscribe: &protocol.SubscribeRequest{Channel: channel}})); code != http.StatusNoContent {
		b.Fatalf("subscribe: %d", code)
	}
	return conn, chunked
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDeliveryCost fans publications out to 200 subscribers of one
// channel over WebSocket and over HTTP-streaming (JSON). One op is one
// publication delivered to every subscriber; ns/delivery divides by the
// subscribers; cpu-ns/delivery is the process's CPU time per delivery
// (client reading included: both sides run in this process).
func BenchmarkDeliveryCost(b *testing.B) {
	const subscribers = 200
	for _, kind := range []string{"websocket", "http_stream"} {
		b.Run(kind, func(b *testing.B) {
			cfg := servertest.Config()
			cfg.Limits.ConnectionsPerUser = 0
			cfg.Limits.PublishesPerSecond = 0
			srv := servertest.Start(b, cfg, nil, nil)
			token := servertest.Token(b, "bench")
			channel := "open:cost-" + kind
			readers := make([]*markerReader, subscribers)
			var conns []net.Conn
			for i := range readers {
				readers[i] = &markerReader{}
				var (
					conn net.Conn
					r    *bufio.Reader
				)
				if kind == "websocket" {
					frame := []byte(`{"id":1,"connect":{"token":"` + token + `"}}` + "\n" + `{"id":2,"subscribe":{"channel":"` + channel + `"}}`)
					conn = minimalClient(b, srv.Addr, frame)
					r = bufio.NewReader(conn)
				} else {
					conn, r = streamBenchClient(b, srv, token, channel)
				}
				conns = append(conns, conn)
				go readers[i].run(r)
			}
			defer func() {
				for _, c := range conns {
					_ = c.Close()
				}
				for srv.Conns.NumConns() > 0 {
					time.Sleep(time.Millisecond)
				}
			}()
			deadline := time.Now().Add(30 * time.Second)
			for srv.Node.Hub().NumSubscribers(channel) < subscribers {
				if time.Now().After(deadline) {
					b.Fatalf("only %d of %d subscribed", srv.Node.Hub().NumSubscribers(channel), subscribers)
				}
				time.Sleep(time.Millisecond)
			}
			cpuBefore := cpuTime()
			b.ResetTimer()
			round := 0
			for b.Loop() {
				round++
				marker := "end-" + strconv.Itoa(round) + "-"
				seen := make([]chan struct{}, subscribers)
				for i, r := range readers {
					seen[i] = r.expect(marker)
				}
				if _, err := srv.Node.Publish(ctx(b), channel, []byte(`{"text":"`+marker+`"}`), nil, node.PublishOptions{}); err != nil {
					b.Fatal(err)
				}
				for _, s := range seen {
					select {
					case <-s:
					case <-time.After(10 * time.Second):
						b.Fatal("a subscriber did not get the publication")
					}
				}
			}
			deliveries := float64(b.N * subscribers)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
			b.ReportMetric(float64((cpuTime()-cpuBefore).Nanoseconds())/deliveries, "cpu-ns/delivery")
		})
	}
}
