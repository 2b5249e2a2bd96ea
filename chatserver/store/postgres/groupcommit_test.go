package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
	"github.com/parley-chat/parley/chatserver/store/postgres"
)

// TestGroupCommitAcrossReplicas has two stores on one database (two
// replicas), each with many sequential publishers writing into the same few
// channels at once, so commits carry several appends and batches of the two
// replicas contend for the same channel rows. Every channel's offsets must be
// dense and distinct, history must hold exactly what was acknowledged, and each
// publisher's acknowledged appends must be in its own order.
func TestGroupCommitAcrossReplicas(t *testing.T) {
	replicas := twoReplicas(t, "parley_groupcommit")
	const channels, publishers, each = 6, 24, 30
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	type ack struct {
		channel string
		offset  uint64
		data    string
	}
	acks := make([][]ack, publishers)
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := replicas[p%len(replicas)]
			for i := range each {
				ch := fmt.Sprintf("gc:%d", (p+i)%channels)
				data := fmt.Sprintf(`{"p":%d,"i":%d}`, p, i)
				res, err := s.Append(ctx, ch, &message.Publication{Data: []byte(data)}, store.AppendOptions{HistorySize: 10000})
				if err != nil {
					errs <- fmt.Errorf("publisher %d append %d: %w", p, i, err)
					return
				}
				if res.Publication.Offset != res.Position.Offset || string(res.Publication.Data) != data {
					errs <- fmt.Errorf("publisher %d: result %+v does not describe what it appended", p, res)
					return
				}
				acks[p] = append(acks[p], ack{ch, res.Position.Offset, data})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Each channel: offsets 1..n, each holding what its append was told.
	want := map[string]map[uint64]string{}
	for p := range publishers {
		last := map[string]uint64{}
		for _, a := range acks[p] {
			if a.offset <= last[a.channel] {
				t.Fatalf("publisher %d: offset %d in %s after %d: its own order was not kept", p, a.offset, a.channel, last[a.channel])
			}
			last[a.channel] = a.offset
			if want[a.channel] == nil {
				want[a.channel] = map[uint64]string{}
			}
			if prev, dup := want[a.channel][a.offset]; dup {
				t.Fatalf("%s offset %d acknowledged twice (%s and %s)", a.channel, a.offset, prev, a.data)
			}
			want[a.channel][a.offset] = a.data
		}
	}
	total := 0
	for ch, offs := range want {
		pubs, pos, err := replicas[0].History(ctx, ch, store.HistoryOptions{Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		if int(pos.Offset) != len(offs) || len(pubs) != len(offs) {
			t.Fatalf("%s: top offset %d and %d stored, want %d acknowledged", ch, pos.Offset, len(pubs), len(offs))
		}
		for i, p := range pubs {
			if p.Offset != uint64(i+1) || string(p.Data) != offs[p.Offset] {
				t.Fatalf("%s: publication %d is offset %d %q, want offset %d %q", ch, i, p.Offset, p.Data, i+1, offs[uint64(i+1)])
			}
		}
		total += len(offs)
	}
	if total != publishers*each {
		t.Fatalf("%d acknowledged, want %d", total, publishers*each)
	}
	var commits, appends int64
	for _, s := range replicas {
		c, a := s.GroupCommitStats()
		commits, appends = commits+c, appends+a
	}
	t.Logf("%d appends in %d commits (%.1f per commit)", appends, commits, float64(appends)/float64(commits))
	if appends != publishers*each {
		t.Fatalf("the group committer carried %d appends, want %d", appends, publishers*each)
	}
	if commits >= appends {
		t.Fatalf("%d appends took %d commits: none were grouped", appends, commits)
	}
}

// TestGroupCommitFailureIsolated makes one append in a busy batch fail on the
// server (a trigger refuses its data). The batch's transaction rolls back as
// a whole, so each of its appends is retried alone: the bad one fails, every
// other one is stored, and the rolled-back offsets leave no gap.
func TestGroupCommitFailureIsolated(t *testing.T) {
	d := testenv.NewDatabase(t, "parley_groupcommit_fail")
	s := open(t, d.URL, postgres.Options{MaxConns: 2, CommitWorkers: 1})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The channel rows exist first, so the batches below are not split by
	// channel creation.
	for _, ch := range []string{"gcf:a", "gcf:b"} {
		if _, err := s.Append(ctx, ch, &message.Publication{Data: []byte(`"first"`)}, store.AppendOptions{HistorySize: 100}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx, `
		CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF convert_from(NEW.data, 'UTF8') = '"boom"' THEN RAISE EXCEPTION 'refused by the test'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_boom BEFORE INSERT ON parley_publications FOR EACH ROW EXECUTE FUNCTION refuse_boom();`); err != nil {
		t.Fatal(err)
	}
	c0, a0 := s.GroupCommitStats()
	const n = 40
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := fmt.Sprintf(`"m%d"`, i)
			if i == n/2 {
				data = `"boom"`
			}
			_, results[i] = s.Append(ctx, []string{"gcf:a", "gcf:b"}[i%2], &message.Publication{Data: []byte(data)}, store.AppendOptions{HistorySize: 100})
		}()
	}
	wg.Wait()
	for i, err := range results {
		switch {
		case i == n/2 && (err == nil || !strings.Contains(err.Error(), "refused by the test")):
			t.Fatalf("the refused append returned %v", err)
		case i != n/2 && err != nil:
			t.Fatalf("append %d failed with the batch's bad neighbour: %v", i, err)
		}
	}
	c1, a1 := s.GroupCommitStats()
	if a1-a0 <= c1-c0 {
		t.Fatalf("%d appends in %d commits: the bad append was never in a batch, the test proves nothing", a1-a0, c1-c0)
	}
	for _, ch := range []string{"gcf:a", "gcf:b"} {
		pubs, pos, err := s.History(ctx, ch, store.HistoryOptions{Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		wantN := 1 + n/2
		if ch == "gcf:a" {
			wantN-- // the refused one was for a
		}
		if len(pubs) != wantN || int(pos.Offset) != wantN {
			t.Fatalf("%s: %d stored, top offset %d, want %d dense", ch, len(pubs), pos.Offset, wantN)
		}
		for i, p := range pubs {
			if p.Offset != uint64(i+1) {
				t.Fatalf("%s: publication %d has offset %d: a gap", ch, i, p.Offset)
			}
		}
	}
}
