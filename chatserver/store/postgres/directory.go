package postgres

// The subscription directory (store.Directory): which replicas have local
// subscribers in which channel, kept in the channel's row (nodes, an array
// of node ids) beside its offsets, so that a publisher learns, from the
// statement that gives its publication an offset, exactly the replicas owed
// it.
//
// Why it is exact. A registration changes the row's nodes, under the row's
// lock, and reads the row's position in the same statement; an append
// bumps the row's offset under the same lock and returns the nodes of the
// row version it wrote (an UPDATE that waited for a lock works on the
// newest version, whatever its snapshot). Whichever goes first:
//   - the append: the registration waits for its commit and returns a
//     position that counts the publication, which the registering node
//     reads from history if it needs it;
//   - the registration: the append waits, and returns the nodes with the
//     new one.
// A separate table of (channel, node) read by the append would not do: the
// append's snapshot could predate a registration it then waited for.

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// DefaultNodeTTL is how long a node's registrations outlive its last
// NodeAlive: long enough for a replica to ride out a short database outage
// (it registers again when it comes back, see NodeAlive), short enough that
// a dead replica is soon no longer addressed (its messages would be dropped
// by RabbitMQ as unroutable anyway).
const DefaultNodeTTL = time.Minute

func collectGroupNodes(rows pgx.Rows) (map[string][]string, error) {
	defer rows.Close()
	nodes := map[string][]string{}
	for rows.Next() {
		var ch string
		var ns []string
		if err := rows.Scan(&ch, &ns); err != nil {
			return nil, err
		}
		nodes[ch] = ns
	}
	return nodes, rows.Err()
}

// Register implements store.Directory: one statement, which creates the
// channel's row when nobody has published yet (the row is the lock appends
// and registrations meet on, and holds the directory). Such a row is the
// channel's initial position, which a first Append would create anyway,
// and goes again with its last registration (Unregister).
func (s *Store) Register(ctx context.Context, channel, node string) (message.StreamPosition, error) {
	if err := validChannel(channel); err != nil {
		return message.StreamPosition{}, err
	}
	if node == "" {
		return message.StreamPosition{}, errors.New("postgres store: register needs a node")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	pos, err := s.registers.do(ctx, registerRequest{channel: channel, node: node})
	return pos, wrapErr("register", err)
}

// registerSQL adds node to the channel row (made if missing) and returns
// the position under the row's lock, so that every append after it lists
// the node.
const registerSQL = `
	INSERT INTO parley_channels AS c (name, epoch, nodes) VALUES ($1, $2, ARRAY[$3::text])
	ON CONFLICT (name) DO UPDATE SET nodes = CASE WHEN $3 = ANY(c.nodes) THEN c.nodes ELSE array_append(c.nodes, $3) END
	RETURNING top_offset, epoch`

type registerRequest struct{ channel, node string }

// key orders a group's rows by channel, as group commit locks them.
func (r registerRequest) key() string { return r.channel }

// Directory writes in flight at once, and the most in one group (as long
// as its row locks are held).
const directoryGroups, directoryGroupMax = 2, 64

type registrar = batcher[registerRequest, message.StreamPosition]

// newRegistrar groups registrations: a connect storm brings a first
// subscriber for hundreds of rooms at once, each a commit, while the
// room's later subscribers wait for it. A group is one pipelined
// transaction, one commit (durable: a registration lost to a crash would
// leave the node unsent). Its rows are locked in the batcher's order, the
// order group commit locks them in, so the two never wait in a cycle.
func newRegistrar(s *Store) *registrar {
	return newBatcher(directoryGroups, directoryGroupMax, registerRequest.key, s.registerGroup)
}

// DirectoryWriteStats reports how many transactions carried how many
// registrations and unregistrations since the store opened (for tests and
// benchmarks).
func (s *Store) DirectoryWriteStats() (groups, writes int64) {
	return s.registers.groups.Load() + s.unregisters.groups.Load(), s.registers.items.Load() + s.unregisters.items.Load()
}

func (s *Store) registerGroup(group []*pending[registerRequest, message.StreamPosition]) {
	ctx, cancel := s.opCtx(context.Background())
	defer cancel()
	answerGroup(group, func(g []*pending[registerRequest, message.StreamPosition]) ([]message.StreamPosition, error) {
		return s.registerBatch(ctx, g)
	})
}

// registerBatch runs registerSQL for each request in one implicit
// transaction (a pipeline with one Sync); the positions are valid only
// when it commits.
func (s *Store) registerBatch(ctx context.Context, group []*pending[registerRequest, message.StreamPosition]) ([]message.StreamPosition, error) {
	b := &pgx.Batch{}
	for _, p := range group {
		b.Queue(registerSQL, p.q.channel, store.InitialEpoch(s.seed, p.q.channel), p.q.node)
	}
	br := s.pool.SendBatch(ctx, b)
	positions := make([]message.StreamPosition, len(group))
	var err error
	for i := 0; err == nil && i < len(group); i++ {
		var offset int64
		err = br.QueryRow().Scan(&offset, &positions[i].Epoch)
		positions[i].Offset = uint64(offset)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return positions, nil
}

// Unregister implements store.Directory. A channel row that Register
// created and nobody published into goes with its last registration, so
// subscribing to names nobody publishes to leaves nothing behind (the
// Store contract: only appends create streams). Its position was the
// initial one, which a new row gives again.
func (s *Store) Unregister(ctx context.Context, channel, node string) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.unregisters.do(ctx, registerRequest{channel: channel, node: node})
	return wrapErr("unregister", err)
}

type unregistrar = batcher[registerRequest, struct{}]

// newUnregistrar groups unregistrations as newRegistrar groups
// registrations: a disconnect storm ends the last local subscription of
// hundreds of rooms at once.
func newUnregistrar(s *Store) *unregistrar {
	return newBatcher(directoryGroups, directoryGroupMax, registerRequest.key, s.unregisterGroup)
}

func (s *Store) unregisterGroup(group []*pending[registerRequest, struct{}]) {
	ctx, cancel := s.opCtx(context.Background())
	defer cancel()
	answerGroup(group, func(g []*pending[registerRequest, struct{}]) ([]struct{}, error) {
		b := &pgx.Batch{}
		for _, p := range g {
			b.Queue(`UPDATE parley_channels SET nodes = array_remove(nodes, $2) WHERE name = $1 AND $2 = ANY(nodes)`, p.q.channel, p.q.node)
			b.Queue(`DELETE FROM parley_channels WHERE name = $1 AND top_offset = 0 AND epoch = $2 AND nodes = '{}'`,
				p.q.channel, store.InitialEpoch(s.seed, p.q.channel))
		}
		if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
			return nil, err
		}
		return make([]struct{}, len(g)), nil
	})
}

// Nodes implements store.Directory. Reads that arrive while one is in
// flight go together in the next (one statement for all their channels):
// a group message tells each member's personal channel at once, and each
// of those reads the directory.
func (s *Store) Nodes(ctx context.Context, channel string) ([]string, error) {
	if err := validChannel(channel); err != nil {
		return nil, err
	}
	nodes, err := s.lookups.do(ctx, channel)
	return nodes, wrapErr("directory", err)
}

type lookuper = batcher[string, []string]

func newLookuper(s *Store) *lookuper {
	return newBatcher(2, 64, func(ch string) string { return ch }, s.lookupGroup)
}

func (s *Store) lookupGroup(group []*pending[string, []string]) {
	ctx, cancel := s.opCtx(context.Background())
	defer cancel()
	channels := make([]string, len(group))
	for i, p := range group {
		channels[i] = p.q
	}
	var nodes map[string][]string
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var rows pgx.Rows
		if rows, err = s.pool.Query(ctx, `SELECT name, nodes FROM parley_channels WHERE name = ANY($1)`, channels); err == nil {
			nodes, err = collectGroupNodes(rows)
		}
		if !retryable(err) {
			break
		}
	}
	for _, p := range group {
		// Each caller owns its slice: one channel may be asked for twice.
		p.answer(slices.Clone(nodes[p.q]), err)
	}
}

// NodeAlive implements store.Directory. Every replica sweeps: the nodes
// table holds one row per live replica, so finding the expired ones is
// cheap, and their registrations go through the index on node. A node that
// finds its row gone registers its channels again; a registration of an
// earlier life under the same id that survived only brings it messages for
// channels it no longer holds, which its broker drops.
func (s *Store) NodeAlive(ctx context.Context, node string) (bool, error) {
	if node == "" {
		return false, errors.New("postgres store: node alive needs a node")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var inserted bool
	// xmax is 0 on a row this statement inserted, not on one it updated.
	err := s.pool.QueryRow(ctx, `INSERT INTO parley_nodes (node, seen_at) VALUES ($1, now())
		ON CONFLICT (node) DO UPDATE SET seen_at = now() RETURNING xmax = 0`, node).Scan(&inserted)
	if err == nil {
		err = s.sweepDeadNodes(ctx)
	}
	if err != nil {
		return false, wrapErr("node alive", err)
	}
	return !inserted, nil
}

// ApplicationName is the application_name of the store's connections; it
// names what replicas of this release send each other, so that a replica
// sees one of another release as a legacy client and both fall back to
// bindings for the rolling update. Releases before the directory set none;
// "parley-chatserver" sent publications one per message; "/2" packs them
// (broker.Directed.SendTo). Change the suffix with the wire.
const ApplicationName = "parley-chatserver/2"

// LegacyClients implements store.Directory: sessions of the same role in the
// same database with another application_name. A role sees its own
// sessions in pg_stat_activity. Anything else the tenant connects with
// under the replicas' role (a psql session) counts too, and only costs the
// bindings of the older routing while it is connected.
func (s *Store) LegacyClients(ctx context.Context) (int, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND usename = current_user AND backend_type = 'client backend'
		AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM $1`, ApplicationName).Scan(&n)
	return n, wrapErr("legacy clients", err)
}

// sweepDeadNodes takes the nodes not seen for the TTL out of every
// channel's directory (through the GIN index on nodes), then forgets them.
// Dead nodes are few: one statement each.
func (s *Store) sweepDeadNodes(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `SELECT node FROM parley_nodes WHERE seen_at < now() - $1::interval`, s.opts.NodeTTL)
	if err != nil {
		return err
	}
	dead, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, node := range dead {
		// One transaction: a node coming back meanwhile waits on the row
		// being deleted, then finds itself unknown and registers again,
		// after its old registrations are gone, not before.
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM parley_nodes WHERE node = $1 AND seen_at < now() - $2::interval`, node, s.opts.NodeTTL)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE parley_channels SET nodes = array_remove(nodes, $1) WHERE nodes @> ARRAY[$1::text]`, node)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

var _ store.Directory = (*Store)(nil)
