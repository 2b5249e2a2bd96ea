package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"
	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
	"github.com/parley-chat/parley/chatserver/store/postgres"
	"github.com/parley-chat/parley/chatserver/store/storetest"
)

// db is the database this test package created for itself (dropped at the end).
var db testenv.Database

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	var err error
	db, err = testenv.CreateDatabase(ctx, "parley_store_test")
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "create test database:", err)
		os.Exit(1)
	}
	code := m.Run()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	if err := db.Drop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "drop test database:", err)
		code = 1
	}
	cancel()
	if code == 0 {
		if err := leakcheck.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leakcheck:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func open(t testing.TB, dsn string, opts postgres.Options) *postgres.Store {
	t.Helper()
	if opts.RetentionInterval == 0 {
		opts.RetentionInterval = -1
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = 4
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.New(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("postgres.New: %v", err)
	}
	return s
}

// twoReplicas opens two stores on one new database, as two replicas of a
// cluster would, closed when the test ends.
func twoReplicas(t *testing.T, database string) []*postgres.Store {
	t.Helper()
	d := testenv.NewDatabase(t, database)
	replicas := []*postgres.Store{open(t, d.URL, postgres.Options{}), open(t, d.URL, postgres.Options{})}
	for _, s := range replicas {
		t.Cleanup(func() { _ = s.Close() })
	}
	return replicas
}

func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) store.Store {
			return open(t, db.URL, postgres.Options{PresenceTTL: opts.PresenceTTL})
		},
		Peer: func(t *testing.T, _ store.Store) store.Store {
			return open(t, db.URL, postgres.Options{})
		},
	})
}

// TestMigrationsConcurrent starts many replicas on an empty database at once:
// every one must come up, and each migration must be applied exactly once.
func TestMigrationsConcurrent(t *testing.T) {
	dsn := testenv.NewDatabase(t, "parley_migrate_test").URL
	const replicas = 8
	var wg sync.WaitGroup
	stores := make([]*postgres.Store, replicas)
	errs := make([]error, replicas)
	for i := 0; i < replicas; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			stores[i], errs[i] = postgres.New(ctx, dsn, postgres.Options{MaxConns: 2, RetentionInterval: -1})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d failed to start: %v", i, err)
		}
		defer stores[i].Close()
	}
	ctx := context.Background()
	var versions, distinct, max int
	if err := stores[0].Pool().QueryRow(ctx, `SELECT count(*), count(DISTINCT version), max(version) FROM parley_schema_migrations`).Scan(&versions, &distinct, &max); err != nil {
		t.Fatal(err)
	}
	if versions != postgres.SchemaVersion || distinct != versions || max != postgres.SchemaVersion {
		t.Fatalf("schema_migrations has %d rows (%d distinct, max %d), want %d", versions, distinct, max, postgres.SchemaVersion)
	}
	// Every replica works against the migrated schema.
	for i, s := range stores {
		if _, err := s.Append(ctx, "room:migrated", &message.Publication{Data: []byte("x")}, store.AppendOptions{HistorySize: 10, HistoryTTL: time.Hour}); err != nil {
			t.Fatalf("replica %d append: %v", i, err)
		}
	}
	if pos, err := stores[0].Position(ctx, "room:migrated"); err != nil || pos.Offset != replicas {
		t.Fatalf("position after one append per replica: %+v, %v", pos, err)
	}
	// A database from the future is refused.
	if _, err := stores[0].Pool().Exec(ctx, `INSERT INTO parley_schema_migrations (version) VALUES ($1)`, postgres.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if s, err := postgres.New(ctx, dsn, postgres.Options{RetentionInterval: -1}); err == nil {
		s.Close()
		t.Fatal("New accepted a schema newer than the code")
	}
}

func TestBadURLDoesNotLeakPassword(t *testing.T) {
	_, err := postgres.New(context.Background(), "postgres://user:s3cret-pw@127.0.0.1:5432/db?sslmode=bogus", postgres.Options{})
	if err == nil {
		t.Fatal("New accepted an invalid URL")
	}
	if got := err.Error(); strings.Contains(got, "s3cret-pw") {
		t.Fatalf("error reveals the password: %s", got)
	}
	_, err = postgres.New(context.Background(), "postgres://user:s3cret-pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", postgres.Options{})
	if err == nil {
		t.Fatal("New succeeded against a closed port")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("unreachable database: %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("error reveals the password: %s", err)
	}
}

func count(t *testing.T, s *postgres.Store, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRetentionJob checks that the batched job physically removes what reads
// already hide, and leaves positions and epochs alone.
func TestRetentionJob(t *testing.T) {
	s := open(t, db.URL, postgres.Options{RetentionBatch: 3, PresenceTTL: time.Second})
	defer s.Close()
	ctx := context.Background()
	sized, aged, fresh := storetest.Channel(t), storetest.Channel(t), storetest.Channel(t)
	for i := 0; i < 20; i++ {
		if _, err := s.Append(ctx, sized, &message.Publication{Data: []byte{byte(i)}}, store.AppendOptions{HistorySize: 5, HistoryTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 7; i++ {
		if _, err := s.Append(ctx, aged, &message.Publication{Data: []byte{byte(i)}}, store.AppendOptions{HistorySize: 100, HistoryTTL: time.Second, IdempotencyKey: fmt.Sprint(i), IdempotencyTTL: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(ctx, fresh, &message.Publication{Data: []byte("keep")}, store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPresence(ctx, aged, message.ClientInfo{User: "u", Client: "ghost"}); err != nil {
		t.Fatal(err)
	}
	posBefore, _ := s.Position(ctx, aged)
	time.Sleep(1200 * time.Millisecond)

	stats, err := s.Retain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Earlier tests' channels may add to the counts; the rows left below are exact.
	if stats.TrimmedBySize < 15 || stats.ExpiredByAge < 7 || stats.IdempotencyKeys < 7 || stats.PresenceEntries < 1 {
		t.Fatalf("retention deleted %s; want ≥15 trimmed, ≥7 expired, ≥7 keys, ≥1 presence", stats)
	}
	const rowsOf = `SELECT count(*) FROM parley_publications p JOIN parley_channels c ON c.id = p.channel_id WHERE c.name = $1`
	if n := count(t, s, rowsOf, sized); n != 5 {
		t.Fatalf("%d rows left in the sized channel, want 5", n)
	}
	if n := count(t, s, rowsOf, aged); n != 0 {
		t.Fatalf("%d rows left in the aged channel, want 0", n)
	}
	if n := count(t, s, rowsOf, fresh); n != 1 {
		t.Fatalf("retention removed a fresh publication")
	}
	if pos, _ := s.Position(ctx, aged); pos != posBefore {
		t.Fatalf("retention changed the position: %+v → %+v", posBefore, pos)
	}
	pubs, _, err := s.History(ctx, sized, store.HistoryOptions{Limit: -1})
	if err != nil || len(pubs) != 5 || pubs[0].Offset != 16 {
		t.Fatalf("history after trimming: %d publications from %v, %v", len(pubs), pubs, err)
	}
	// A second run finds nothing more, and the next append trims only the excess.
	if stats, err := s.Retain(ctx); err != nil || stats.TrimmedBySize != 0 || stats.ExpiredByAge != 0 {
		t.Fatalf("second run: %s, %v", stats, err)
	}
	if _, err := s.Append(ctx, sized, &message.Publication{Data: []byte("x")}, store.AppendOptions{HistorySize: 5, HistoryTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if stats, err := s.Retain(ctx); err != nil || stats.TrimmedBySize != 1 {
		t.Fatalf("run after one more append: %s, %v", stats, err)
	}
	// While one replica holds the job's lock, another skips its round.
	other := open(t, db.URL, postgres.Options{})
	defer other.Close()
	conn, err := other.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(0x7061726c65792e72)); err != nil {
		t.Fatal(err)
	}
	if stats, err := s.Retain(ctx); err != nil || !stats.Skipped {
		t.Fatalf("retention while another replica runs it: %s, %v", stats, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(0x7061726c65792e72)); err != nil {
		t.Fatal(err)
	}
	conn.Release()
}

// TestRetentionAfterRemoveHistory: trimming computed from an old epoch's
// offsets must not delete the new epoch's publications.
func TestRetentionAfterRemoveHistory(t *testing.T) {
	s := open(t, db.URL, postgres.Options{RetentionBatch: 2})
	defer s.Close()
	ctx := context.Background()
	ch := storetest.Channel(t)
	for i := 0; i < 10; i++ {
		if _, err := s.Append(ctx, ch, &message.Publication{Data: []byte("old")}, store.AppendOptions{HistorySize: 3, HistoryTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveHistory(ctx, ch); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.Append(ctx, ch, &message.Publication{Data: []byte("new")}, store.AppendOptions{HistorySize: 3, HistoryTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Retain(ctx); err != nil {
		t.Fatal(err)
	}
	pubs, _, err := s.History(ctx, ch, store.HistoryOptions{Limit: -1})
	if err != nil || len(pubs) != 3 {
		t.Fatalf("new epoch after retention: %d publications, %v", len(pubs), err)
	}
}

func TestBackgroundRetentionRuns(t *testing.T) {
	s := open(t, db.URL, postgres.Options{RetentionInterval: 200 * time.Millisecond})
	defer s.Close()
	ctx := context.Background()
	ch := storetest.Channel(t)
	for i := 0; i < 6; i++ {
		if _, err := s.Append(ctx, ch, &message.Publication{Data: []byte("x")}, store.AppendOptions{HistorySize: 2, HistoryTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(t, s, `SELECT count(*) FROM parley_publications p JOIN parley_channels c ON c.id = p.channel_id WHERE c.name = $1`, ch) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the background job did not trim the channel")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tally counts how operations ended during an outage.
type tally struct {
	ok, unavailable int
}

func (tl *tally) add(t *testing.T, what string, err error) bool {
	t.Helper()
	switch {
	case err == nil:
		tl.ok++
		return true
	case errors.Is(err, store.ErrUnavailable):
		tl.unavailable++
		return false
	default:
		t.Fatalf("%s failed with %v, want success or ErrUnavailable", what, err)
		return false
	}
}

// checkDense asserts every acknowledged offset is in history and history has
// no gaps: nothing acknowledged was lost.
func checkDense(t *testing.T, s store.Store, ch string, acked map[uint64]string) {
	t.Helper()
	pubs, pos, err := s.History(context.Background(), ch, store.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	have := map[uint64]string{}
	for i, p := range pubs {
		if p.Offset != uint64(i+1) {
			t.Fatalf("history has a gap: index %d holds offset %d", i, p.Offset)
		}
		have[p.Offset] = string(p.Data)
	}
	for off, data := range acked {
		if have[off] != data {
			lost++
		}
	}
	t.Logf("acknowledged %d, stored %d (top %d), lost %d", len(acked), len(pubs), pos.Offset, lost)
	if lost != 0 {
		t.Fatalf("%d acknowledged publications lost", lost)
	}
}

// TestTerminatedBackendsRecover kills every connection of the test database
// (pg_terminate_backend) while appends run; every call succeeds or fails with
// ErrUnavailable, the store recovers without a restart, and nothing
// acknowledged is lost.
func TestTerminatedBackendsRecover(t *testing.T) {
	s := open(t, db.URL, postgres.Options{MaxConns: 4})
	defer s.Close()
	ch := storetest.Channel(t)
	opts := store.AppendOptions{HistorySize: 10000, HistoryTTL: time.Hour}
	acked := map[uint64]string{}
	var tl tally
	appendOne := func(i int) {
		data := fmt.Sprint(i)
		res, err := s.Append(context.Background(), ch, &message.Publication{Data: []byte(data)}, opts)
		if tl.add(t, "append", err) {
			acked[res.Publication.Offset] = data
		}
	}
	for i := 0; i < 20; i++ {
		appendOne(i)
	}
	ctx := context.Background()
	terminate := func() int {
		n, err := db.TerminateBackends(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for round := 0; round < 3; round++ {
		if n := terminate(); n == 0 {
			t.Fatal("no backend of the test database to terminate")
		}
		// Right after the kill: calls either work (a fresh connection) or say unavailable.
		for i := 0; i < 10; i++ {
			appendOne(100*round + i)
			_, _, err := s.History(ctx, ch, store.HistoryOptions{Limit: 5, Reverse: true})
			tl.add(t, "history", err)
			_, err = s.Position(ctx, ch)
			tl.add(t, "position", err)
		}
	}
	// Recovered: a run of calls all succeed.
	deadline := time.Now().Add(10 * time.Second)
	for streak := 0; streak < 10; {
		if time.Now().After(deadline) {
			t.Fatal("the store did not recover after its backends were terminated")
		}
		res, err := s.Append(ctx, ch, &message.Publication{Data: []byte("after")}, opts)
		if err == nil {
			acked[res.Publication.Offset] = "after"
			streak++
		} else if !errors.Is(err, store.ErrUnavailable) {
			t.Fatal(err)
		} else {
			streak = 0
		}
	}
	t.Logf("during terminations: %d ok, %d unavailable", tl.ok, tl.unavailable)
	checkDense(t, s, ch, acked)
}

// TestOutageFailsFastAndRecovers puts the store behind a proxy and cuts the
// database off entirely: calls fail quickly with ErrUnavailable, and work
// again when the database is reachable, without a restart.
func TestOutageFailsFastAndRecovers(t *testing.T) {
	host, err := testenv.Host(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	viaProxy, err := testenv.WithHost(db.URL, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, viaProxy, postgres.Options{MaxConns: 3})
	defer s.Close()
	ctx := context.Background()
	ch := storetest.Channel(t)
	opts := store.AppendOptions{HistorySize: 1000, HistoryTTL: time.Hour}
	acked := map[uint64]string{}
	for i := 0; i < 5; i++ {
		res, err := s.Append(ctx, ch, &message.Publication{Data: []byte(fmt.Sprint(i))}, opts)
		if err != nil {
			t.Fatal(err)
		}
		acked[res.Publication.Offset] = fmt.Sprint(i)
	}

	p.Disable()
	failures := 0
	for i := 0; i < 5; i++ {
		start := time.Now()
		_, err := s.Append(ctx, ch, &message.Publication{Data: []byte("during outage")}, opts)
		if err == nil {
			t.Fatal("append succeeded with the database unreachable")
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("append during outage: %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("append took %v to fail; want a fast failure", d)
		}
		_, _, err = s.History(ctx, ch, store.HistoryOptions{Limit: 10})
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("history during outage: %v, want ErrUnavailable", err)
		}
		failures++
	}

	p.Enable()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := s.Append(ctx, ch, &message.Publication{Data: []byte("back")}, opts)
		if err == nil {
			acked[res.Publication.Offset] = "back"
			break
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("after the outage: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d calls failed fast during the outage", failures)
	checkDense(t, s, ch, acked)
}

// Reading a channel (position, history, read states, receipts, a read
// receipt) never creates its row: only a publication does. Otherwise any user
// could grow the channel table without bound by subscribing to
// "dm:#me,<random>". The position handed out before the first publication
// stays valid after it, also when another replica hands it out.
func TestReadingAChannelCreatesNoRow(t *testing.T) {
	s := open(t, db.URL, postgres.Options{})
	defer s.Close()
	peer := open(t, db.URL, postgres.Options{})
	defer peer.Close()
	ctx := context.Background()
	ch := storetest.Channel(t)
	rows := func() int {
		var n int
		if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM parley_channels WHERE name = $1`, ch).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	pos, err := s.Position(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.History(ctx, ch, store.HistoryOptions{Limit: 10, Since: &pos}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadStates(ctx, "alice", []string{ch}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Receipts(ctx, ch, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkRead(ctx, ch, "alice", 5); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 0 {
		t.Fatalf("%d rows for a channel nobody published to", n)
	}
	if p, err := peer.Position(ctx, ch); err != nil || p != pos {
		t.Fatalf("another replica's position %+v (%v), want %+v", p, err, pos)
	}
	res, err := peer.Append(ctx, ch, &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 10, HistoryTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.Position.Epoch != pos.Epoch || rows() != 1 {
		t.Fatalf("first publication: epoch %q (was %q), %d rows", res.Position.Epoch, pos.Epoch, rows())
	}
}

// Retention drops the mentions their user has read past: they never count
// again, and unread ones stay.
func TestRetentionDropsReadMentions(t *testing.T) {
	s := open(t, db.URL, postgres.Options{})
	defer s.Close()
	ctx := context.Background()
	ch := "grp:mentions-" + storetest.Channel(t)
	if err := s.CreateGroup(ctx, store.Group{Channel: ch, Owner: "m-alice"}, store.Limits{}, store.Change{Actor: "m-alice", Action: "create"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, ch, "m-bob", store.RoleMember, store.Limits{}, store.Change{Actor: "m-alice", Action: "add"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		res, err := s.Append(ctx, ch, &message.Publication{Data: []byte(`{"text":"@m-bob"}`)}, store.AppendOptions{HistorySize: 10, HistoryTTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Touch(ctx, store.Activity{Channel: ch, Offset: res.Position.Offset, User: "m-alice", Mentions: []string{"m-bob"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkRead(ctx, ch, "m-bob", 2); err != nil {
		t.Fatal(err)
	}
	stats, err := s.Retain(ctx)
	if err != nil || stats.Mentions < 2 {
		t.Fatalf("retention: %s, %v; want ≥2 mentions", stats, err)
	}
	if n := count(t, s, `SELECT count(*) FROM parley_mentions WHERE channel = $1`, ch); n != 1 {
		t.Fatalf("%d mentions left, want the unread one", n)
	}
	if e, err := s.InboxEntry(ctx, "m-bob", ch); err != nil || e.Mentions != 1 || e.Unread != 1 {
		t.Fatalf("inbox entry after retention: %+v, %v", e, err)
	}
}

func TestCheckSearchLanguage(t *testing.T) {
	s := open(t, db.URL, postgres.Options{})
	defer s.Close()
	for lang, ok := range map[string]bool{"simple": true, "english": true, "klingon": false} {
		if err := s.CheckSearchLanguage(context.Background(), lang); (err == nil) != ok {
			t.Errorf("%s: %v", lang, err)
		}
	}
}
