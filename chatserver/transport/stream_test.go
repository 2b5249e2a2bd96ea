package transport_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/servertest"
)

var streamKinds = []struct{ kind, proto string }{
	{"http_stream", "json"},
	{"http_stream", "protobuf"},
	{"sse", "json"},
}

// Every kind of stream speaks the protocol of the WebSocket: connect on the
// stream's request, then subscribe, publish, history, presence and ping
// through /emulation, replies and publications on the stream.
func TestStreamsSpeakTheProtocol(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, k := range streamKinds {
		t.Run(k.kind+"/"+k.proto, func(t *testing.T) {
			s := servertest.DialStream(t, nil, srv.HTTP, k.kind, k.proto, servertest.Token(t, "alice"))
			if s.Node != srv.Node.ID() {
				t.Fatalf("connect reply names node %q, want %q", s.Node, srv.Node.ID())
			}
			ch := "room:" + k.kind + k.proto
			code, ids := s.Emulate(t, srv.HTTP,
				&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: ch}},
				&protocol.Command{Publish: &protocol.PublishRequest{Channel: ch, Data: []byte(`{"text":"hi"}`)}})
			if code != http.StatusNoContent {
				t.Fatalf("emulation: %d", code)
			}
			if rep := s.Reply(t, ids[0]); rep.Error != nil || rep.Subscribe == nil {
				t.Fatalf("subscribe: %+v", rep)
			}
			pub := s.WaitPush(t, "publication", func(p *protocol.Push) bool { return p.Pub != nil && p.Channel == ch })
			if string(pub.Pub.Data) != `{"text":"hi"}` {
				t.Fatalf("publication data %q", pub.Pub.Data)
			}
			code, ids = s.Emulate(t, srv.HTTP,
				&protocol.Command{History: &protocol.HistoryRequest{Channel: ch, Limit: 10}},
				&protocol.Command{Presence: &protocol.PresenceRequest{Channel: ch}},
				&protocol.Command{Ping: &protocol.PingRequest{}})
			if code != http.StatusNoContent {
				t.Fatalf("emulation: %d", code)
			}
			if rep := s.Reply(t, ids[0]); rep.History == nil || len(rep.History.Publications) != 1 {
				t.Fatalf("history: %+v", rep)
			}
			if rep := s.Reply(t, ids[1]); rep.Presence == nil || len(rep.Presence.Presence) != 1 {
				t.Fatalf("presence: %+v", rep)
			}
			if rep := s.Reply(t, ids[2]); rep.Error != nil || rep.Ping == nil {
				t.Fatalf("ping: %+v", rep)
			}
		})
	}
	waitNoConns(t, srv)
}

func waitNoConns(t *testing.T, srv *servertest.Server) {
	t.Helper()
	deadline := time.Now().Add(servertest.Timeout)
	for srv.Conns.NumConns() > 0 || srv.Node.Hub().NumConns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections left: %d transport, %d hub", srv.Conns.NumConns(), srv.Node.Hub().NumConns())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The response tells caches and buffering proxies to keep out of the way.
func TestStreamHeaders(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, k := range streamKinds {
		s := servertest.DialStream(t, nil, srv.HTTP, k.kind, k.proto, servertest.Token(t, "alice"))
		h := s.Resp.Header
		if !strings.Contains(h.Get("Cache-Control"), "no-cache") || h.Get("X-Accel-Buffering") != "no" {
			t.Errorf("%s/%s: headers %v", k.kind, k.proto, h)
		}
		want := map[string]string{"sse": "text/event-stream; charset=utf-8", "json": "application/x-ndjson", "protobuf": "application/octet-stream"}
		key := k.proto
		if k.kind == "sse" {
			key = "sse"
		}
		if got := h.Get("Content-Type"); got != want[key] {
			t.Errorf("%s/%s: Content-Type %q, want %q", k.kind, k.proto, got, want[key])
		}
		s.Close()
	}
}

// Disconnect codes reach the client as a disconnect push, then the stream
// ends: a bad command (3501), and a server-side disconnect (3503).
func TestStreamDisconnectCodes(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, k := range streamKinds {
		t.Run(k.kind+"/"+k.proto, func(t *testing.T) {
			s := servertest.DialStream(t, nil, srv.HTTP, k.kind, k.proto, servertest.Token(t, "bob"))
			// A command without id (only send may omit it) is a protocol violation.
			if code, _ := servertest.PostEmulation(t, nil, srv.HTTP, s.Proto, s.Node, s.Session,
				servertest.EncodeCommands(t, s.Proto, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "room:1"}})); code != http.StatusNoContent {
				t.Fatalf("emulation: %d", code)
			}
			if code := s.WaitEnd(t); code != codes.DisconnectBadRequest.Code {
				t.Fatalf("disconnect code %d, want %d", code, codes.DisconnectBadRequest.Code)
			}
			// The session is gone: its commands get 404, the client reconnects.
			if code, _ := s.Emulate(t, srv.HTTP, &protocol.Command{Ping: &protocol.PingRequest{}}); code != http.StatusNotFound {
				t.Fatalf("emulation to a closed session: %d, want 404", code)
			}
			s2 := servertest.DialStream(t, nil, srv.HTTP, k.kind, k.proto, servertest.Token(t, "bob"))
			if err := srv.Node.DisconnectUser(ctx(t), "bob", codes.Disconnect{}); err != nil {
				t.Fatal(err)
			}
			if code := s2.WaitEnd(t); code != codes.DisconnectForceNoReconnect.Code {
				t.Fatalf("disconnect code %d, want %d", code, codes.DisconnectForceNoReconnect.Code)
			}
		})
	}
	waitNoConns(t, srv)
}

// Bad requests get clear errors: unknown session, missing fields, bodies
// past the bound, refused origins, wrong methods.
func TestStreamAndEmulationRequestErrors(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.MaxMessageBytes = 1024
	srv := servertest.Start(t, cfg, nil, nil)
	big := bytes.Repeat([]byte("x"), 4096)
	post := func(path, ctype string, body []byte, header http.Header) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.HTTP+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	tests := []struct {
		name     string
		path     string
		body     []byte
		header   http.Header
		want     int
		contains string
	}{
		{"unknown session", "/emulation", []byte(`{"node":"` + srv.Node.ID() + `","session":"nope","data":"{\"id\":1,\"ping\":{}}"}`), nil, 404, "session not found"},
		{"no node", "/emulation", []byte(`{"session":"s","data":"{}"}`), nil, 400, "node is required"},
		{"no session", "/emulation", []byte(`{"node":"n","data":"{}"}`), nil, 400, "session is required"},
		{"data not a string", "/emulation", []byte(`{"node":"n","session":"s","data":{"id":1}}`), nil, 400, "data must be a JSON string"},
		{"not JSON", "/emulation", []byte(`hello`), nil, 400, "not a JSON EmulationRequest"},
		{"emulation too big", "/emulation", append(append([]byte(`{"node":"n","session":"s","data":"`), big...), `"}`...), nil, 413, "limits.maxMessageBytes"},
		{"connect too big", "/connection/http_stream", big, nil, 413, "limits.maxMessageBytes"},
		{"no connect command", "/connection/http_stream", nil, nil, 400, "connect command is required"},
		{"refused origin", "/connection/http_stream", []byte(`{}`), http.Header{"Origin": {"https://evil.example"}}, 403, "origin"},
		{"refused origin on emulation", "/emulation", []byte(`{}`), http.Header{"Origin": {"https://evil.example"}}, 403, "origin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(tc.path, "application/json", tc.body, tc.header)
			if code != tc.want || !strings.Contains(body, tc.contains) {
				t.Fatalf("%d %q, want %d containing %q", code, body, tc.want, tc.contains)
			}
		})
	}
	resp, err := http.Get(srv.HTTP + "/connection/http_stream")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET http_stream: %d, want 405", resp.StatusCode)
	}
	resp, err = http.Get(srv.HTTP + "/connection/sse")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET sse without cf_connect: %d, want 400", resp.StatusCode)
	}
}

// A listed origin may connect from another site (CORS with credentials),
// and a browser's preflight is answered.
func TestStreamCrossOrigin(t *testing.T) {
	cfg := servertest.Config()
	cfg.HTTP.AllowedOrigins = []string{"https://app.example"}
	srv := servertest.Start(t, cfg, nil, nil)
	req, _ := http.NewRequest(http.MethodOptions, srv.HTTP+"/emulation", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

// The per-user connection limit counts stream connections like WebSockets.
func TestStreamConnectionLimit(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.ConnectionsPerUser = 1
	srv := servertest.Start(t, cfg, nil, nil)
	servertest.DialStream(t, nil, srv.HTTP, "sse", "json", servertest.Token(t, "carol"))
	s := servertest.OpenStream(t, nil, srv.HTTP, "http_stream", "json",
		servertest.EncodeCommands(t, protocol.TypeJSON, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{Token: servertest.Token(t, "carol")}}))
	rep := s.Next(servertest.Timeout)
	if rep == nil || rep.Error == nil && (rep.Push == nil || rep.Push.Disconnect == nil) {
		t.Fatalf("second connection of a user limited to one: %+v", rep)
	}
}

// With a broker that cannot address one node (memory), emulation requests
// reach the holder through the control fanout; the other nodes drop them.
func TestEmulationAcrossPeersThroughTheFanout(t *testing.T) {
	peers := servertest.Peers(t, servertest.Config(), 3)
	s := servertest.DialStream(t, nil, peers[0].HTTP, "http_stream", "json", servertest.Token(t, "alice"))
	code, ids := s.Emulate(t, peers[1].HTTP, &protocol.Command{Presence: &protocol.PresenceRequest{Channel: "open:fanout"}})
	if code != http.StatusNoContent {
		t.Fatalf("emulation through another peer: %d", code)
	}
	if rep := s.Reply(t, ids[0]); rep.Error != nil || rep.Presence == nil {
		t.Fatalf("presence: %+v", rep)
	}
	code, _ = servertest.PostEmulation(t, nil, peers[2].HTTP, protocol.TypeJSON, s.Node, "not-a-session", []byte(`{"id":9,"ping":{}}`))
	if code != http.StatusNotFound {
		t.Fatalf("unknown session through another peer: %d, want 404", code)
	}
}

// The token comes with the stream's first request; a refresh through
// /emulation keeps the stream past the first token's expiry, and a stream
// that never refreshes ends with 3005. A bad token ends it with 3500.
func TestStreamTokenRefresh(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	short := func(user string) string {
		return servertest.Sign(t, servertest.TokenClaims(user, 2*time.Second), servertest.Secret)
	}
	for _, k := range streamKinds {
		t.Run(k.kind+"/"+k.proto, func(t *testing.T) {
			s := servertest.DialStream(t, nil, srv.HTTP, k.kind, k.proto, short("alice"))
			code, ids := s.Emulate(t, srv.HTTP, &protocol.Command{Refresh: &protocol.RefreshRequest{
				Token: servertest.Sign(t, servertest.TokenClaims("alice", time.Hour), servertest.Secret)}})
			if code != http.StatusNoContent {
				t.Fatalf("refresh: %d", code)
			}
			if rep := s.Reply(t, ids[0]); rep.Error != nil || rep.Refresh == nil || !rep.Refresh.Expires {
				t.Fatalf("refresh reply: %+v", rep)
			}
			lazy := servertest.DialStream(t, nil, srv.HTTP, k.kind, k.proto, short("bob"))
			if code := lazy.WaitEnd(t); code != 3005 {
				t.Fatalf("unrefreshed stream: disconnect %d, want 3005", code)
			}
			// Past the first token's expiry the refreshed stream still answers.
			code, ids = s.Emulate(t, srv.HTTP, &protocol.Command{Ping: &protocol.PingRequest{}})
			if code != http.StatusNoContent {
				t.Fatalf("ping after the refresh: %d", code)
			}
			if rep := s.Reply(t, ids[0]); rep.Error != nil || rep.Ping == nil {
				t.Fatalf("ping reply: %+v", rep)
			}
			bad := servertest.OpenStream(t, nil, srv.HTTP, k.kind, k.proto,
				servertest.EncodeCommands(t, s.Proto, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{Token: "not-a-token"}}))
			if code := bad.WaitEnd(t); code != 3500 {
				t.Fatalf("bad token: disconnect %d, want 3500", code)
			}
		})
	}
}
