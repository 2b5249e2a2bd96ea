package storetest

// The store.Groups part of the contract.

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

func runGroups(t *testing.T, h Harness) {
	t.Run("GroupMembership", func(t *testing.T) { t.Parallel(); testGroupMembership(t, h) })
	t.Run("GroupLimitsUnderConcurrency", func(t *testing.T) { t.Parallel(); testGroupLimits(t, h) })
	t.Run("GroupInvitesAndAudit", func(t *testing.T) { t.Parallel(); testGroupInvites(t, h) })
	t.Run("InboxCountsAndOrder", func(t *testing.T) { t.Parallel(); testInbox(t, h) })
	t.Run("SearchOnlyReadableHistory", func(t *testing.T) { t.Parallel(); testSearch(t, h) })
}

// user returns a user name unique to this test.
func user(t *testing.T, name string) string {
	return fmt.Sprintf("%s-%d-%s", name, seq.Add(1), t.Name())
}

func change(actor, action, target string) store.Change {
	return store.Change{Actor: actor, Action: action, Target: target}
}

func mustGroup(t *testing.T, s store.Store, owner string) string {
	t.Helper()
	ch := "grp:" + Channel(t)
	g := store.Group{Channel: ch, Owner: owner, GroupSettings: store.GroupSettings{Title: "T", WhoInvites: store.AllowMembers, WhoPosts: store.AllowMembers}}
	if err := s.CreateGroup(ctxT(t), g, store.Limits{}, change(owner, "create", "")); err != nil {
		t.Fatalf("create group: %v", err)
	}
	return ch
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

func testGroupMembership(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	alice, bob, carol := user(t, "alice"), user(t, "bob"), user(t, "carol")
	ch := mustGroup(t, s, alice)
	g := store.Group{Channel: ch, Owner: bob}
	wantErr(t, "create twice", s.CreateGroup(ctx, g, store.Limits{}, change(bob, "create", "")), store.ErrAlreadyExists)
	got, err := s.Group(ctx, ch)
	if err != nil || got.Owner != alice || got.Members != 1 || got.Title != "T" {
		t.Fatalf("group = %+v, %v", got, err)
	}
	if _, err := s.Group(ctx, ch+"x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
	if err := s.AddMember(ctx, ch, bob, store.RoleMember, store.Limits{}, change(alice, "add", bob)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "add twice", s.AddMember(ctx, ch, bob, store.RoleMember, store.Limits{}, change(alice, "add", bob)), store.ErrAlreadyMember)
	wantErr(t, "add to unknown", s.AddMember(ctx, ch+"x", bob, store.RoleMember, store.Limits{}, change(alice, "add", bob)), store.ErrNotFound)
	if err := s.AddMember(ctx, ch, carol, store.RoleMember, store.Limits{}, change(alice, "add", carol)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRole(ctx, ch, carol, store.RoleAdmin, change(alice, "role", carol)); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Members(ctx, ch, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range ms {
		order = append(order, m.User+"/"+m.Role)
	}
	if want := []string{alice + "/owner", carol + "/admin", bob + "/member"}; !slices.Equal(order, want) {
		t.Fatalf("members = %v, want %v", order, want)
	}
	if ms, _ := s.Members(ctx, ch, 1, 1); len(ms) != 1 || ms[0].User != carol {
		t.Fatalf("members page 2 = %+v", ms)
	}
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := s.SetMutedUntil(ctx, ch, bob, until, change(carol, "mute", bob)); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Member(ctx, ch, bob); err != nil || !m.Muted(time.Now()) || !m.MutedUntil.Equal(until) {
		t.Fatalf("muted member = %+v, %v", m, err)
	}
	wantErr(t, "transfer by non-owner", s.TransferOwnership(ctx, ch, carol, bob, change(carol, "transfer", bob)), store.ErrPrecondition)
	if err := s.TransferOwnership(ctx, ch, alice, carol, change(alice, "transfer", carol)); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Member(ctx, ch, alice); m.Role != store.RoleAdmin {
		t.Fatalf("old owner role = %q", m.Role)
	}
	if g, _ := s.Group(ctx, ch); g.Owner != carol {
		t.Fatalf("owner = %q", g.Owner)
	}
	if err := s.RemoveMember(ctx, ch, bob, true, change(carol, "ban", bob)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Member(ctx, ch, bob); !errors.Is(err, store.ErrNotMember) {
		t.Fatalf("banned still member: %v", err)
	}
	wantErr(t, "banned rejoins", s.AddMember(ctx, ch, bob, store.RoleMember, store.Limits{}, change(bob, "join", bob)), store.ErrBanned)
	if b, err := s.Banned(ctx, ch, bob); err != nil || !b {
		t.Fatalf("banned = %v, %v", b, err)
	}
	if _, err := s.InboxEntry(ctx, bob, ch); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("banned user keeps the inbox row: %v", err)
	}
	if err := s.Unban(ctx, ch, bob, change(carol, "unban", bob)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, ch, bob, store.RoleMember, store.Limits{}, change(bob, "join", bob)); err != nil {
		t.Fatalf("unbanned rejoins: %v", err)
	}
	wantErr(t, "remove non-member", s.RemoveMember(ctx, ch, user(t, "x"), false, change(carol, "remove", "x")), store.ErrNotMember)
	if gs, err := s.GroupsOf(ctx, bob); err != nil || !slices.Equal(gs, []string{ch}) {
		t.Fatalf("groups of bob = %v, %v", gs, err)
	}
	members, err := s.DeleteGroup(ctx, ch, change(carol, "delete", ""))
	if err != nil || len(members) != 3 {
		t.Fatalf("delete = %v, %v", members, err)
	}
	if gs, _ := s.GroupsOf(ctx, bob); len(gs) != 0 {
		t.Fatalf("groups after delete = %v", gs)
	}
	if inbox, _ := s.Inbox(ctx, alice, 10, 0); len(inbox) != 0 {
		t.Fatalf("inbox after delete = %+v", inbox)
	}
	// The audit log outlives the group: who did what stays on record.
	entries, err := s.Audit(ctx, ch, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		actions = append(actions, e.Action)
	}
	want := []string{"delete", "join", "unban", "ban", "transfer", "mute", "role", "add", "add", "create"}
	if !slices.Equal(actions, want) {
		t.Fatalf("audit = %v, want %v", actions, want)
	}
	if older, _ := s.Audit(ctx, ch, entries[1].ID, 2); len(older) != 2 || older[0].Action != "unban" {
		t.Fatalf("audit page = %+v", older)
	}
}

func testGroupLimits(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	owner := user(t, "owner")
	ch := mustGroup(t, s, owner)
	limits := store.Limits{MembersPerGroup: 5}
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := user(t, "m")
			errs[i] = s.AddMember(ctx, ch, u, store.RoleMember, limits, change(u, "join", u))
		}()
	}
	wg.Wait()
	ok, full := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrGroupFull):
			full++
		default:
			t.Fatalf("add: %v", err)
		}
	}
	if ok != 4 || full != 8 {
		t.Fatalf("added %d, full %d; want 4 and 8 (owner + 4 = 5)", ok, full)
	}
	// One user joining many groups at once stays within GroupsPerUser.
	joiner := user(t, "joiner")
	var chans []string
	for range 6 {
		chans = append(chans, mustGroup(t, s, owner))
	}
	errs = make([]error, len(chans))
	for i, c := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.AddMember(ctx, c, joiner, store.RoleMember, store.Limits{GroupsPerUser: 3}, change(joiner, "join", joiner))
		}()
	}
	wg.Wait()
	if gs, _ := s.GroupsOf(ctx, joiner); len(gs) != 3 {
		t.Fatalf("joined %d groups, limit 3 (%v)", len(gs), errs)
	}
}

func testGroupInvites(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	alice := user(t, "alice")
	ch := mustGroup(t, s, alice)
	code := "code-" + Channel(t)
	if err := s.CreateInvite(ctx, store.Invite{Code: code, Channel: ch, By: alice, Expires: time.Now().Add(time.Hour), MaxUses: 2}, change(alice, "invite", "")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		inv, err := s.UseInvite(ctx, code)
		if err != nil || inv.Channel != ch || inv.Uses != i+1 {
			t.Fatalf("use %d = %+v, %v", i, inv, err)
		}
	}
	if _, err := s.UseInvite(ctx, code); !errors.Is(err, store.ErrInviteInvalid) {
		t.Fatalf("third use: %v", err)
	}
	expired := code + "-old"
	if err := s.CreateInvite(ctx, store.Invite{Code: expired, Channel: ch, By: alice, Expires: time.Now().Add(-time.Second)}, change(alice, "invite", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseInvite(ctx, expired); !errors.Is(err, store.ErrInviteInvalid) {
		t.Fatalf("expired: %v", err)
	}
	if n, err := s.CountActions(ctx, alice, "invite", time.Now().Add(-time.Minute)); err != nil || n != 2 {
		t.Fatalf("count invites = %d, %v", n, err)
	}
	if n, _ := s.CountActions(ctx, alice, "invite", time.Now().Add(time.Minute)); n != 0 {
		t.Fatalf("count invites in the future = %d", n)
	}
}

func appendText(t *testing.T, s store.Store, ch, author, text string) uint64 {
	t.Helper()
	res, err := s.Append(ctxT(t), ch, &message.Publication{Data: []byte(fmt.Sprintf(`{"text":%q}`, text)), Info: &message.ClientInfo{User: author}},
		store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return res.Position.Offset
}

func testInbox(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	alice, bob := user(t, "alice"), user(t, "bob")
	ch := mustGroup(t, s, alice)
	if err := s.AddMember(ctx, ch, bob, store.RoleMember, store.Limits{}, change(alice, "add", bob)); err != nil {
		t.Fatal(err)
	}
	dm := "dm:#" + alice + "," + bob
	for i, text := range []string{"hello", "hi @bob", "third"} {
		off := appendText(t, s, ch, alice, text)
		a := store.Activity{Channel: ch, Offset: off, User: alice, Preview: text}
		if i == 1 {
			a.Mentions = []string{bob, alice, user(t, "stranger")}
		}
		users, err := s.Touch(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{alice, bob}; !slices.Equal(users, sorted(want)) {
			t.Fatalf("touch users = %v, want %v", users, want)
		}
	}
	time.Sleep(10 * time.Millisecond) // the DM's activity is later
	off := appendText(t, s, dm, bob, "psst")
	if _, err := s.Touch(ctx, store.Activity{Channel: dm, Offset: off, User: bob, Preview: "psst", Participants: []string{alice, bob}}); err != nil {
		t.Fatal(err)
	}
	inbox, err := s.Inbox(ctx, bob, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 2 || inbox[0].Channel != dm || inbox[1].Channel != ch {
		t.Fatalf("bob's inbox = %+v", inbox)
	}
	if e := inbox[1]; e.Unread != 3 || e.Mentions != 1 || e.Preview != "third" || e.LastUser != alice || e.Title != "T" || e.LastOffset != 3 {
		t.Fatalf("group entry = %+v", e)
	}
	if e := inbox[0]; e.Unread != 0 { // bob wrote it
		t.Fatalf("dm entry for its author = %+v", e)
	}
	if e, _ := s.InboxEntry(ctx, alice, ch); e.Unread != 0 || e.Mentions != 0 {
		t.Fatalf("author's own messages are read: %+v", e)
	}
	if e, _ := s.InboxEntry(ctx, alice, dm); e.Unread != 1 {
		t.Fatalf("alice's dm entry = %+v", e)
	}
	if err := s.MarkRead(ctx, ch, bob, 2); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.InboxEntry(ctx, bob, ch); e.Unread != 1 || e.Mentions != 0 {
		t.Fatalf("after reading to 2: %+v", e)
	}
	if err := s.SetMuted(ctx, bob, ch, true); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.InboxEntry(ctx, bob, ch); !e.Muted {
		t.Fatalf("not muted: %+v", e)
	}
	wantErr(t, "mute a conversation not in the inbox", s.SetMuted(ctx, bob, "grp:nope", true), store.ErrNotFound)
	if page, _ := s.Inbox(ctx, bob, 1, 1); len(page) != 1 || page[0].Channel != ch {
		t.Fatalf("page 2 = %+v", page)
	}
	if err := s.PutProfile(ctx, store.Profile{User: bob, Name: "Bob", Picture: "https://example.org/b.png"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutProfile(ctx, store.Profile{User: bob, Name: "Bobby"}); err != nil {
		t.Fatal(err)
	}
	ps, err := s.Profiles(ctx, []string{bob, user(t, "nobody")})
	if err != nil || len(ps) != 1 || ps[0].Name != "Bobby" || ps[0].Picture != "" {
		t.Fatalf("profiles = %+v, %v", ps, err)
	}
	if m, _ := s.Member(ctx, ch, bob); m.Name != "Bobby" {
		t.Fatalf("member without profile: %+v", m)
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func testSearch(t *testing.T, h Harness) {
	s := newStore(t, h, Options{})
	ctx := ctxT(t)
	alice, eve := user(t, "alice"), user(t, "eve")
	ch := mustGroup(t, s, alice)
	other := mustGroup(t, s, eve)
	index := func(ch, author, text string) uint64 {
		off := appendText(t, s, ch, author, text)
		if _, err := s.Touch(ctx, store.Activity{Channel: ch, Offset: off, User: author, Text: text, Language: "simple"}); err != nil {
			t.Fatal(err)
		}
		return off
	}
	index(ch, alice, "the quarterly report is late")
	second := index(ch, alice, "lunch at noon? report later")
	index(ch, alice, "nothing to see")
	index(other, eve, "secret report of eve")
	hits, err := s.Search(ctx, alice, "report", "simple", "", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 || hits[0].Offset != second || hits[0].Channel != ch || hits[0].User != alice || hits[0].Time == 0 || hits[0].Snippet == "" || hits[0].Title != "T" {
		t.Fatalf("hits = %+v", hits)
	}
	if hits, _ := s.Search(ctx, alice, "report", "simple", "", 1, 1); len(hits) != 1 || hits[0].Offset != 1 {
		t.Fatalf("page 2 = %+v", hits)
	}
	if hits, _ := s.Search(ctx, alice, "quarterly report", "simple", "", 10, 0); len(hits) != 1 {
		t.Fatalf("two words = %+v", hits)
	}
	if hits, _ := s.Search(ctx, alice, "secret", "simple", "", 10, 0); len(hits) != 0 {
		t.Fatalf("found another group's message: %+v", hits)
	}
	if err := s.Unindex(ctx, ch, second); err != nil {
		t.Fatal(err)
	}
	if hits, _ := s.Search(ctx, alice, "lunch", "simple", ch, 10, 0); len(hits) != 0 {
		t.Fatalf("unindexed message found: %+v", hits)
	}
	if err := s.RemoveHistory(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if hits, _ := s.Search(ctx, alice, "report", "simple", "", 10, 0); len(hits) != 0 {
		t.Fatalf("found a message gone from history: %+v", hits)
	}
	// A new epoch starts without the old one's mentions or last message.
	if e, err := s.InboxEntry(ctx, alice, ch); err != nil || e.LastOffset != 0 || e.Preview != "" || e.Mentions != 0 {
		t.Fatalf("inbox entry after the history was removed: %+v, %v", e, err)
	}
}
