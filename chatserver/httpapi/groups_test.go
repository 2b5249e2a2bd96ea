package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// A backend creates a group, adds a member and bans one; a banned member's
// live subscription ends with 2101; errors come back as codes and statuses.
func TestGroupsAPI(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	api := func(path, body string) (int, string) {
		return call(t, http.MethodPost, srv.Admin+"/api/groups/"+path, servertest.APIKey, body)
	}
	if code, _ := call(t, http.MethodPost, srv.Admin+"/api/groups/create", "", `{"owner":"alice"}`); code != http.StatusUnauthorized {
		t.Fatalf("no key: %d", code)
	}
	code, body := api("create", `{"id":"team","owner":"alice","title":"Team","members":["bob"]}`)
	if code != http.StatusOK || !strings.Contains(body, `"channel":"grp:team"`) {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, body := api("add", `{"channel":"grp:team","user":"mallory"}`); code != http.StatusOK {
		t.Fatalf("add: %d %s", code, body)
	}
	mallory := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "mallory"))
	sub := servertest.Subscribe(t, mallory, "grp:team", centrifuge.SubscriptionConfig{})
	if code, body := api("ban", `{"channel":"grp:team","user":"mallory","reason":"spam"}`); code != http.StatusOK {
		t.Fatalf("ban: %d %s", code, body)
	}
	if e := servertest.Recv(t, sub.Unsubscribed, "unsubscribe"); e.Code != 2101 {
		t.Fatalf("banned subscription ended with %d %q", e.Code, e.Reason)
	}
	code, body = api("members", `{"channel":"grp:team"}`)
	if code != http.StatusOK || !strings.Contains(body, `"user":"alice","role":"owner"`) || strings.Contains(body, "mallory") {
		t.Fatalf("members: %d %s", code, body)
	}
	if code, body := api("audit", `{"channel":"grp:team"}`); code != http.StatusOK || !strings.Contains(body, `"actor":"api","action":"ban","target":"mallory"`) {
		t.Fatalf("audit: %d %s", code, body)
	}
	for _, c := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"create", `{"title":"no owner"}`, http.StatusBadRequest, `"code":107`},
		{"create", `{"id":"team","owner":"bob"}`, http.StatusBadRequest, `"code":107`},
		{"add", `{"channel":"grp:nope","user":"x"}`, http.StatusBadRequest, `"code":102`},
		{"add", `{"channel":"grp:team","user":"mallory"}`, http.StatusForbidden, `"code":103`},
		{"join", `{}`, http.StatusNotFound, `"code":104`},
		{"ban", `not json`, http.StatusBadRequest, `"code":107`},
	} {
		if code, body := api(c.path, c.body); code != c.status || !strings.Contains(body, c.code) {
			t.Errorf("%s %s: %d %s, want %d %s", c.path, c.body, code, body, c.status, c.code)
		}
	}
}
