package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
	"github.com/parley-chat/parley/chatserver/store/postgres"
)

// TestDirectoryOrderedWithAppends is the directory's promise: a node that
// registered at position p is in the Nodes of every publication appended
// after p, by any replica, alone, grouped or with an idempotency key.
// Appends race registrations into the same channels from two stores.
func TestDirectoryOrderedWithAppends(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_directory")
	grouped := open(t, d.URL, postgres.Options{MaxConns: 6})
	lone := open(t, d.URL, postgres.Options{MaxConns: 6, AppendBatch: 1})
	t.Cleanup(func() { _ = grouped.Close(); _ = lone.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	channels := []string{"room:a", "room:b", "room:c", "room:d"}
	type registration struct {
		channel, node string
		pos           message.StreamPosition
	}
	var (
		mu       sync.Mutex
		appended []store.AppendResult
		chanOf   []string
		regs     []registration
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 8 {
		s := grouped
		if w%2 == 1 {
			s = lone
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ch := channels[rng.IntN(len(channels))]
				opts := store.AppendOptions{HistorySize: 100}
				if i%5 == 0 {
					opts.IdempotencyKey = fmt.Sprintf("k-%d-%d", w, i)
				}
				res, err := s.Append(ctx, ch, &message.Publication{Data: []byte(`{}`)}, opts)
				if err != nil {
					errs <- err
					return
				}
				if !res.Routed {
					errs <- fmt.Errorf("append to %s: no directory answer", ch)
					return
				}
				mu.Lock()
				appended, chanOf = append(appended, res), append(chanOf, ch)
				mu.Unlock()
			}
		})
	}
	for r := range 2 {
		s := []*postgres.Store{grouped, lone}[r]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ch, node := channels[rng.IntN(len(channels))], fmt.Sprintf("n%d-%d", r, i)
				pos, err := s.Register(ctx, ch, node)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				regs = append(regs, registration{ch, node, pos})
				mu.Unlock()
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			}
		})
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(regs) < 50 || len(appended) < 500 {
		t.Fatalf("only %d registrations and %d appends: the race was not exercised", len(regs), len(appended))
	}
	checked := 0
	for i, res := range appended {
		for _, r := range regs {
			if r.channel != chanOf[i] || r.pos.Epoch != res.Position.Epoch || res.Position.Offset <= r.pos.Offset {
				continue
			}
			checked++
			if !slices.Contains(res.Nodes, r.node) {
				t.Fatalf("%s offset %d (duplicate %v) was sent to %d nodes without %s, which registered at offset %d",
					chanOf[i], res.Position.Offset, res.Duplicate, len(res.Nodes), r.node, r.pos.Offset)
			}
		}
	}
	t.Logf("%d appends, %d registrations, %d (append, later registration) pairs checked", len(appended), len(regs), checked)

	// Nodes read after the fact agree, and Unregister takes a node out.
	for _, r := range regs[:10] {
		if err := grouped.Unregister(ctx, r.channel, r.node); err != nil {
			t.Fatal(err)
		}
		nodes, err := lone.Nodes(ctx, r.channel)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(nodes, r.node) {
			t.Fatalf("%s still lists %s after Unregister", r.channel, r.node)
		}
		res, err := lone.Append(ctx, r.channel, &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 100})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sorted(res.Nodes), sorted(nodes)) {
			t.Fatalf("append to %s went to %v, the directory lists %v", r.channel, res.Nodes, nodes)
		}
	}
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// TestDirectorySweepsDeadNodes: a node not seen for the TTL loses its
// registrations, and is told so (NodeAlive false) when it comes back.
func TestDirectorySweepsDeadNodes(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_directory_sweep")
	s := open(t, d.URL, postgres.Options{NodeTTL: 300 * time.Millisecond})
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alive := func(node string) bool {
		t.Helper()
		known, err := s.NodeAlive(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		return known
	}
	if alive("dead") || alive("live") {
		t.Fatal("a node never seen is known")
	}
	if !alive("dead") {
		t.Fatal("a node just seen is not known")
	}
	pos, err := s.Register(ctx, "room:x", "dead")
	if err != nil {
		t.Fatal(err)
	}
	if pos.Offset != 0 || pos.Epoch == "" {
		t.Fatalf("a channel nobody published to registers at %+v", pos)
	}
	if p, err := s.Position(ctx, "room:x"); err != nil || p != pos {
		t.Fatalf("Position %+v, %v; Register said %+v", p, err, pos)
	}
	if _, err := s.Register(ctx, "room:x", "live"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		alive("live") // sweeps
		nodes, err := s.Nodes(ctx, "room:x")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(nodes, []string{"live"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("room:x lists %v, want only the live node", nodes)
		}
	}
	if alive("dead") {
		t.Fatal("a swept node is told it was known")
	}
}

// TestUnregisterLeavesNothingForUnusedChannels: subscribing to a channel
// nobody publishes to stores nothing once the subscription is gone (the
// Store contract); a channel with publications keeps its row.
func TestUnregisterLeavesNothingForUnusedChannels(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_directory_empty")
	s := open(t, d.URL, postgres.Options{})
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows := func(ch string) int {
		t.Helper()
		var n int
		if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM parley_channels WHERE name = $1`, ch).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before, err := s.Position(ctx, "room:quiet")
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"a", "b"} {
		if pos, err := s.Register(ctx, "room:quiet", node); err != nil || pos != before {
			t.Fatalf("Register: %+v, %v; want %+v", pos, err, before)
		}
	}
	if err := s.Unregister(ctx, "room:quiet", "a"); err != nil {
		t.Fatal(err)
	}
	if rows("room:quiet") != 1 {
		t.Fatal("the channel row went while a node was still registered")
	}
	if err := s.Unregister(ctx, "room:quiet", "b"); err != nil {
		t.Fatal(err)
	}
	if n := rows("room:quiet"); n != 0 {
		t.Fatalf("%d rows left for a channel nobody published to", n)
	}
	if after, err := s.Position(ctx, "room:quiet"); err != nil || after != before {
		t.Fatalf("position after: %+v, %v; want %+v", after, err, before)
	}
	if _, err := s.Register(ctx, "room:busy", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "room:busy", &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 10}); err != nil {
		t.Fatal(err)
	}
	if err := s.Unregister(ctx, "room:busy", "a"); err != nil {
		t.Fatal(err)
	}
	if rows("room:busy") != 1 {
		t.Fatal("a channel with a publication lost its row")
	}
}

// TestRegisterRacesUnregisterOfEmptyChannel: an Unregister removing an
// unused channel's row never makes a concurrent Register fail.
func TestRegisterRacesUnregisterOfEmptyChannel(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_directory_race")
	s := open(t, d.URL, postgres.Options{MaxConns: 8})
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				node := fmt.Sprintf("n%d", w)
				if _, err := s.Register(ctx, fmt.Sprint("room:r", i%3), node); err != nil {
					errs <- err
					return
				}
				if err := s.Unregister(ctx, fmt.Sprint("room:r", i%3), node); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestNodesGrouped: concurrent directory reads (grouped into one
// statement) each get their own channel's nodes.
func TestNodesGrouped(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_directory_nodes")
	s := open(t, d.URL, postgres.Options{})
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string][]string{}
	for i := range 40 {
		ch := fmt.Sprint("personal:u", i)
		for j := range i % 4 {
			node := fmt.Sprintf("n%d", j)
			if _, err := s.Register(ctx, ch, node); err != nil {
				t.Fatal(err)
			}
			want[ch] = append(want[ch], node)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40*5)
	for range 5 {
		for i := range 40 {
			wg.Go(func() {
				ch := fmt.Sprint("personal:u", i)
				got, err := s.Nodes(ctx, ch)
				if err == nil && !slices.Equal(sorted(got), sorted(want[ch])) {
					err = fmt.Errorf("%s: nodes %v, want %v", ch, got, want[ch])
				}
				if err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRegistrationsGrouped: registrations arriving together (a connect
// storm's first subscribers) share transactions, and each still gets its
// own channel's position and lands in its own row.
func TestRegistrationsGrouped(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_directory_register")
	s := open(t, d.URL, postgres.Options{})
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const channels, nodes = 30, 4
	for i := range channels {
		for range i % 5 {
			if _, err := s.Append(ctx, fmt.Sprint("room:", i), &message.Publication{Data: []byte(`1`)}, store.AppendOptions{HistorySize: 10, HistoryTTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// everyPair runs f for every channel and node at once.
	everyPair := func(f func(ch, node string) error) {
		var wg sync.WaitGroup
		errs := make(chan error, channels*nodes)
		for i := range channels {
			for n := range nodes {
				wg.Go(func() {
					if err := f(fmt.Sprint("room:", i), fmt.Sprint("n", n)); err != nil {
						errs <- err
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	everyPair(func(ch, node string) error {
		pos, err := s.Register(ctx, ch, node)
		if err != nil {
			return err
		}
		want, err := s.Position(ctx, ch)
		if err == nil && pos != want {
			err = fmt.Errorf("%s: registered at %+v, its position is %+v", ch, pos, want)
		}
		return err
	})
	for i := range channels {
		ch := fmt.Sprint("room:", i)
		got, err := s.Nodes(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"n0", "n1", "n2", "n3"}; !slices.Equal(sorted(got), want) {
			t.Errorf("%s: nodes %v, want %v", ch, got, want)
		}
	}
	groups, regs := s.DirectoryWriteStats()
	t.Logf("%d registrations in %d transactions", regs, groups)
	if regs != channels*nodes || groups >= regs {
		t.Errorf("%d registrations in %d transactions: none shared one", regs, groups)
	}

	// And all unregister at once: channels with history keep their row,
	// with nobody in it; the others leave nothing.
	everyPair(func(ch, node string) error { return s.Unregister(ctx, ch, node) })
	for i := range channels {
		ch := fmt.Sprint("room:", i)
		var rows int
		var left []string
		if err := s.Pool().QueryRow(ctx, `SELECT count(*), coalesce(max(nodes), '{}') FROM parley_channels WHERE name = $1`, ch).Scan(&rows, &left); err != nil {
			t.Fatal(err)
		}
		if want := min(i%5, 1); rows != want || len(left) != 0 {
			t.Errorf("%s: %d rows holding %v, want %d with nobody", ch, rows, left, want)
		}
	}
	g2, w2 := s.DirectoryWriteStats()
	t.Logf("%d unregistrations in %d transactions", w2-regs, g2-groups)
	if w2-regs != channels*nodes || g2-groups >= w2-regs {
		t.Errorf("%d unregistrations in %d transactions: none shared one", w2-regs, g2-groups)
	}
}
