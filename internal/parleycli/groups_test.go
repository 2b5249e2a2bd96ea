package parleycli_test

import (
	"strings"
	"testing"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func TestGroupsCommands(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	alice, bob, carol := tokenFile(t, "alice"), tokenFile(t, "bob"), tokenFile(t, "carol")
	as := func(tok string, args ...string) (int, string, string) {
		t.Helper()
		return run(t, "", append(args, "--url", srv.HTTP, "--token-file", tok)...)
	}
	ok := func(tok string, args ...string) string {
		t.Helper()
		code, stdout, stderr := as(tok, args...)
		if code != 0 {
			t.Fatalf("parley %v: exit %d: %s", args, code, stderr)
		}
		return stdout
	}
	if got := ok(alice, "groups", "create", "--title", "Team", "team"); got != "grp:team\n" {
		t.Fatalf("create: %q", got)
	}
	ok(alice, "groups", "add", "grp:team", "bob")
	code := strings.TrimSpace(ok(alice, "invite", "grp:team", "--uses", "1"))
	if got := ok(carol, "join", code); got != "grp:team\n" {
		t.Fatalf("join: %q", got)
	}
	if c, _, stderr := as(bob, "join", code); c != 1 || !strings.Contains(stderr, "invite code unknown, expired or used up") {
		t.Fatalf("second use of a one-use code: exit %d, %q", c, stderr)
	}
	ok(alice, "groups", "role", "grp:team", "carol", "admin")
	if got := ok(alice, "groups", "info", "grp:team"); !strings.Contains(got, `grp:team "Team"`) || !strings.Contains(got, "owner: alice, 3 members, you are owner") {
		t.Fatalf("info:\n%s", got)
	}
	if c, _, stderr := run(t, "the quarterly report\n", "chat", "--url", srv.HTTP, "--token-file", alice, "-n", "grp:team"); c != 0 {
		t.Fatalf("chat: %s", stderr)
	}
	if got := ok(bob, "search", "quarterly"); got != "grp:team #1 alice: the quarterly report\n" {
		t.Fatalf("search: %q", got)
	}
	if got := ok(carol, "inbox"); got != "grp:team \"Team\" [1 unread] alice: the quarterly report\n" {
		t.Fatalf("inbox: %q", got)
	}
	ok(carol, "groups", "ban", "grp:team", "bob", "--reason", "spam")
	if got := ok(carol, "groups", "members", "grp:team"); got != "alice owner\ncarol admin\n" {
		t.Fatalf("members: %q", got)
	}
	if got := ok(carol, "groups", "audit", "grp:team"); !strings.Contains(got, "carol ban bob") || !strings.Contains(got, "spam") {
		t.Fatalf("audit:\n%s", got)
	}
	if c, _, stderr := as(bob, "groups", "members", "grp:team"); c != 1 || !strings.Contains(stderr, "not a member of this group") {
		t.Fatalf("banned member listing members: exit %d, %q", c, stderr)
	}
	if c, _, stderr := as(carol, "groups", "mute", "grp:team", "alice", "soon"); c != 2 || !strings.Contains(stderr, "give a duration") {
		t.Fatalf("bad duration: exit %d, %q", c, stderr)
	}
	if got := ok(alice, "groups", "info", "grp:team", "--json"); !strings.HasPrefix(got, `{"group":{"channel":"grp:team"`) {
		t.Fatalf("--json: %q", got)
	}
	ok(alice, "groups", "delete", "grp:team")
	if c, _, stderr := as(alice, "groups", "info", "grp:team"); c != 1 || !strings.Contains(stderr, "unknown group") {
		t.Fatalf("deleted group: exit %d, %q", c, stderr)
	}
}
