package postgres

// Grouped admissions. Every signed-in connection is admitted against the
// per-user connection limit with a round trip to PostgreSQL (AdmitPresence),
// and a connect storm brings thousands at once: measured on the many-rooms
// benchmark, the admission was ≈ 170 µs of the replica's CPU and ≈ 60 µs of
// PostgreSQL's per connection, most of the connect path's cost. Admissions
// arriving together now go in one pipelined transaction: each still takes
// its user's lock, adds its entry and takes it back past the limit, in that
// order, so the count stays exact. A few groups run at once, because one
// query at a time serialised what the pool does in parallel (tried on
// position reads).

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/chatserver/message"
)

const (
	// admitGroups is how many groups are in flight at once.
	admitGroups = 3
	// admitGroupMax bounds a group (and so how long its locks are held).
	admitGroupMax = 64
)

type admitRequest struct {
	channel string
	entry   message.ClientInfo
	limit   int
	done    chan admitResult // buffered: the group never waits for its caller
}

type admitResult struct {
	admitted bool
	err      error
}

// admissions queues AdmitPresence calls for the groups that run them.
type admissions struct {
	mu       sync.Mutex
	queue    []*admitRequest
	inFlight int
}

// admitGrouped runs one admission in the next group.
func (s *Store) admitGrouped(ctx context.Context, channel string, entry message.ClientInfo, limit int) (bool, error) {
	req := &admitRequest{channel: channel, entry: entry, limit: limit, done: make(chan admitResult, 1)}
	a := &s.admits
	a.mu.Lock()
	a.queue = append(a.queue, req)
	start := a.inFlight < admitGroups
	if start {
		a.inFlight++
	}
	a.mu.Unlock()
	if start {
		go s.runAdmissions()
	}
	select {
	case r := <-req.done:
		return r.admitted, r.err
	case <-ctx.Done():
		// The group goes on; an entry it adds expires with the presence TTL.
		return false, ctx.Err()
	}
}

// runAdmissions runs groups until the queue is empty. Each group's query has
// the store's operation timeout, so this ends within it after Close.
func (s *Store) runAdmissions() {
	a := &s.admits
	for {
		a.mu.Lock()
		n := min(len(a.queue), admitGroupMax)
		if n == 0 {
			a.inFlight--
			a.mu.Unlock()
			return
		}
		group := slices.Clone(a.queue[:n])
		a.queue = slices.Delete(a.queue, 0, n)
		a.mu.Unlock()
		s.admitGroup(group)
	}
}

// admitGroup runs a group in one implicit transaction (one round trip, one
// asynchronous commit). Locks are taken in channel order, so two groups
// (of this replica or another) never wait for each other in a cycle. If the
// group fails as a whole, each admission is retried on its own.
func (s *Store) admitGroup(group []*admitRequest) {
	slices.SortStableFunc(group, func(x, y *admitRequest) int { return cmp.Compare(x.channel, y.channel) })
	ctx, cancel := s.opCtx(context.Background())
	defer cancel()
	undone, err := s.admitBatch(ctx, group)
	if err != nil {
		for _, r := range group {
			undone, err := s.admitBatch(ctx, []*admitRequest{r})
			r.done <- admitResult{admitted: err == nil && !undone[0], err: err}
		}
		return
	}
	for i, r := range group {
		r.done <- admitResult{admitted: !undone[i]}
	}
}

// admitBatch queues lock, upsert and conditional undo for every request
// after the soft-commit setting, and reports which were undone.
func (s *Store) admitBatch(ctx context.Context, group []*admitRequest) ([]bool, error) {
	b := &pgx.Batch{}
	b.Queue(softCommitSQL)
	for _, r := range group {
		b.Queue(admitLockSQL, r.channel)
		b.Queue(addPresenceSQL, r.channel, r.entry.Client, r.entry.User, r.entry.ConnInfo, r.entry.ChanInfo, s.opts.PresenceTTL)
		b.Queue(admitUndoSQL, r.channel, r.entry.Client, r.limit)
	}
	br := s.pool.SendBatch(ctx, b)
	undone := make([]bool, len(group))
	_, err := br.Exec()
	for i := 0; err == nil && i < len(group); i++ {
		if _, err = br.Exec(); err != nil { // lock
			break
		}
		if _, err = br.Exec(); err != nil { // upsert
			break
		}
		var one int
		switch err = br.QueryRow().Scan(&one); {
		case err == nil:
			undone[i] = true
		case errors.Is(err, pgx.ErrNoRows):
			err = nil
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return undone, err
}
