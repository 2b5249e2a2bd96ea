package parleycli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/internal/parleycli"
)

func TestHistoryTextAppliesEditsAndDeletes(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	tok := tokenFile(t, "alice")
	apiPublish(t, srv, "room:h", "from the server")
	if code, _, stderr := run(t, "one\ntwo\nthree\n/edit 3 two, edited\n/delete 4\n", "chat", "--url", srv.HTTP, "--token-file", tok, "-n", "h"); code != 0 {
		t.Fatalf("seed: %s", stderr)
	}
	// "room" lets only members read history: the CLI joins quietly to read it.
	code, stdout, stderr := run(t, "", "history", "--url", srv.HTTP, "--token-file", tokenFile(t, "bob"), "h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "#1 server: from the server\n#2 alice: one\n#3 alice: two, edited (edited)\n#4 alice: [deleted]\n"
	if stdout != want {
		t.Errorf("history:\n%s\nwant:\n%s", stdout, want)
	}

	code, stdout, _ = run(t, "", "history", "--url", srv.HTTP, "--token-file", tok, "--raw", "room:h")
	if code != 0 || !strings.Contains(stdout, "#5 alice edited #3: two, edited\n#6 alice deleted #4\n") {
		t.Errorf("raw history (exit %d):\n%s", code, stdout)
	}

	// --limit takes the newest; --since pages forward from a position.
	code, stdout, _ = run(t, "", "history", "--url", srv.HTTP, "--token-file", tok, "--limit", "2", "--raw", "room:h")
	if code != 0 || stdout != "#5 alice edited #3: two, edited\n#6 alice deleted #4\n" {
		t.Errorf("limit 2 (exit %d):\n%s", code, stdout)
	}
}

func TestHistoryJSONIsEveryPublication(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	tok := tokenFile(t, "alice")
	if code, _, stderr := run(t, "a\nb\n/edit 1 a2\n", "chat", "--url", srv.HTTP, "--token-file", tok, "-n", "room:j"); code != 0 {
		t.Fatalf("seed: %s", stderr)
	}
	code, stdout, stderr := run(t, "", "history", "--json", "--url", srv.HTTP, "--token-file", tok, "room:j")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), stdout)
	}
	var events []parleycli.Event
	for _, l := range lines {
		var e parleycli.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		events = append(events, e)
	}
	if events[0].Offset != 1 || events[0].Text != "a" || events[0].User != "alice" || events[0].Type != "message" {
		t.Errorf("first %+v", events[0])
	}
	if e := events[2]; e.Type != "edit" || e.Ref != 1 || e.Text != "a2" || string(e.Data) != `{"text":"a2"}` {
		t.Errorf("edit %+v", e)
	}

	// Paging forward from a position needs its epoch, which bad input gets told.
	if code, _, stderr := run(t, "", "history", "--url", srv.HTTP, "--token-file", tok, "--since", "1", "room:j"); code != 2 || !strings.Contains(stderr, "--since and --epoch go together") {
		t.Errorf("since without epoch: exit %d, %q", code, stderr)
	}
	if code, _, stderr := run(t, "", "history", "--url", srv.HTTP, "--token-file", tok, "--since", "1", "--epoch", "bogus", "room:j"); code != 1 || !strings.Contains(stderr, "history of room:j") {
		t.Errorf("wrong epoch: exit %d, %q", code, stderr)
	}
}

func TestHistoryOfForbiddenRoom(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	code, _, stderr := run(t, "", "history", "--url", srv.HTTP, "--token-file", tokenFile(t, "bob"), "secret:plans")
	if code != 1 || !strings.Contains(stderr, "your token does not allow this") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
