package postgres

// Grouped admissions. Every signed-in connection is admitted against the
// per-user connection limit with a round trip to PostgreSQL (AdmitPresence),
// and a connect storm brings thousands at once: measured on the many-rooms
// benchmark, the admission was ≈ 170 µs of the replica's CPU and ≈ 60 µs of
// PostgreSQL's per connection, most of the connect path's cost. Admissions
// arriving together now go in one pipelined transaction: each still takes
// its user's lock, then adds its entry only while the others number fewer
// than the limit, so the count stays exact. The queue and the groups are the
// batcher's (batcher.go), shared with group commit.

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/chatserver/message"
)

const (
	// admitGroups is how many groups are in flight at once: one query at a
	// time serialised what the pool does in parallel (measured on grouped
	// position reads, dropped), so a few run side by side.
	admitGroups = 3
	// admitGroupMax bounds a group (and so how long its locks are held).
	admitGroupMax = 64
)

type admitRequest struct {
	channel string
	entry   message.ClientInfo
	limit   int
}

type admitter = batcher[admitRequest, bool]

type pendingAdmit = pending[admitRequest, bool]

func newAdmitter(s *Store) *admitter {
	return newBatcher(admitGroups, admitGroupMax, func(r admitRequest) string { return r.channel }, s.admitGroup)
}

// admitGroup runs a group (sorted by channel) in one implicit transaction:
// one round trip, one asynchronous commit. If the group fails as a whole,
// each admission is retried on its own.
func (s *Store) admitGroup(group []*pendingAdmit) {
	ctx, cancel := s.opCtx(context.Background())
	defer cancel()
	admitted, err := s.admitBatch(ctx, group)
	if err != nil {
		for _, r := range group {
			admitted, err := s.admitBatch(ctx, []*pendingAdmit{r})
			r.answer(err == nil && admitted[0], err)
		}
		return
	}
	for i, r := range group {
		r.answer(admitted[i], nil)
	}
}

// admitBatch queues the lock and the conditional upsert of every request
// after the soft-commit setting, and reports which were admitted.
func (s *Store) admitBatch(ctx context.Context, group []*pendingAdmit) ([]bool, error) {
	b := &pgx.Batch{}
	b.Queue(softCommitSQL)
	for _, p := range group {
		r := p.q
		b.Queue(admitLockSQL, r.channel)
		b.Queue(admitSQL, r.channel, r.entry.Client, r.entry.User, r.entry.ConnInfo, r.entry.ChanInfo, s.opts.PresenceTTL, r.limit)
	}
	br := s.pool.SendBatch(ctx, b)
	admitted := make([]bool, len(group))
	_, err := br.Exec()
	for i := 0; err == nil && i < len(group); i++ {
		if _, err = br.Exec(); err != nil { // lock
			break
		}
		var one int
		switch err = br.QueryRow().Scan(&one); {
		case err == nil:
			admitted[i] = true
		case errors.Is(err, pgx.ErrNoRows):
			err = nil // refused: the channel holds the limit already
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return admitted, err
}
