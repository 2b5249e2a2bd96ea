package httpapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func TestMain(m *testing.M) { leakcheck.Main(m, servertest.LeakOptions()...) }

func call(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "apikey "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func TestAPI(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	api := func(path, body string) (int, string) {
		return call(t, http.MethodPost, srv.Admin+path, servertest.APIKey, body)
	}
	alice := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	sub := servertest.Subscribe(t, alice, "news:1", centrifuge.SubscriptionConfig{})
	other := servertest.Subscribe(t, alice, "news:2", centrifuge.SubscriptionConfig{})

	t.Run("key required", func(t *testing.T) {
		for _, key := range []string{"", "wrong"} {
			if code, _ := call(t, http.MethodPost, srv.Admin+"/api/publish", key, `{"channel":"news:1","data":{}}`); code != http.StatusUnauthorized {
				t.Fatalf("key %q: %d", key, code)
			}
		}
		req, _ := http.NewRequest(http.MethodPost, srv.Admin+"/api/presence", strings.NewReader(`{"channel":"room:1"}`))
		req.Header.Set("X-API-Key", servertest.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("X-API-Key header: %d", resp.StatusCode)
		}
	})
	t.Run("publish", func(t *testing.T) {
		code, body := api("/api/publish", `{"channel":"news:1","data":{"headline":"hi"},"idempotency_key":"k1"}`)
		if code != http.StatusOK || !strings.Contains(body, `"offset":1`) {
			t.Fatalf("%d %s", code, body)
		}
		if p := servertest.Recv(t, sub.Pubs, "publication"); string(p.Data) != `{"headline":"hi"}` {
			t.Fatalf("got %s", p.Data)
		}
		code, body = api("/api/publish", `{"channel":"news:1","data":{"headline":"hi"},"idempotency_key":"k1"}`)
		if code != http.StatusOK || !strings.Contains(body, `"duplicate":true`) {
			t.Fatalf("retry: %d %s", code, body)
		}
		servertest.None(t, sub.Pubs, 100*time.Millisecond, "duplicate broadcast")
	})
	t.Run("broadcast", func(t *testing.T) {
		code, body := api("/api/broadcast", `{"channels":["news:1","news:2","nope:1"],"data":{"all":true}}`)
		if code != http.StatusOK || !strings.Contains(body, `"code":102`) {
			t.Fatalf("%d %s", code, body)
		}
		servertest.Recv(t, sub.Pubs, "broadcast 1")
		servertest.Recv(t, other.Pubs, "broadcast 2")
	})
	t.Run("history", func(t *testing.T) {
		code, body := api("/api/history", `{"channel":"news:1","limit":10,"reverse":true}`)
		if code != http.StatusOK || !strings.Contains(body, `"offset":2`) || !strings.Contains(body, `"all":true`) {
			t.Fatalf("%d %s", code, body)
		}
		if code, _ := api("/api/history", `{"channel":"plain:1"}`); code != http.StatusNotFound {
			t.Fatalf("history in a namespace without: %d", code)
		}
	})
	t.Run("presence", func(t *testing.T) {
		servertest.Subscribe(t, alice, "room:api", centrifuge.SubscriptionConfig{})
		code, body := api("/api/presence", `{"channel":"room:api"}`)
		if code != http.StatusOK || !strings.Contains(body, `"num_users":1`) || !strings.Contains(body, `"user":"alice"`) {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		for _, body := range []string{``, `{`, `{"channel":""}`, `{"channel":"news:1","data":nope}`, `{"channel":"news:1","data":{},"extra":1}`} {
			if code, _ := api("/api/publish", body); code != http.StatusBadRequest {
				t.Fatalf("%q: %d, want 400", body, code)
			}
		}
		if code, _ := api("/api/disconnect", `{"user":"alice","code":1000}`); code != http.StatusBadRequest {
			t.Fatalf("disconnect code outside 3000-4999: %d", code)
		}
	})
	t.Run("disconnect", func(t *testing.T) {
		bob := servertest.NewClient(t, srv.WS, "protobuf", centrifuge.Config{Token: servertest.Token(t, "bob")})
		connected := make(chan struct{}, 1)
		disconnected := make(chan centrifuge.DisconnectedEvent, 1)
		bob.OnConnected(func(centrifuge.ConnectedEvent) { servertest.Send(connected, struct{}{}) })
		bob.OnDisconnected(func(e centrifuge.DisconnectedEvent) { servertest.Send(disconnected, e) })
		if err := bob.Connect(); err != nil {
			t.Fatal(err)
		}
		servertest.Recv(t, connected, "connect")
		if code, body := api("/api/disconnect", `{"user":"bob"}`); code != http.StatusOK {
			t.Fatalf("%d %s", code, body)
		}
		if e := servertest.Recv(t, disconnected, "disconnect"); e.Code != 3503 {
			t.Fatalf("got %d %q, want 3503 force disconnect", e.Code, e.Reason)
		}
	})
}

func TestHealthReadyMetrics(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	if code, body := call(t, http.MethodGet, srv.HTTP+"/healthz", "", ""); code != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", code, body)
	}
	if code, body := call(t, http.MethodGet, srv.HTTP+"/readyz", "", ""); code != 200 {
		t.Fatalf("readyz %d %q", code, body)
	}
	code, body := call(t, http.MethodGet, srv.Admin+"/metrics", "", "")
	for _, want := range []string{"parley_connections 1", "parley_messages_in_total{command=\"connect\"}", "parley_publish_deliver_latency_seconds_bucket", "go_goroutines"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("metrics missing %q", want)
		}
	}
	srv.Node.SetShuttingDown()
	if code, body := call(t, http.MethodGet, srv.HTTP+"/readyz", "", ""); code != http.StatusServiceUnavailable || body != "not ready\n" {
		t.Fatalf("public readyz while draining: %d %q", code, body)
	}
	if code, body := call(t, http.MethodGet, srv.Admin+"/readyz", "", ""); code != http.StatusServiceUnavailable || body != "not ready: shutting down\n" {
		t.Fatalf("admin readyz while draining: %d %q", code, body)
	}
}
