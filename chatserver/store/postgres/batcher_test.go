package postgres

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/store"
)

// The batcher's own rules, with a run function in place of PostgreSQL: a
// request whose caller gave up while queued is never run, groups are sorted
// by key keeping arrival order within a key, and stop answers what is still
// queued instead of leaving callers waiting.
func TestBatcherGroupsAndGivesUp(t *testing.T) {
	type req struct{ key, id string }
	first := make(chan struct{})
	release := make(chan struct{})
	groups := make(chan []string, 8)
	b := newBatcher(1, 16, func(r req) string { return r.key }, func(live []*pending[req, string]) {
		var ids []string
		for _, p := range live {
			ids = append(ids, p.q.id)
			p.answer(p.q.id, nil)
		}
		groups <- ids
		if ids[0] == "hold" {
			close(first)
			<-release // the worker is busy: what arrives now queues
		}
	})
	defer b.stop()

	ctx := context.Background()
	held := make(chan error, 1)
	go func() { _, err := b.do(ctx, req{"a", "hold"}); held <- err }()
	<-first

	// Queued while the worker is busy: one caller gives up before the group
	// runs, the others form one group.
	gaveUp, cancel := context.WithCancel(ctx)
	answers := make(chan string, 8)
	queue := func(c context.Context, r req) {
		go func() {
			v, err := b.do(c, r)
			if err != nil {
				v = r.id + ":" + err.Error()
			}
			answers <- v
		}()
	}
	for i, r := range []req{{"c", "c1"}, {"b", "b1"}, {"c", "c2"}} {
		queue(ctx, r)
		waitQueued(t, b, i+1) // one at a time: the arrival order is known
	}
	queue(gaveUp, req{"a", "gone"})
	waitQueued(t, b, 4)
	cancel()
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("held request: %v", err)
	}
	<-groups // the held group
	select {
	case got := <-groups:
		if want := []string{"b1", "c1", "c2"}; !slices.Equal(got, want) {
			t.Fatalf("second group %v, want %v (sorted by key, arrival order within a key, the given-up request left out)", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued requests never ran")
	}
	var got []string
	for range 4 {
		got = append(got, <-answers)
	}
	slices.Sort(got)
	if !slices.Equal(got[:3], []string{"b1", "c1", "c2"}) || !strings.HasPrefix(got[3], "gone:") || !strings.Contains(got[3], context.Canceled.Error()) {
		t.Fatalf("answers %v", got)
	}
}

func TestBatcherStopAnswersQueued(t *testing.T) {
	running := make(chan struct{}, 1)
	release := make(chan struct{})
	b := newBatcher(1, 4, func(k string) string { return k }, func(live []*pending[string, int]) {
		running <- struct{}{}
		<-release
		for _, p := range live {
			p.answer(1, nil)
		}
	})
	ctx := context.Background()
	errs := make(chan error, 3)
	do := func() { _, err := b.do(ctx, "k"); errs <- err }
	go do()
	<-running // the first is being run; the next two wait in the queue
	go do()
	go do()
	waitQueued(t, b, 2)
	stopped := make(chan struct{})
	go func() { b.stop(); close(stopped) }()
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not finish")
	}
	var ok, closed int
	for range 3 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrUnavailable):
			closed++
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	// The running group is answered; the queued ones are either run by the
	// worker before it sees stop or refused as closed, never left waiting.
	if ok == 0 || ok+closed != 3 {
		t.Fatalf("%d answered, %d refused as closed", ok, closed)
	}
	if _, err := b.do(ctx, "late"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("do after stop: %v, want ErrUnavailable", err)
	}
}

// waitQueued waits until n requests sit in the queue.
func waitQueued[Q, R any](t *testing.T, b *batcher[Q, R], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(b.queue) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", len(b.queue), n)
		}
		time.Sleep(time.Millisecond)
	}
}
