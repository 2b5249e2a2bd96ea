package postgres

// The batcher behind group commit (groupcommit.go) and grouped admissions
// (admit.go): requests that arrive while a group is in flight wait in a queue
// and go together in the next, so one round trip and one commit answer many.
// A worker that finds the queue empty runs a lone request at once, so a quiet
// store adds no wait: groups form only from requests that would otherwise
// queue for a pool connection.
//
// A group is sorted (stably) by its requests' key before it runs. Both users
// lock one row per key (a channel), so groups of this replica or another
// always take their locks in the same order and never wait in a cycle, and
// requests with the same key keep their arrival order.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/parley-chat/parley/chatserver/store"
)

// pending is one request waiting in a batcher.
type pending[Q, R any] struct {
	ctx  context.Context
	q    Q
	done chan outcome[R] // buffered: a worker never waits for the caller
}

type outcome[R any] struct {
	val R
	err error
}

func (p *pending[Q, R]) answer(val R, err error) { p.done <- outcome[R]{val, err} }

// batcher owns the queue and the workers that run its groups.
type batcher[Q, R any] struct {
	queue    chan *pending[Q, R]
	maxGroup int
	key      func(Q) string
	// run answers every request of a sorted group whose callers still wait.
	run  func([]*pending[Q, R])
	quit chan struct{} // closed when stop begins: workers end after their group
	// stopped is closed when stop has answered the queue: a request queued
	// after that (do racing stop) would wait for nobody.
	stopped chan struct{}
	wg      sync.WaitGroup

	// groups and items count what the workers ran (for tests and the
	// batch-size figure in benchmarks).
	groups, items atomic.Int64
}

// newBatcher starts workers, each running one group at a time of up to
// maxGroup requests.
func newBatcher[Q, R any](workers, maxGroup int, key func(Q) string, run func([]*pending[Q, R])) *batcher[Q, R] {
	b := &batcher[Q, R]{
		queue: make(chan *pending[Q, R], 4*maxGroup*workers), maxGroup: maxGroup,
		key: key, run: run, quit: make(chan struct{}), stopped: make(chan struct{}),
	}
	for range workers {
		b.wg.Add(1)
		go b.work()
	}
	return b
}

// errClosed answers requests the store can no longer run.
var errClosed = fmt.Errorf("%w: postgres store closed", store.ErrUnavailable)

// do queues one request and waits for its answer (or ctx).
func (b *batcher[Q, R]) do(ctx context.Context, q Q) (R, error) {
	var zero R
	p := &pending[Q, R]{ctx: ctx, q: q, done: make(chan outcome[R], 1)}
	select {
	case <-b.quit:
		return zero, errClosed
	default:
	}
	select {
	case b.queue <- p:
	case <-b.quit:
		return zero, errClosed
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case o := <-p.done:
		return o.val, o.err
	case <-b.stopped:
		select {
		case o := <-p.done:
			return o.val, o.err
		default:
			return zero, errClosed
		}
	case <-ctx.Done():
		// Sent or about to be: it may still take effect. Like a lost reply
		// to a lone statement, the caller was not told it did.
		return zero, ctx.Err()
	}
}

// stop ends the workers once their groups are answered; requests still
// queued fail as unavailable.
func (b *batcher[Q, R]) stop() {
	close(b.quit)
	b.wg.Wait()
	defer close(b.stopped)
	for {
		select {
		case p := <-b.queue:
			var zero R
			p.answer(zero, errClosed)
		default:
			return
		}
	}
}

func (b *batcher[Q, R]) work() {
	defer b.wg.Done()
	group := make([]*pending[Q, R], 0, b.maxGroup)
	for {
		group = group[:0]
		select {
		case <-b.quit:
			return
		case p := <-b.queue:
			group = append(group, p)
		}
	drain:
		for len(group) < b.maxGroup {
			select {
			case p := <-b.queue:
				group = append(group, p)
			default:
				break drain
			}
		}
		b.runLive(group)
	}
}

// runLive drops the requests whose callers gave up while queued (never
// sent), then sorts and runs the rest.
func (b *batcher[Q, R]) runLive(group []*pending[Q, R]) {
	live := group[:0:0]
	for _, p := range group {
		if err := p.ctx.Err(); err != nil {
			var zero R
			p.answer(zero, err)
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	b.groups.Add(1)
	b.items.Add(int64(len(live)))
	slices.SortStableFunc(live, func(x, y *pending[Q, R]) int { return cmp.Compare(b.key(x.q), b.key(y.q)) })
	b.run(live)
}

// answerGroup answers a group's requests from one batch call, which
// returns a value per request or fails as a whole. A batch that never
// reached the server (a dead pooled connection) is sent again once; one
// the server refused is tried request by request, so each caller gets its
// own answer and one bad request fails nobody else.
func answerGroup[Q, R any](group []*pending[Q, R], batch func([]*pending[Q, R]) ([]R, error)) {
	var vals []R
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if vals, err = batch(group); !retryable(err) {
			break
		}
	}
	if err != nil && len(group) > 1 {
		for i := range group {
			answerGroup(group[i:i+1], batch)
		}
		return
	}
	var zero R
	for i, r := range group {
		if err != nil {
			r.answer(zero, err)
			continue
		}
		r.answer(vals[i], nil)
	}
}
