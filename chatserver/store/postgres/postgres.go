// Package postgres is the durable Store shared by every replica: history,
// stream positions and epochs, idempotency keys, read receipts and presence in
// PostgreSQL (pgx v5 pool). Append returns only after its transaction
// committed; offsets are assigned under the channel row's lock, so replicas
// appending to one channel at once get dense, distinct offsets.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// Defaults for Options left zero.
const (
	DefaultPresenceTTL       = 60 * time.Second
	DefaultRetentionInterval = time.Minute
	DefaultRetentionBatch    = 1000
	DefaultOpTimeout         = 10 * time.Second
	DefaultConnectTimeout    = 5 * time.Second
)

// URLEnv overrides config.Store.URLFile.
const URLEnv = "PARLEY_STORE_URL"

// Options configure a Store.
type Options struct {
	// MaxConns sizes the pool; zero keeps pgx's default (max(4, CPUs)).
	MaxConns int
	// PresenceTTL is how long a presence entry lives without a refresh.
	PresenceTTL time.Duration
	// NodeTTL is how long a node's directory registrations outlive its last
	// NodeAlive (DefaultNodeTTL when zero).
	NodeTTL time.Duration
	// RetentionInterval is how often the background retention job runs;
	// negative disables the job (tests call Retain directly).
	RetentionInterval time.Duration
	// RetentionBatch caps the rows one retention statement deletes.
	RetentionBatch int
	// OpTimeout bounds an operation whose context has no deadline, so callers
	// fail fast with store.ErrUnavailable instead of hanging on a lost database.
	OpTimeout time.Duration
	// AppendBatch caps the appends one group commit carries (groupcommit.go);
	// 1 commits every append alone, zero takes DefaultAppendBatch.
	AppendBatch int
	// CommitWorkers is how many group commits may be in flight at once; zero
	// takes DefaultCommitWorkers.
	CommitWorkers int
}

func (o *Options) defaults() {
	if o.NodeTTL <= 0 {
		o.NodeTTL = DefaultNodeTTL
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = DefaultPresenceTTL
	}
	if o.RetentionInterval == 0 {
		o.RetentionInterval = DefaultRetentionInterval
	}
	if o.RetentionBatch <= 0 {
		o.RetentionBatch = DefaultRetentionBatch
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	if o.AppendBatch <= 0 {
		o.AppendBatch = DefaultAppendBatch
	}
	if o.CommitWorkers <= 0 {
		o.CommitWorkers = DefaultCommitWorkers
	}
}

// Store is the PostgreSQL store.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	// seed derives the epoch of channels without a row (store.InitialEpoch).
	seed string
	// commit groups appends into shared commits; nil when AppendBatch is 1.
	commit *committer
	// admits groups concurrent connection admissions (admit.go).
	admits *admitter
	// lookups groups concurrent directory reads (directory.go).
	lookups *lookuper
	// registers groups concurrent directory registrations (directory.go).
	registers *registrar
	// unregisters groups concurrent unregistrations (directory.go).
	unregisters *unregistrar

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// URLFromConfig returns the database URL: the PARLEY_STORE_URL environment
// variable, else the contents of cfg.URLFile.
func URLFromConfig(cfg config.Store) (string, error) {
	if u := os.Getenv(URLEnv); u != "" {
		return u, nil
	}
	if cfg.URLFile == "" {
		return "", errors.New("store.urlFile: required for type postgres (or set " + URLEnv + ")")
	}
	b, err := os.ReadFile(cfg.URLFile)
	if err != nil {
		return "", fmt.Errorf("store.urlFile: %w", err)
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("store.urlFile: %s is empty", cfg.URLFile)
	}
	return u, nil
}

// Open builds a Store from the server config.
func Open(ctx context.Context, cfg config.Store, presenceTTL time.Duration) (*Store, error) {
	url, err := URLFromConfig(cfg)
	if err != nil {
		return nil, err
	}
	return New(ctx, url, Options{MaxConns: cfg.MaxConns, PresenceTTL: presenceTTL, RetentionInterval: cfg.RetentionInterval.D(), AppendBatch: cfg.AppendBatch})
}

// New connects to the database at url, migrates the schema and starts the
// retention job. The URL (which may hold a password) is never part of an error.
func New(ctx context.Context, url string, opts Options) (*Store, error) {
	opts.defaults()
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors quote the URL; keep the password out of logs.
		return nil, errors.New("postgres store: cannot parse the database URL")
	}
	if opts.MaxConns > 0 {
		pcfg.MaxConns = int32(opts.MaxConns)
	}
	// Replicas that read the directory say so: LegacyClients counts the
	// others (directory.go).
	pcfg.ConnConfig.RuntimeParams["application_name"] = ApplicationName
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	mctx, cancel := context.WithTimeout(ctx, 2*opts.OpTimeout)
	defer cancel()
	if err := Migrate(mctx, pool); err != nil {
		pool.Close()
		return nil, wrapErr("migrate", err)
	}
	s := &Store{pool: pool, opts: opts}
	if err := pool.QueryRow(mctx, `SELECT value FROM parley_meta WHERE key = 'epoch_seed'`).Scan(&s.seed); err != nil {
		pool.Close()
		return nil, wrapErr("read epoch seed", err)
	}
	if opts.AppendBatch > 1 {
		s.commit = newCommitter(s, opts.CommitWorkers, opts.AppendBatch)
	}
	s.admits = newAdmitter(s)
	s.lookups = newLookuper(s)
	s.registers = newRegistrar(s)
	s.unregisters = newUnregistrar(s)
	bg, stop := context.WithCancel(context.Background())
	s.stop = stop
	if opts.RetentionInterval > 0 {
		s.wg.Add(1)
		go s.retentionLoop(bg)
	}
	return s, nil
}

// Pool exposes the connection pool (for health checks and tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close stops the retention job and the group workers, then closes the pool.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.wg.Wait()
		if s.commit != nil {
			s.commit.stop()
		}
		s.admits.stop()
		s.lookups.stop()
		s.registers.stop()
		s.unregisters.stop()
		s.pool.Close()
	})
	return nil
}

// Ping checks that the database answers (for /readyz).
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	return wrapErr("ping", s.pool.Ping(ctx))
}

func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.OpTimeout)
}

// wrapErr classifies err: failures to reach or keep the database (network
// errors, terminated backends, a server shutting down, timeouts) wrap
// store.ErrUnavailable; the caller's own cancellation stays as it is; other
// errors are wrapped with the operation's name.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("postgres store: %s: %w", op, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%w: postgres store: %s: %v", store.ErrUnavailable, op, err)
	}
	return fmt.Errorf("postgres store: %s: %w", op, err)
}

func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),  // insufficient resources (too many connections, disk full)
			strings.HasPrefix(pgErr.Code, "57P"), // admin/crash shutdown, cannot connect now
			pgErr.Code == "57014":                // query canceled (statement timeout)
			return true
		}
		return false
	}
	// Everything else that is not a server-reported error comes from the
	// connection: refused, reset, EOF, timeouts, a closed pool.
	return true
}

// retryable reports whether an operation may be retried once at once: the
// error happened before anything was sent (a dead pooled connection).
func retryable(err error) bool {
	return err != nil && pgconn.SafeToRetry(err)
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validChannel(channel string) error {
	if channel == "" {
		return errors.New("postgres store: empty channel name")
	}
	return nil
}

// ensureChannel creates the channel's row, with the epoch its position had
// before (store.InitialEpoch), if it does not exist.
func (s *Store) ensureChannel(ctx context.Context, q querier, channel string) error {
	_, err := q.Exec(ctx, `INSERT INTO parley_channels (name, epoch) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, channel, store.InitialEpoch(s.seed, channel))
	return err
}

type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// appendSQL bumps the channel's top offset under its row lock and stores the
// publication when the channel keeps history, in one statement: it commits
// (autocommit) or fails as a whole. It returns the row's directory
// (directory.go) as the update left it: the newest version, read under the
// lock.
const appendSQL = `
WITH c AS (
	UPDATE parley_channels
	SET top_offset = top_offset + 1, history_size = $2, history_ttl = $3
	WHERE name = $1
	RETURNING id, top_offset, epoch, nodes
), p AS (
	INSERT INTO parley_publications (channel_id, "offset", data, info_user, info_client, conn_info, chan_info, tags, created_at, expires_at)
	SELECT c.id, c.top_offset, $4, $5, $6, $7, $8, $9, now(), now() + $3
	FROM c WHERE $2 > 0
)
SELECT c.id, c.top_offset, c.epoch, (extract(epoch FROM now()) * 1000)::bigint, c.nodes FROM c`

func ttlArg(d time.Duration) any {
	if d <= 0 {
		return nil
	}
	return d
}

func pubArgs(pub *message.Publication) (data []byte, user, client *string, connInfo, chanInfo []byte, tags any) {
	data = pub.Data
	if data == nil {
		data = []byte{}
	}
	if pub.Info != nil {
		user, client = &pub.Info.User, &pub.Info.Client
		connInfo, chanInfo = pub.Info.ConnInfo, pub.Info.ChanInfo
	}
	if pub.Tags != nil {
		tags = pub.Tags
	}
	return
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, channel string, pub *message.Publication, opts store.AppendOptions) (store.AppendResult, error) {
	if err := validChannel(channel); err != nil {
		return store.AppendResult{}, err
	}
	if pub == nil {
		return store.AppendResult{}, errors.New("postgres store: nil publication")
	}
	if opts.HistorySize < 0 || opts.HistoryTTL < 0 || opts.IdempotencyTTL < 0 {
		return store.AppendResult{}, errors.New("postgres store: negative history size or TTL")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var res store.AppendResult
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		switch {
		case opts.IdempotencyKey != "":
			res, err = s.appendIdempotent(ctx, channel, pub, opts)
		case s.commit != nil:
			res, err = s.commit.do(ctx, appendReq{channel: channel, pub: pub, opts: opts})
		default:
			res, err = s.appendOnce(ctx, s.pool, channel, pub, opts)
		}
		if !retryable(err) {
			break
		}
	}
	return res, wrapErr("append", err)
}

func (s *Store) appendOnce(ctx context.Context, q querier, channel string, pub *message.Publication, opts store.AppendOptions) (store.AppendResult, error) {
	args := appendArgs(channel, pub, opts)
	for try := 0; try < 2; try++ {
		res, err := scanAppended(q.QueryRow(ctx, appendSQL, args...), pub)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := s.ensureChannel(ctx, q, channel); err != nil {
				return store.AppendResult{}, err
			}
			continue
		}
		return res, err
	}
	return store.AppendResult{}, fmt.Errorf("channel %q vanished while appending", channel)
}

// appendArgs are appendSQL's parameters.
func appendArgs(channel string, pub *message.Publication, opts store.AppendOptions) []any {
	data, user, client, connInfo, chanInfo, tags := pubArgs(pub)
	return []any{channel, opts.HistorySize, ttlArg(opts.HistoryTTL), data, user, client, connInfo, chanInfo, tags}
}

// scanAppended reads appendSQL's row into the stored publication. No row
// (pgx.ErrNoRows) means the channel has no row yet.
func scanAppended(row pgx.Row, pub *message.Publication) (store.AppendResult, error) {
	var id, offset, ms int64
	var epoch string
	var nodes []string
	if err := row.Scan(&id, &offset, &epoch, &ms, &nodes); err != nil {
		return store.AppendResult{}, err
	}
	stored := pub.Clone()
	stored.Offset, stored.Time = uint64(offset), ms
	return store.AppendResult{Publication: stored, Position: message.StreamPosition{Offset: uint64(offset), Epoch: epoch}, Nodes: nodes, Routed: true}, nil
}

// appendIdempotent runs the key check and the append in one transaction that
// holds the channel row's lock, so concurrent appends with one key store once.
func (s *Store) appendIdempotent(ctx context.Context, channel string, pub *message.Publication, opts store.AppendOptions) (store.AppendResult, error) {
	ttl := opts.IdempotencyTTL
	if ttl == 0 {
		ttl = store.DefaultIdempotencyTTL
	}
	if err := s.ensureChannel(ctx, s.pool, channel); err != nil {
		return store.AppendResult{}, err
	}
	var res store.AppendResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		var epoch string
		var nodes []string
		if err := tx.QueryRow(ctx, `SELECT id, epoch, nodes FROM parley_channels WHERE name = $1 FOR UPDATE`, channel).Scan(&id, &epoch, &nodes); err != nil {
			return err
		}
		var prev []byte
		err := tx.QueryRow(ctx, `SELECT publication FROM parley_idempotency WHERE channel_id = $1 AND key = $2 AND expires_at > now()`, id, opts.IdempotencyKey).Scan(&prev)
		switch {
		case err == nil:
			var p message.Publication
			if err := json.Unmarshal(prev, &p); err != nil {
				return fmt.Errorf("decode stored publication: %w", err)
			}
			res = store.AppendResult{Publication: &p, Position: message.StreamPosition{Offset: p.Offset, Epoch: epoch}, Duplicate: true}
			// Fanned out again (node.Publish): to the nodes registered now,
			// read under the row lock as for an append.
			res.Nodes, res.Routed = nodes, true
			return nil
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		r, err := s.appendOnce(ctx, tx, channel, pub, opts)
		if err != nil {
			return err
		}
		enc, err := json.Marshal(r.Publication)
		if err != nil {
			return fmt.Errorf("encode publication: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO parley_idempotency (channel_id, key, publication, expires_at)
			VALUES ($1, $2, $3, now() + $4)
			ON CONFLICT (channel_id, key) DO UPDATE SET publication = EXCLUDED.publication, expires_at = EXCLUDED.expires_at`,
			id, opts.IdempotencyKey, enc, ttl); err != nil {
			return err
		}
		res = r
		return nil
	})
	return res, err
}

// channelMeta reads the channel's position and retention. A channel without
// a row (never published to) is at offset 0 of its initial epoch, with id 0
// and no history; reading it creates nothing.
func (s *Store) channelMeta(ctx context.Context, channel string) (id int64, pos message.StreamPosition, size int, ttl *time.Duration, err error) {
	var top int64
	err = s.pool.QueryRow(ctx, `SELECT id, top_offset, epoch, history_size, history_ttl FROM parley_channels WHERE name = $1`, channel).
		Scan(&id, &top, &pos.Epoch, &size, &ttl)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, message.StreamPosition{Epoch: store.InitialEpoch(s.seed, channel)}, 0, nil, nil
	}
	pos.Offset = uint64(top)
	return
}

// History implements store.Store.
func (s *Store) History(ctx context.Context, channel string, opts store.HistoryOptions) ([]*message.Publication, message.StreamPosition, error) {
	if err := validChannel(channel); err != nil {
		return nil, message.StreamPosition{}, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var pubs []*message.Publication
	var pos message.StreamPosition
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		pubs, pos, err = s.history(ctx, channel, opts)
		if !retryable(err) {
			break
		}
	}
	if errors.Is(err, store.ErrEpochMismatch) {
		return nil, pos, err
	}
	return pubs, pos, wrapErr("history", err)
}

func (s *Store) history(ctx context.Context, channel string, opts store.HistoryOptions) ([]*message.Publication, message.StreamPosition, error) {
	id, pos, size, ttl, err := s.channelMeta(ctx, channel)
	if err != nil {
		return nil, pos, err
	}
	if opts.Since != nil && opts.Since.Epoch != pos.Epoch {
		return nil, pos, store.ErrEpochMismatch
	}
	if opts.Limit == 0 || size == 0 {
		return nil, pos, nil
	}
	// The page lies within (low, high): what retention by size keeps, bounded
	// by the top read above so publications and position agree.
	low := int64(pos.Offset) - int64(size)
	high := int64(pos.Offset) + 1
	order := "ASC"
	if opts.Since != nil {
		if opts.Reverse {
			high = min(high, int64(opts.Since.Offset))
		} else {
			low = max(low, int64(opts.Since.Offset))
		}
	}
	if high-low <= 1 {
		// Nothing lies between: a recovery that missed nothing (most of a
		// reconnect storm's) needs no second round trip.
		return nil, pos, nil
	}
	if opts.Reverse {
		order = "DESC"
	}
	var limit any
	if opts.Limit > 0 {
		limit = opts.Limit
	}
	var ttlArg any
	if ttl != nil {
		ttlArg = *ttl
	}
	rows, err := s.pool.Query(ctx, `
		SELECT "offset", data, info_user, info_client, conn_info, chan_info, tags, (extract(epoch FROM created_at) * 1000)::bigint
		FROM parley_publications
		WHERE channel_id = $1 AND "offset" > $2 AND "offset" < $3
		  AND (expires_at IS NULL OR expires_at > now())
		  AND ($4::interval IS NULL OR created_at > now() - $4::interval)
		ORDER BY "offset" `+order+` LIMIT $5`, id, low, high, ttlArg, limit)
	if err != nil {
		return nil, pos, err
	}
	pubs, err := pgx.CollectRows(rows, scanPub)
	return pubs, pos, err
}

func scanPub(row pgx.CollectableRow) (*message.Publication, error) {
	var p message.Publication
	var offset int64
	var user, client *string
	var connInfo, chanInfo []byte
	var tags map[string]string
	if err := row.Scan(&offset, &p.Data, &user, &client, &connInfo, &chanInfo, &tags, &p.Time); err != nil {
		return nil, err
	}
	p.Offset = uint64(offset)
	if user != nil || client != nil {
		p.Info = &message.ClientInfo{ConnInfo: connInfo, ChanInfo: chanInfo}
		if user != nil {
			p.Info.User = *user
		}
		if client != nil {
			p.Info.Client = *client
		}
	}
	p.Tags = tags
	return &p, nil
}

// Position implements store.Store.
func (s *Store) Position(ctx context.Context, channel string) (message.StreamPosition, error) {
	if err := validChannel(channel); err != nil {
		return message.StreamPosition{}, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var pos message.StreamPosition
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		_, pos, _, _, err = s.channelMeta(ctx, channel)
		if !retryable(err) {
			break
		}
	}
	return pos, wrapErr("position", err)
}

// RemoveHistory implements store.Store: a new epoch, offsets from 1 again, and
// the old epoch's publications, keys and receipts gone, in one transaction.
func (s *Store) RemoveHistory(ctx context.Context, channel string) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.ensureChannel(ctx, s.pool, channel); err != nil {
		return wrapErr("remove history", err)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		var old string
		if err := tx.QueryRow(ctx, `SELECT id, epoch FROM parley_channels WHERE name = $1 FOR UPDATE`, channel).Scan(&id, &old); err != nil {
			return err
		}
		epoch := newEpoch()
		for epoch == old {
			epoch = newEpoch()
		}
		batch := &pgx.Batch{}
		batch.Queue(`UPDATE parley_channels SET epoch = $2, top_offset = 0, min_offset = 1 WHERE id = $1`, id, epoch)
		batch.Queue(`DELETE FROM parley_publications WHERE channel_id = $1`, id)
		batch.Queue(`DELETE FROM parley_idempotency WHERE channel_id = $1`, id)
		batch.Queue(`DELETE FROM parley_read_receipts WHERE channel_id = $1`, id)
		// Mentions and the last message belong to the old epoch's offsets too.
		batch.Queue(`DELETE FROM parley_mentions WHERE channel = $1`, channel)
		batch.Queue(`DELETE FROM parley_conversations WHERE channel = $1`, channel)
		return tx.SendBatch(ctx, batch).Close()
	})
	return wrapErr("remove history", err)
}

// MarkRead implements store.Store.
func (s *Store) MarkRead(ctx context.Context, channel, user string, offset uint64) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	if user == "" {
		return errors.New("postgres store: empty user")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		_, err = s.pool.Exec(ctx, `
			INSERT INTO parley_read_receipts AS r (user_id, channel_id, last_read, updated_at)
			SELECT $2, c.id, LEAST($3::numeric, c.top_offset)::bigint, now() FROM parley_channels c WHERE c.name = $1
			ON CONFLICT (user_id, channel_id) DO UPDATE
			SET last_read = GREATEST(r.last_read, EXCLUDED.last_read), updated_at = now()`, channel, user, offset)
		if !retryable(err) {
			break
		}
	}
	return wrapErr("mark read", err)
}

// ReadStates implements store.Store.
func (s *Store) ReadStates(ctx context.Context, user string, channels []string) ([]message.ReadState, error) {
	if user == "" {
		return nil, errors.New("postgres store: empty user")
	}
	for _, ch := range channels {
		if err := validChannel(ch); err != nil {
			return nil, err
		}
	}
	if len(channels) == 0 {
		return []message.ReadState{}, nil
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var out []message.ReadState
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var rows pgx.Rows
		rows, err = s.pool.Query(ctx, `
			SELECT q.name, coalesce(c.top_offset, 0), coalesce(r.last_read, 0)
			FROM unnest($2::text[]) WITH ORDINALITY AS q(name, ord)
			LEFT JOIN parley_channels c ON c.name = q.name
			LEFT JOIN parley_read_receipts r ON r.channel_id = c.id AND r.user_id = $1
			ORDER BY q.ord`, user, channels)
		if err == nil {
			out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (message.ReadState, error) {
				var rs message.ReadState
				var top, last int64
				if err := row.Scan(&rs.Channel, &top, &last); err != nil {
					return rs, err
				}
				rs.LastOffset = uint64(top)
				rs.LastRead = min(uint64(last), rs.LastOffset)
				rs.Unread = rs.LastOffset - rs.LastRead
				return rs, nil
			})
		}
		if !retryable(err) {
			break
		}
	}
	return out, wrapErr("read states", err)
}

// Receipts implements store.Store.
func (s *Store) Receipts(ctx context.Context, channel string, limit int) ([]message.Receipt, error) {
	if err := validChannel(channel); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, errors.New("postgres store: receipts limit must be positive")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var out []message.Receipt
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var rows pgx.Rows
		rows, err = s.pool.Query(ctx, `
			SELECT r.user_id, LEAST(r.last_read, c.top_offset)
			FROM parley_channels c JOIN parley_read_receipts r ON r.channel_id = c.id
			WHERE c.name = $1 AND r.last_read > 0
			ORDER BY r.last_read DESC, r.user_id COLLATE "C"
			LIMIT $2`, channel, limit)
		if err == nil {
			out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (message.Receipt, error) {
				var r message.Receipt
				var last int64
				err := row.Scan(&r.User, &last)
				r.LastRead = uint64(last)
				return r, err
			})
		}
		if !retryable(err) {
			break
		}
	}
	if err == nil && out == nil {
		out = []message.Receipt{}
	}
	return out, wrapErr("receipts", err)
}

// MarkUnsent implements store.Outbox.
func (s *Store) MarkUnsent(ctx context.Context, channel string, pos message.StreamPosition) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `
		INSERT INTO parley_unsent AS u (channel, "offset", epoch) VALUES ($1, $2, $3)
		ON CONFLICT (channel) DO UPDATE SET "offset" = excluded."offset", epoch = excluded.epoch, updated_at = now()
		WHERE u.epoch <> excluded.epoch OR u."offset" < excluded."offset"`, channel, int64(pos.Offset), pos.Epoch)
	return wrapErr("mark unsent", err)
}

// Unsent implements store.Outbox: the oldest entries first.
func (s *Store) Unsent(ctx context.Context, limit int) ([]store.Unsent, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT channel, "offset", epoch FROM parley_unsent ORDER BY updated_at LIMIT $1`, limit)
	if err != nil {
		return nil, wrapErr("unsent", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Unsent, error) {
		var u store.Unsent
		var off int64
		err := row.Scan(&u.Channel, &off, &u.Position.Epoch)
		u.Position.Offset = uint64(off)
		return u, err
	})
	return out, wrapErr("unsent", err)
}

// ClearUnsent implements store.Outbox.
func (s *Store) ClearUnsent(ctx context.Context, channel string, pos message.StreamPosition) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `DELETE FROM parley_unsent WHERE channel = $1 AND "offset" = $2 AND epoch = $3`, channel, int64(pos.Offset), pos.Epoch)
	return wrapErr("clear unsent", err)
}
