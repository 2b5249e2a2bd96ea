package transport_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/servertest"
)

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), servertest.Timeout)
	t.Cleanup(cancel)
	return c
}

// Malformed input gets a protocol error or a "bad request" close, is
// counted, and never takes the server down.
func TestMalformedFrames(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	token := servertest.Token(t, "alice")
	tests := []struct {
		name      string
		proto     string
		connected bool
		frame     []byte
		close     int // expected close code, 0: the connection stays up and the reply has error wantErr
		wantErr   uint32
	}{
		{"bad JSON", "json", false, []byte(`{"id":1,"connect":`), 3501, 0},
		{"not JSON at all", "json", false, []byte("hello"), 3501, 0},
		{"JSON of the wrong shape", "json", false, []byte(`{"id":"one","connect":[]}`), 3501, 0},
		{"empty frame", "json", false, []byte{}, 3501, 0},
		{"command before connect", "json", false, []byte(`{"id":1,"subscribe":{"channel":"room:1"}}`), 3501, 0},
		{"protobuf garbage", "protobuf", false, []byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff}, 3501, 0},
		{"protobuf length past the frame", "protobuf", false, []byte{0x7f, 0x08, 0x01}, 3501, 0},
		{"second connect", "json", true, []byte(`{"id":7,"connect":{}}`), 3501, 0},
		{"command without id", "json", true, []byte(`{"subscribe":{"channel":"room:1"}}`), 3501, 0},
		{"unknown command", "json", true, []byte(`{"id":7}`), 0, 104},
		{"channel too long", "json", true, []byte(`{"id":7,"subscribe":{"channel":"room:` + strings.Repeat("x", 300) + `"}}`), 0, 107},
		{"empty channel", "protobuf", true, nil, 0, 107},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(srv.Node.Metrics().MalformedFrames)
			raw := servertest.DialRaw(t, srv.WS, tc.proto)
			if tc.connected {
				raw.Connect(t, token)
			}
			if tc.frame == nil {
				raw.Command(t, &protocol.Command{Id: 7, Subscribe: &protocol.SubscribeRequest{}})
			} else {
				raw.WriteFrame(t, tc.frame)
			}
			if tc.close != 0 {
				if code := raw.WaitClose(t); code != tc.close {
					t.Fatalf("close code %d, want %d", code, tc.close)
				}
			} else {
				rep := raw.Reply(t, 7)
				if rep.Error == nil || rep.Error.Code != tc.wantErr {
					t.Fatalf("reply %+v, want error %d", rep, tc.wantErr)
				}
				raw.Command(t, &protocol.Command{Presence: &protocol.PresenceRequest{Channel: "open:x"}})
			}
			if tc.close == 3501 && !tc.connected && testutil.ToFloat64(srv.Node.Metrics().MalformedFrames) <= before && tc.name != "command before connect" {
				t.Error("malformed frame not counted")
			}
		})
	}
	// The server still serves.
	servertest.Connect(t, srv.WS, "json", token)
}

func TestMessageSizeLimit(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.MaxMessageBytes = 4096
	srv := servertest.Start(t, cfg, nil, nil)
	t.Run("on the wire", func(t *testing.T) {
		raw := servertest.DialRaw(t, srv.WS, "json")
		raw.Connect(t, servertest.Token(t, "alice"))
		raw.WriteFrame(t, []byte(`{"id":2,"publish":{"channel":"open:x","data":"`+strings.Repeat("a", 5000)+`"}}`))
		if code := raw.WaitClose(t); code != websocket.CloseMessageTooBig {
			t.Fatalf("close %d, want 1009", code)
		}
	})
	t.Run("after decompression", func(t *testing.T) {
		d := websocket.Dialer{EnableCompression: true}
		conn, resp, err := d.Dial(srv.WS, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = resp.Body.Close()
		if !strings.Contains(resp.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate") {
			t.Fatal("server did not negotiate compression")
		}
		// 64 KiB of one letter compresses to well under the 4 KiB limit.
		msg := []byte(`{"id":1,"connect":{"token":"` + strings.Repeat("a", 65536) + `"}}`)
		conn.EnableWriteCompression(true)
		if err := conn.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(servertest.Timeout))
		_, _, err = conn.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("got %v, want close 1009", err)
		}
	})
	// Within the limit everything works, compressed or not.
	c := servertest.NewClient(t, srv.WS, "json", centrifuge.Config{Token: servertest.Token(t, "bob"), EnableCompression: true})
	connected := make(chan struct{}, 1)
	c.OnConnected(func(centrifuge.ConnectedEvent) { servertest.Send(connected, struct{}{}) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	servertest.Recv(t, connected, "connect with compression")
	if _, err := c.Publish(ctx(t), "open:x", []byte(`"`+strings.Repeat("b", 3000)+`"`)); err != nil {
		t.Fatal(err)
	}
}

func TestPublishRateLimit(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.PublishesPerSecond = 5
	srv := servertest.Start(t, cfg, nil, nil)
	c := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	limited := 0
	for range 20 {
		_, err := c.Publish(ctx(t), "open:rate", []byte(`{}`))
		var e *centrifuge.Error
		if err != nil {
			if ok := asErr(err, &e); !ok || e.Code != 111 || !e.Temporary {
				t.Fatalf("got %v, want temporary 111", err)
			}
			limited++
		}
	}
	if limited < 10 {
		t.Fatalf("%d of 20 immediate publishes limited, want at least 10 at 5/s", limited)
	}
	time.Sleep(300 * time.Millisecond) // the bucket refills
	if _, err := c.Publish(ctx(t), "open:rate", []byte(`{}`)); err != nil {
		t.Fatalf("after waiting: %v", err)
	}
}

func TestConnectionsPerUser(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.ConnectionsPerUser = 2
	srv := servertest.Start(t, cfg, nil, nil)
	servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "alice"))
	servertest.Connect(t, srv.WS, "json", servertest.Token(t, "bob"))
	c := servertest.NewClient(t, srv.WS, "json", centrifuge.Config{Token: servertest.Token(t, "alice")})
	disconnected := make(chan centrifuge.DisconnectedEvent, 1)
	c.OnDisconnected(func(e centrifuge.DisconnectedEvent) { servertest.Send(disconnected, e) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	if e := servertest.Recv(t, disconnected, "disconnect"); e.Code != 3504 {
		t.Fatalf("third connection of alice: %d %q, want 3504 connection limit", e.Code, e.Reason)
	}
}

func TestSubscriptionsPerConnection(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.SubscriptionsPerConnection = 2
	srv := servertest.Start(t, cfg, nil, nil)
	c := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice")) // + personal:#alice
	servertest.Subscribe(t, c, "room:1", centrifuge.SubscriptionConfig{})
	s := servertest.NewSub(t, c, "room:2", centrifuge.SubscriptionConfig{})
	if err := s.Subscribe(); err != nil {
		t.Fatal(err)
	}
	if e := servertest.Recv(t, s.Unsubscribed, "refusal"); e.Code != 106 {
		t.Fatalf("third subscription: %d, want 106 limit exceeded", e.Code)
	}
}

// A client that stops reading is disconnected once its write queue passes
// the byte bound, without holding up anyone else.
func TestSlowConsumerDisconnected(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.WriteQueueBytes = 64 << 10
	srv := servertest.Start(t, cfg, nil, nil)
	raw := servertest.DialRaw(t, srv.WS, "protobuf")
	raw.Connect(t, servertest.Token(t, "slow"))
	id := raw.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "open:firehose"}})
	if rep := raw.Reply(t, id); rep.Error != nil {
		t.Fatal(rep.Error)
	}
	fast := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "fast"))
	fastSub := servertest.Subscribe(t, fast, "open:firehose", centrifuge.SubscriptionConfig{})
	payload := []byte(`"` + strings.Repeat("x", 16<<10) + `"`)
	slowDisconnects := func() float64 {
		return testutil.ToFloat64(srv.Node.Metrics().Disconnects.WithLabelValues("3008"))
	}
	// The raw client reads nothing: socket buffers fill, then its queue.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; slowDisconnects() == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("slow consumer never disconnected")
		}
		if _, err := srv.Node.Publish(ctx(t), "open:firehose", payload, nil, node.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		<-fastSub.Pubs // the fast reader keeps up the whole time
	}
	// The slow connection is gone (possibly without a close frame: it was not reading).
	if _, err := raw.WaitCloseErr(); err != nil {
		t.Fatal(err)
	}
}

func TestPingPong(t *testing.T) {
	cfg := servertest.Config()
	cfg.HTTP.PingInterval = config.Duration(time.Second)
	cfg.HTTP.PongTimeout = config.Duration(500 * time.Millisecond)
	srv := servertest.Start(t, cfg, nil, nil)
	c := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "alice"))
	raw := servertest.DialRaw(t, srv.WS, "json")
	res := raw.Connect(t, servertest.Token(t, "mute"))
	if res.Ping != 1 || !res.Pong {
		t.Fatalf("connect result ping=%d pong=%v", res.Ping, res.Pong)
	}
	// The raw client gets a ping (an empty reply) and never answers.
	reps, err := raw.Read(3 * time.Second)
	if err != nil || len(reps) != 1 || reps[0].Id != 0 || reps[0].Push != nil {
		t.Fatalf("ping: %+v %v", reps, err)
	}
	if code := raw.WaitClose(t); code != 3012 {
		t.Fatalf("close %d, want 3012 no pong", code)
	}
	// centrifuge-go answers pings and stays connected through several.
	if c.State() != centrifuge.StateConnected {
		t.Fatalf("state %s", c.State())
	}
	// A stale connection that never sends connect is closed too.
	stale := servertest.DialRaw(t, srv.WS, "json")
	if code := stale.WaitClose(t); code != 3502 {
		t.Fatalf("close %d, want 3502 stale", code)
	}
}

func TestOriginCheck(t *testing.T) {
	cfg := servertest.Config()
	cfg.HTTP.AllowedOrigins = []string{"https://chat.example"}
	srv := servertest.Start(t, cfg, nil, nil)
	for origin, want := range map[string]int{"https://chat.example": http.StatusSwitchingProtocols, "https://evil.example": http.StatusForbidden} {
		conn, resp, err := websocket.DefaultDialer.Dial(srv.WS, http.Header{"Origin": {origin}})
		if conn != nil {
			conn.Close()
		}
		if resp == nil {
			t.Fatalf("%s: %v", origin, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: status %d, want %d", origin, resp.StatusCode, want)
		}
	}
}

func asErr(err error, target **centrifuge.Error) bool {
	e, ok := err.(*centrifuge.Error)
	if ok {
		*target = e
	}
	return ok
}
