package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
	"github.com/parley-chat/parley/chatserver/store/postgres"
)

// TestPresenceCommitsAsynchronouslyPublicationsDurably records, from inside
// each write's transaction (a trigger), the synchronous_commit it commits
// with: presence writes are soft state and commit without waiting for the
// WAL flush, and the setting must end with them — the store has one pooled
// connection, so an append right after a presence write shares it and must
// still commit durably.
func TestPresenceCommitsAsynchronouslyPublicationsDurably(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_soft_commit")
	s := open(t, d.URL, postgres.Options{MaxConns: 1, CommitWorkers: 1})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, sql := range []string{
		`CREATE TABLE commit_modes (n serial, what text, mode text)`,
		`CREATE FUNCTION note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO commit_modes (what, mode) VALUES (TG_TABLE_NAME || ' ' || TG_OP, current_setting('synchronous_commit')); RETURN NULL; END $$`,
		`CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON parley_presence FOR EACH ROW EXECUTE FUNCTION note_commit_mode()`,
		`CREATE TRIGGER note AFTER INSERT ON parley_publications FOR EACH ROW EXECUTE FUNCTION note_commit_mode()`,
	} {
		if _, err := s.Pool().Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	pub := func() {
		t.Helper()
		if _, err := s.Append(ctx, "soft:room", &message.Publication{Data: []byte(`"x"`)}, store.AppendOptions{HistorySize: 10}); err != nil {
			t.Fatal(err)
		}
	}
	a := message.ClientInfo{User: "ann", Client: "c1"}
	if err := s.AddPresence(ctx, "soft:room", a); err != nil {
		t.Fatal(err)
	}
	pub()
	if ok, err := s.AdmitPresence(ctx, "soft:room", message.ClientInfo{User: "bob", Client: "c2"}, 10); err != nil || !ok {
		t.Fatalf("admit: %v, %v", ok, err)
	}
	pub()
	if err := s.AddPresences(ctx, []store.PresenceEntry{{Channel: "soft:room", Info: a}}); err != nil {
		t.Fatal(err)
	}
	pub()
	if err := s.RemovePresence(ctx, "soft:room", "c1"); err != nil {
		t.Fatal(err)
	}
	pub()
	rows, err := s.Pool().Query(ctx, `SELECT what, mode FROM commit_modes ORDER BY n`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var what, mode string
		if err := rows.Scan(&what, &mode); err != nil {
			t.Fatal(err)
		}
		got = append(got, what+": "+mode)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"parley_presence INSERT: off", "parley_publications INSERT: on",
		"parley_presence INSERT: off", "parley_publications INSERT: on",
		"parley_presence UPDATE: off", "parley_publications INSERT: on",
		"parley_presence DELETE: off", "parley_publications INSERT: on",
	}
	if len(got) != len(want) {
		t.Fatalf("commit modes %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("commit modes %q, want %q", got, want)
		}
	}
}
