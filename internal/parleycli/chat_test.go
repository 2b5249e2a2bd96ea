package parleycli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/internal/parleycli"
)

// syncBuffer is a bytes.Buffer safe to read while the command writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run runs the CLI in-process and returns its exit status, stdout and stderr.
func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut syncBuffer
	code := parleycli.Main(context.Background(), args, parleycli.Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" },
	})
	return code, out.String(), errOut.String()
}

func tokenFile(t *testing.T, user string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(servertest.Token(t, user)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type storedPub struct {
	Offset uint64                 `json:"offset"`
	Data   json.RawMessage        `json:"data"`
	Info   *struct{ User string } `json:"info"`
	Tags   map[string]string      `json:"tags"`
}

// apiHistory reads a channel's history through the server HTTP API: an
// independent view of what the CLI stored.
func apiHistory(t *testing.T, srv *servertest.Server, channel string) []storedPub {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"channel": channel, "limit": -1})
	req, _ := http.NewRequest(http.MethodPost, srv.Admin+"/api/history", bytes.NewReader(body))
	req.Header.Set("X-API-Key", servertest.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Result struct {
			Publications []storedPub `json:"publications"`
		} `json:"result"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("api history: status %d: %v", res.StatusCode, err)
	}
	return out.Result.Publications
}

func apiPublish(t *testing.T, srv *servertest.Server, channel, text string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": map[string]string{"text": text}})
	req, _ := http.NewRequest(http.MethodPost, srv.Admin+"/api/publish", bytes.NewReader(body))
	req.Header.Set("X-API-Key", servertest.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("api publish: status %d", res.StatusCode)
	}
}

func texts(pubs []storedPub) []string {
	var out []string
	for _, p := range pubs {
		var m struct{ Text string }
		_ = json.Unmarshal(p.Data, &m)
		out = append(out, m.Text)
	}
	return out
}

func TestChatNonInteractiveSendsEveryLineOnce(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	code, stdout, stderr := run(t, "hello\n\n  \nworld\r\n//slash is literal\n",
		"chat", "--url", srv.HTTP, "--token-file", tokenFile(t, "alice"), "-n", "lobby")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr)
	}
	if stdout != "" || stderr != "" {
		t.Errorf("non-interactive text mode should be quiet; stdout %q stderr %q", stdout, stderr)
	}
	pubs := apiHistory(t, srv, "room:lobby")
	if got, want := strings.Join(texts(pubs), "|"), "hello|world|/slash is literal"; got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}
	for _, p := range pubs {
		if p.Info == nil || p.Info.User != "alice" {
			t.Errorf("publication %d not attributed to alice: %+v", p.Offset, p.Info)
		}
	}
}

func TestChatJSONReportsWhatWasSent(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	code, stdout, stderr := run(t, "one\ntwo\n",
		"chat", "--url", srv.WS, "--token-file", tokenFile(t, "alice"), "--non-interactive", "--json", "room:json")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr)
	}
	var offsets []uint64
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var e parleycli.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if e.Type != "sent" || e.Channel != "room:json" {
			t.Errorf("unexpected event %+v", e)
		}
		offsets = append(offsets, e.Offset)
	}
	if len(offsets) != 2 || offsets[0] != 1 || offsets[1] != 2 {
		t.Errorf("sent offsets %v, want [1 2]", offsets)
	}
}

func TestChatEditAndDeleteCommands(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	tok := tokenFile(t, "alice")
	code, _, stderr := run(t, "first\nsecond\n/edit 1 first, fixed\n/delete 2\n/quit\nnever sent\n",
		"chat", "--url", srv.HTTP, "--token-file", tok, "-n", "room:edits")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr)
	}
	pubs := apiHistory(t, srv, "room:edits")
	if len(pubs) != 4 {
		t.Fatalf("stored %d publications, want 4 (2 messages, 1 edit, 1 delete): %v", len(pubs), texts(pubs))
	}
	if pubs[2].Tags["type"] != "edit" || pubs[2].Tags["ref"] != "1" || texts(pubs)[2] != "first, fixed" {
		t.Errorf("edit stored as %+v", pubs[2])
	}
	if pubs[3].Tags["type"] != "delete" || pubs[3].Tags["ref"] != "2" {
		t.Errorf("delete stored as %+v", pubs[3])
	}

	// Someone else cannot edit alice's message: a clear error, exit status 1.
	code, _, stderr = run(t, "/edit 1 hijacked\n", "chat", "--url", srv.HTTP, "--token-file", tokenFile(t, "mallory"), "-n", "room:edits")
	if code != 1 || !strings.Contains(stderr, "edit #1") || !strings.Contains(stderr, "103") {
		t.Errorf("mallory's edit: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = run(t, "/frobnicate\n", "chat", "--url", srv.HTTP, "--token-file", tok, "-n", "room:edits")
	if code != 1 || !strings.Contains(stderr, "unknown command /frobnicate") {
		t.Errorf("unknown command: exit %d, stderr %q", code, stderr)
	}
}

// In follow mode the CLI prints what others say, as JSON lines, and the
// history it was asked for first.
func TestChatFollowPrintsLiveEventsAsJSON(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	const channel = "room:live"
	apiPublish(t, srv, channel, "before 1")
	apiPublish(t, srv, channel, "before 2")

	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	var errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- parleycli.Main(ctx, []string{"chat", "--url", srv.HTTP, "--token-file", tokenFile(t, "alice"), "--json", "--last", "1", channel},
			parleycli.Env{Stdin: stdinR, Stdout: outW, Stderr: &errOut, Getenv: func(string) string { return "" }})
		outW.Close()
	}()
	events := make(chan parleycli.Event, 100)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			var e parleycli.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("not JSON: %q", sc.Text())
				continue
			}
			events <- e
		}
		close(events)
	}()
	next := func(what string) parleycli.Event {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("output ended before %s; stderr: %s", what, errOut.String())
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s within 10s; stderr: %s", what, errOut.String())
		}
		return parleycli.Event{}
	}
	if e := next("history"); e.Type != "message" || e.Text != "before 2" || e.Offset != 2 {
		t.Fatalf("first event %+v, want the last history message", e)
	}

	// bob joins through the real Go SDK, types, speaks, and edits.
	bob := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "bob"))
	servertest.Subscribe(t, bob, channel, centrifuge.SubscriptionConfig{})
	e := next("join")
	if e.Type == "join" && e.User == "alice" { // alice's own join comes first
		e = next("bob's join")
	}
	if e.Type != "join" || e.User != "bob" {
		t.Fatalf("want bob's join, got %+v", e)
	}
	rpc := func(method string, v any) {
		data, _ := json.Marshal(v)
		if _, err := bob.RPC(context.Background(), method, data); err != nil {
			t.Fatalf("bob %s: %v", method, err)
		}
	}
	rpc("typing", map[string]any{"channel": channel})
	if e := next("typing"); e.Type != "typing" || e.User != "bob" || e.Offset != 0 {
		t.Fatalf("want bob typing, got %+v", e)
	}
	rpc("publish", map[string]any{"channel": channel, "data": map[string]string{"text": "hi alice"}})
	if e := next("bob's message"); e.Type != "message" || e.User != "bob" || e.Text != "hi alice" || e.Offset != 3 {
		t.Fatalf("want bob's message at offset 3, got %+v", e)
	}
	rpc("edit", map[string]any{"channel": channel, "offset": 3, "data": map[string]string{"text": "hi alice!"}})
	if e := next("bob's edit"); e.Type != "edit" || e.Ref != 3 || e.Text != "hi alice!" {
		t.Fatalf("want bob's edit of #3, got %+v", e)
	}
	rpc("read", map[string]any{"channel": channel, "offset": 4})
	if e := next("bob's read receipt"); e.Type != "read" || e.Offset != 0 || string(e.Data) != `{"reads":[{"user":"bob","last_read":4}]}` {
		t.Fatalf("want bob's read receipt at 4, got %+v (data %s)", e, e.Data)
	}

	// alice speaks from stdin: her own message comes back, then the ack.
	if _, err := io.WriteString(stdinW, "hello bob\n"); err != nil {
		t.Fatal(err)
	}
	got := map[string]parleycli.Event{}
	for len(got) < 2 {
		e := next("alice's message and ack")
		got[e.Type] = e
	}
	if m := got["message"]; m.User != "alice" || m.Text != "hello bob" || got["sent"].Offset != m.Offset {
		t.Fatalf("alice's message %+v, ack %+v", m, got["sent"])
	}

	// stdin ending does not end a follow-mode chat; an interrupt does, with status 0.
	stdinW.Close()
	bob.Close()
	if e := next("bob's leave"); e.Type != "leave" || e.User != "bob" {
		t.Fatalf("want bob's leave, got %+v", e)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after interrupt; stderr: %s", code, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("chat did not stop after the interrupt")
	}
}

func TestChatErrorsAreClear(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no room", []string{"chat", "--url", srv.HTTP}, 2, "give exactly one ROOM"},
		{"bad url", []string{"chat", "--url", "ftp://x", "room:a"}, 2, "scheme must be ws, wss, http or https"},
		{"forged token", []string{"chat", "--url", srv.HTTP, "--token", servertest.Sign(t, servertest.TokenClaims("eve", time.Hour), []byte("not-the-key-0123456789abcdef012345")), "-n", "room:a"}, 1, "connect to"},
		{"unknown namespace", []string{"chat", "--url", srv.HTTP, "--token-file", tokenFile(t, "alice"), "-n", "nosuch:room"}, 1, "subscribe nosuch:room"},
		{"nobody listening", []string{"chat", "--url", "ws://127.0.0.1:1", "--timeout", "500ms", "-n", "room:a"}, 1, "connect to ws://127.0.0.1:1/connection/websocket"},
		{"both tokens", []string{"chat", "--url", srv.HTTP, "--token", "x", "--token-file", "y", "room:a"}, 2, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, "", tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.want)
			}
			if strings.Contains(stderr, "eyJ") {
				t.Errorf("a token leaked into the error output: %q", stderr)
			}
		})
	}
}

func TestWebSocketURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8000":                        "ws://127.0.0.1:8000/connection/websocket",
		"https://chat.example.org/":                    "wss://chat.example.org/connection/websocket",
		"ws://127.0.0.1:8000":                          "ws://127.0.0.1:8000/connection/websocket",
		"wss://chat.example.org/custom/path":           "wss://chat.example.org/custom/path",
		"ws://127.0.0.1:8000/connection/websocket?x=1": "ws://127.0.0.1:8000/connection/websocket?x=1",
	} {
		got, err := parleycli.WebSocketURL(in)
		if err != nil || got != want {
			t.Errorf("WebSocketURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "http://", "://"} {
		if _, err := parleycli.WebSocketURL(bad); err == nil {
			t.Errorf("WebSocketURL(%q) accepted", bad)
		}
	}
}
