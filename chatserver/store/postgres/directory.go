package postgres

// The subscription directory (store.Directory): which replicas have local
// subscribers in which channel, kept beside the offsets so that a publisher
// learns, with the commit that gives its publication an offset, exactly the
// replicas owed it.
//
// Why it is exact. Register takes the channel row's lock (FOR SHARE) in the
// transaction that inserts the registration, and reads the position under
// it; an append holds the same row's lock from its UPDATE to its commit and
// reads the directory in a later statement of its transaction (each
// statement of a READ COMMITTED transaction sees what committed before it
// started). Whichever takes the lock first:
//   - the append: Register waits for its commit, so the position it returns
//     counts the publication; the registering node reads it from history if
//     it needs it;
//   - Register: the append waits for the registration to commit, and its
//     directory read, which starts after that, sees the node.
// A directory read in the append's first statement would not do: its
// snapshot could predate a registration it then waited for.

import (
	"context"
	"errors"
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

// nodesSQL reads one channel's registered nodes.
const nodesSQL = `SELECT node FROM parley_channel_nodes WHERE channel = $1`

// groupNodesSQL reads the registered nodes of a group's channels.
const groupNodesSQL = `SELECT channel, node FROM parley_channel_nodes WHERE channel = ANY($1)`

func scanNodes(br pgx.BatchResults) ([]string, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func scanGroupNodes(br pgx.BatchResults) (map[string][]string, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return collectGroupNodes(rows)
}

func collectGroupNodes(rows pgx.Rows) (map[string][]string, error) {
	defer rows.Close()
	nodes := map[string][]string{}
	for rows.Next() {
		var ch, node string
		if err := rows.Scan(&ch, &node); err != nil {
			return nil, err
		}
		nodes[ch] = append(nodes[ch], node)
	}
	return nodes, rows.Err()
}

// Register implements store.Directory: one round trip (an implicit
// transaction of three statements). It creates the channel's row when
// nobody has published yet: the row is the lock appends and registrations
// meet on. Such a row is the channel's initial position, which a first
// Append would have created anyway.
func (s *Store) Register(ctx context.Context, channel, node string) (message.StreamPosition, error) {
	if err := validChannel(channel); err != nil {
		return message.StreamPosition{}, err
	}
	if node == "" {
		return message.StreamPosition{}, errors.New("postgres store: register needs a node")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var pos message.StreamPosition
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO parley_channels (name, epoch) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, channel, store.InitialEpoch(s.seed, channel))
		b.Queue(`INSERT INTO parley_channel_nodes (channel, node) VALUES ($1, $2) ON CONFLICT DO NOTHING`, channel, node)
		b.Queue(`SELECT top_offset, epoch FROM parley_channels WHERE name = $1 FOR SHARE`, channel)
		br := s.pool.SendBatch(ctx, b)
		var offset int64
		_, err = br.Exec()
		if err == nil {
			_, err = br.Exec()
		}
		if err == nil {
			err = br.QueryRow().Scan(&offset, &pos.Epoch)
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		pos.Offset = uint64(offset)
		// No row: an Unregister elsewhere removed the empty channel between
		// the insert and the lock (it could not see this registration yet).
		if !retryable(err) && !errors.Is(err, pgx.ErrNoRows) {
			break
		}
	}
	return pos, wrapErr("register", err)
}

// Unregister implements store.Directory. A channel row that Register
// created and nobody published into goes with its last registration, so
// subscribing to names nobody publishes to leaves nothing behind (the
// Store contract: only appends create streams). Its position was the
// initial one, which a new row gives again.
func (s *Store) Unregister(ctx context.Context, channel, node string) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM parley_channel_nodes WHERE channel = $1 AND node = $2`, channel, node)
	b.Queue(`DELETE FROM parley_channels c WHERE c.name = $1 AND c.top_offset = 0 AND c.epoch = $2
		AND NOT EXISTS (SELECT 1 FROM parley_channel_nodes d WHERE d.channel = $1)`, channel, store.InitialEpoch(s.seed, channel))
	return wrapErr("unregister", s.pool.SendBatch(ctx, b).Close())
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
		if rows, err = s.pool.Query(ctx, groupNodesSQL, channels); err == nil {
			nodes, err = collectGroupNodes(rows)
		}
		if !retryable(err) {
			break
		}
	}
	for _, p := range group {
		p.answer(nodes[p.q], err)
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
	ttl := s.opts.NodeTTL
	b := &pgx.Batch{}
	// xmax is 0 on a row this statement inserted, not on one it updated.
	b.Queue(`INSERT INTO parley_nodes (node, seen_at) VALUES ($1, now())
		ON CONFLICT (node) DO UPDATE SET seen_at = now() RETURNING xmax = 0`, node)
	b.Queue(`DELETE FROM parley_channel_nodes d USING parley_nodes n
		WHERE d.node = n.node AND n.seen_at < now() - $1::interval`, ttl)
	b.Queue(`DELETE FROM parley_nodes WHERE seen_at < now() - $1::interval`, ttl)
	br := s.pool.SendBatch(ctx, b)
	var inserted bool
	err := br.QueryRow().Scan(&inserted)
	for i := 0; i < 2 && err == nil; i++ {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, wrapErr("node alive", err)
	}
	return !inserted, nil
}

// ApplicationName is the application_name of the store's connections.
// Releases before the directory set none.
const ApplicationName = "parley-chatserver"

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

var _ store.Directory = (*Store)(nil)
