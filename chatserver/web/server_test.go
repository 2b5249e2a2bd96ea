package web_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// The chat server itself serves the page when web.enabled, beside its own
// routes, and serves no page when it is off.
func TestChatServerServesPageWhenEnabled(t *testing.T) {
	fetch := func(t *testing.T, url string) (int, string) {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, string(b)
	}
	t.Run("enabled", func(t *testing.T) {
		cfg := servertest.Config()
		cfg.Web.Enabled = true
		srv := servertest.Start(t, cfg, nil, nil)
		for path, want := range map[string]string{"/": "<title>Parley</title>", "/app.js": "/connection/websocket", "/app.css": ".msg"} {
			code, b := fetch(t, srv.HTTP+path)
			if code != http.StatusOK || !strings.Contains(b, want) {
				t.Errorf("GET %s: status %d, body has %q: %v", path, code, want, strings.Contains(b, want))
			}
		}
		if code, _ := fetch(t, srv.HTTP+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz shadowed by the page: status %d", code)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		cfg := servertest.Config()
		cfg.Web.Enabled = false
		srv := servertest.Start(t, cfg, nil, nil)
		if code, _ := fetch(t, srv.HTTP+"/"); code != http.StatusNotFound {
			t.Errorf("GET / with web disabled: status %d, want 404", code)
		}
		if code, _ := fetch(t, srv.HTTP+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz: status %d", code)
		}
	})
}
