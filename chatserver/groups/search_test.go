package groups_test

import (
	"testing"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// A search hit names its conversation as the inbox does (a group's title, a
// DM's other participants), so a client can show where a hit is without
// having loaded that page of the inbox.
func TestSearchHitsNameTheirConversation(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	alice, bob := dial(t, srv, "alice"), dial(t, srv, "bob")
	grp := alice.must("group.create", map[string]any{"title": "Launch plans"})["channel"].(string)
	alice.must("group.add", map[string]any{"channel": grp, "user": "bob"})
	alice.must("publish", map[string]any{"channel": grp, "data": map[string]string{"text": "the quarterly report"}, "key": "k1"})
	dm := "dm:#alice,bob"
	if got := alice.cmd(&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: dm}}); got != 0 {
		t.Fatalf("subscribe %s: %d", dm, got)
	}
	alice.must("publish", map[string]any{"channel": dm, "data": map[string]string{"text": "quarterly numbers attached"}, "key": "k2"})

	titles := map[string]string{}
	for _, h := range bob.must("search", map[string]any{"query": "quarterly"})["hits"].([]any) {
		hit := h.(map[string]any)
		title, _ := hit["title"].(string)
		titles[hit["channel"].(string)] = title
	}
	if len(titles) != 2 || titles[grp] != "Launch plans" || titles[dm] != "alice" {
		t.Fatalf("bob's hits name their conversations %v, want %s: Launch plans, %s: alice", titles, grp, dm)
	}
}
