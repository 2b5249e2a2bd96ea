// Package memory is the in-process Store: history, stream positions, read
// receipts and presence for a single node (dev mode and tests). Everything is
// lost when the process exits; a restarted node starts new epochs, so clients
// holding old positions are told recovered=false rather than given a gap.
package memory

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// DefaultPresenceTTL is how long a presence entry lives without a refresh.
const DefaultPresenceTTL = 60 * time.Second

const numShards = 64

// Options configure a memory Store.
type Options struct {
	// PresenceTTL bounds how long an entry stays without AddPresence refreshing
	// it; zero means DefaultPresenceTTL.
	PresenceTTL time.Duration
}

// Store keeps everything in process memory, sharded by channel so one busy
// channel does not serialise the others.
type Store struct {
	presenceTTL time.Duration
	seed        maphash.Seed
	// epochSeed derives the epochs of channels without a stream
	// (store.InitialEpoch); a new store, a new seed, as a new database.
	epochSeed string
	shards    [numShards]shard

	mu     sync.Mutex
	closed bool
	unsent map[string]message.StreamPosition // guarded by mu

	// groups is store.Groups (groups.go), made on first use.
	groupsOnce sync.Once
	groups     *groupState
}

type shard struct {
	mu       sync.Mutex
	streams  map[string]*stream
	presence map[string]map[string]presenceEntry
}

type stream struct {
	top   uint64
	epoch string
	pubs  []*message.Publication // ascending offsets, only what retention keeps
	size  int
	ttl   time.Duration
	idem  map[string]idemEntry
	reads map[string]uint64 // user → last read offset
}

type idemEntry struct {
	pub     *message.Publication
	expires time.Time
}

type presenceEntry struct {
	info    message.ClientInfo
	expires time.Time
}

var _ store.Store = (*Store)(nil)

// New returns an empty memory store.
func New(opts Options) *Store {
	s := &Store{presenceTTL: opts.PresenceTTL, seed: maphash.MakeSeed(), epochSeed: newEpoch()}
	if s.presenceTTL <= 0 {
		s.presenceTTL = DefaultPresenceTTL
	}
	for i := range s.shards {
		s.shards[i].streams = map[string]*stream{}
		s.shards[i].presence = map[string]map[string]presenceEntry{}
	}
	return s
}

func (s *Store) shard(channel string) *shard {
	return &s.shards[maphash.String(s.seed, channel)%numShards]
}

func (s *Store) check(ctx context.Context, channel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if channel == "" {
		return errors.New("memory store: empty channel name")
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("%w: memory store closed", store.ErrUnavailable)
	}
	return nil
}

// streamLocked returns the channel's stream, creating it on first use (a
// publication or RemoveHistory) with the epoch its position had before.
func (s *Store) streamLocked(sh *shard, channel string) *stream {
	st, ok := sh.streams[channel]
	if !ok {
		st = &stream{epoch: store.InitialEpoch(s.epochSeed, channel)}
		sh.streams[channel] = st
	}
	return st
}

// positionLocked is the channel's position without creating its stream.
func (s *Store) positionLocked(sh *shard, channel string) message.StreamPosition {
	if st, ok := sh.streams[channel]; ok {
		return st.position()
	}
	return message.StreamPosition{Epoch: store.InitialEpoch(s.epochSeed, channel)}
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// trimLocked applies retention: at most size publications, none older than ttl.
func (st *stream) trimLocked(now time.Time) {
	drop := 0
	if over := len(st.pubs) - st.size; over > 0 {
		drop = over
	}
	if st.ttl > 0 {
		cutoff := now.Add(-st.ttl).UnixMilli()
		for drop < len(st.pubs) && st.pubs[drop].Time <= cutoff {
			drop++
		}
	}
	if drop > 0 {
		// Copy so the dropped publications can be collected.
		st.pubs = append(st.pubs[:0:0], st.pubs[drop:]...)
	}
}

func (st *stream) position() message.StreamPosition {
	return message.StreamPosition{Offset: st.top, Epoch: st.epoch}
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, channel string, pub *message.Publication, opts store.AppendOptions) (store.AppendResult, error) {
	if err := s.check(ctx, channel); err != nil {
		return store.AppendResult{}, err
	}
	if pub == nil {
		return store.AppendResult{}, errors.New("memory store: nil publication")
	}
	if opts.HistorySize < 0 || opts.HistoryTTL < 0 || opts.IdempotencyTTL < 0 {
		return store.AppendResult{}, errors.New("memory store: negative history size or TTL")
	}
	now := time.Now()
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := s.streamLocked(sh, channel)
	if opts.IdempotencyKey != "" {
		if e, ok := st.idem[opts.IdempotencyKey]; ok && now.Before(e.expires) {
			return store.AppendResult{
				Publication: e.pub.Clone(),
				Position:    message.StreamPosition{Offset: e.pub.Offset, Epoch: st.epoch},
				Duplicate:   true,
			}, nil
		}
	}
	st.top++
	stored := pub.Clone()
	stored.Offset = st.top
	stored.Time = now.UnixMilli()
	st.size, st.ttl = opts.HistorySize, opts.HistoryTTL
	if st.size > 0 {
		st.pubs = append(st.pubs, stored)
	}
	st.trimLocked(now)
	if opts.IdempotencyKey != "" {
		if st.idem == nil {
			st.idem = map[string]idemEntry{}
		}
		ttl := opts.IdempotencyTTL
		if ttl == 0 {
			ttl = store.DefaultIdempotencyTTL
		}
		st.idem[opts.IdempotencyKey] = idemEntry{pub: stored, expires: now.Add(ttl)}
		if len(st.idem) > 64 && len(st.idem)%64 == 0 {
			for k, e := range st.idem {
				if !now.Before(e.expires) {
					delete(st.idem, k)
				}
			}
		}
	}
	return store.AppendResult{Publication: stored.Clone(), Position: st.position()}, nil
}

// History implements store.Store.
func (s *Store) History(ctx context.Context, channel string, opts store.HistoryOptions) ([]*message.Publication, message.StreamPosition, error) {
	if err := s.check(ctx, channel); err != nil {
		return nil, message.StreamPosition{}, err
	}
	now := time.Now()
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	pos := s.positionLocked(sh, channel)
	if opts.Since != nil && opts.Since.Epoch != pos.Epoch {
		return nil, pos, store.ErrEpochMismatch
	}
	st, ok := sh.streams[channel]
	if opts.Limit == 0 || !ok {
		return nil, pos, nil
	}
	st.trimLocked(now)
	return selectPage(st.pubs, opts), pos, nil
}

// Position implements store.Store.
func (s *Store) Position(ctx context.Context, channel string) (message.StreamPosition, error) {
	if err := s.check(ctx, channel); err != nil {
		return message.StreamPosition{}, err
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return s.positionLocked(sh, channel), nil
}

// RemoveHistory implements store.Store.
func (s *Store) RemoveHistory(ctx context.Context, channel string) error {
	if err := s.check(ctx, channel); err != nil {
		return err
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	st := s.streamLocked(sh, channel)
	epoch := st.epoch
	for epoch == st.epoch {
		epoch = newEpoch()
	}
	*st = stream{epoch: epoch}
	sh.mu.Unlock()
	// After the shard's lock: the groups lock is taken before shard locks
	// (the inbox reads receipts under it).
	s.gs().forget(channel)
	return nil
}

// MarkRead implements store.Store.
func (s *Store) MarkRead(ctx context.Context, channel, user string, offset uint64) error {
	if err := s.check(ctx, channel); err != nil {
		return err
	}
	if user == "" {
		return errors.New("memory store: empty user")
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st, ok := sh.streams[channel]
	if !ok {
		return nil // nothing published: the receipt clamps to 0, nothing to keep
	}
	offset = min(offset, st.top)
	if st.reads == nil {
		st.reads = map[string]uint64{}
	}
	if offset > st.reads[user] {
		st.reads[user] = offset
	}
	return nil
}

// ReadStates implements store.Store.
func (s *Store) ReadStates(ctx context.Context, user string, channels []string) ([]message.ReadState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if user == "" {
		return nil, errors.New("memory store: empty user")
	}
	out := make([]message.ReadState, 0, len(channels))
	for _, ch := range channels {
		if err := s.check(ctx, ch); err != nil {
			return nil, err
		}
		sh := s.shard(ch)
		sh.mu.Lock()
		rs := message.ReadState{Channel: ch}
		if st, ok := sh.streams[ch]; ok {
			rs.LastOffset = st.top
			rs.LastRead = min(st.reads[user], st.top)
			rs.Unread = st.top - rs.LastRead
		}
		sh.mu.Unlock()
		out = append(out, rs)
	}
	return out, nil
}

// Receipts implements store.Store.
func (s *Store) Receipts(ctx context.Context, channel string, limit int) ([]message.Receipt, error) {
	if err := s.check(ctx, channel); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, errors.New("memory store: receipts limit must be positive")
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	var out []message.Receipt
	if st, ok := sh.streams[channel]; ok {
		out = make([]message.Receipt, 0, len(st.reads))
		for user, off := range st.reads {
			if off = min(off, st.top); off > 0 {
				out = append(out, message.Receipt{User: user, LastRead: off})
			}
		}
	}
	sh.mu.Unlock()
	slices.SortFunc(out, func(a, b message.Receipt) int {
		if c := cmp.Compare(b.LastRead, a.LastRead); c != 0 {
			return c
		}
		return strings.Compare(a.User, b.User)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	if out == nil {
		out = []message.Receipt{}
	}
	return out, nil
}

// AddPresence implements store.Presence; calling it again refreshes the entry.
func (s *Store) AddPresence(ctx context.Context, channel string, entry message.ClientInfo) error {
	if err := s.check(ctx, channel); err != nil {
		return err
	}
	if entry.Client == "" {
		return errors.New("memory store: presence entry without client id")
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.presence[channel]
	if m == nil {
		m = map[string]presenceEntry{}
		sh.presence[channel] = m
	}
	m[entry.Client] = presenceEntry{info: entry.Clone(), expires: time.Now().Add(s.presenceTTL)}
	return nil
}

// AdmitPresence implements store.Presence under the channel's shard lock.
func (s *Store) AdmitPresence(ctx context.Context, channel string, entry message.ClientInfo, limit int) (bool, error) {
	if err := s.check(ctx, channel); err != nil {
		return false, err
	}
	if entry.Client == "" {
		return false, errors.New("memory store: presence entry without client id")
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.livePresenceLocked(channel, time.Now())
	if m == nil {
		m = map[string]presenceEntry{}
		sh.presence[channel] = m
	}
	// As PostgreSQL does: count the others; add only below the limit.
	others := len(m)
	if _, ok := m[entry.Client]; ok {
		others--
	}
	if others >= limit {
		return false, nil
	}
	m[entry.Client] = presenceEntry{info: entry.Clone(), expires: time.Now().Add(s.presenceTTL)}
	return true, nil
}

// AddPresences implements store.Presence.
func (s *Store) AddPresences(ctx context.Context, entries []store.PresenceEntry) error {
	for _, e := range entries {
		if err := s.AddPresence(ctx, e.Channel, e.Info); err != nil {
			return err
		}
	}
	return nil
}

// RemovePresence implements store.Presence.
func (s *Store) RemovePresence(ctx context.Context, channel, client string) error {
	if err := s.check(ctx, channel); err != nil {
		return err
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if m := sh.presence[channel]; m != nil {
		delete(m, client)
		if len(m) == 0 {
			delete(sh.presence, channel)
		}
	}
	return nil
}

// livePresenceLocked drops expired entries and returns the channel's map.
func (sh *shard) livePresenceLocked(channel string, now time.Time) map[string]presenceEntry {
	m := sh.presence[channel]
	for k, e := range m {
		if !now.Before(e.expires) {
			delete(m, k)
		}
	}
	if m != nil && len(m) == 0 {
		delete(sh.presence, channel)
		return nil
	}
	return m
}

// Presence implements store.Presence.
func (s *Store) Presence(ctx context.Context, channel string) (map[string]message.ClientInfo, error) {
	if err := s.check(ctx, channel); err != nil {
		return nil, err
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.livePresenceLocked(channel, time.Now())
	out := make(map[string]message.ClientInfo, len(m))
	for k, e := range m {
		out[k] = e.info.Clone()
	}
	return out, nil
}

// PresenceStats implements store.Presence.
func (s *Store) PresenceStats(ctx context.Context, channel string) (clients, users int, err error) {
	if err := s.check(ctx, channel); err != nil {
		return 0, 0, err
	}
	sh := s.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.livePresenceLocked(channel, time.Now())
	distinct := make(map[string]struct{}, len(m))
	for _, e := range m {
		distinct[e.info.User] = struct{}{}
	}
	return len(m), len(distinct), nil
}

// Close makes every later call fail with store.ErrUnavailable.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// selectPage picks the page opts asks for from publications in ascending
// offset order: forward pages start after Since (or at the oldest kept),
// reverse pages start before Since (or at the newest) and run backwards.
func selectPage(pubs []*message.Publication, opts store.HistoryOptions) []*message.Publication {
	var out []*message.Publication
	take := func(p *message.Publication) bool {
		out = append(out, p.Clone())
		return opts.Limit < 0 || len(out) < opts.Limit
	}
	if opts.Reverse {
		for i := len(pubs) - 1; i >= 0; i-- {
			if opts.Since != nil && pubs[i].Offset >= opts.Since.Offset {
				continue
			}
			if !take(pubs[i]) {
				break
			}
		}
		return out
	}
	for _, p := range pubs {
		if opts.Since != nil && p.Offset <= opts.Since.Offset {
			continue
		}
		if !take(p) {
			break
		}
	}
	return out
}

// MarkUnsent implements store.Outbox.
func (s *Store) MarkUnsent(ctx context.Context, channel string, pos message.StreamPosition) error {
	if err := s.check(ctx, channel); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.unsent[channel]; ok && old.Epoch == pos.Epoch && old.Offset >= pos.Offset {
		return nil
	}
	if s.unsent == nil {
		s.unsent = map[string]message.StreamPosition{}
	}
	s.unsent[channel] = pos
	return nil
}

// Unsent implements store.Outbox.
func (s *Store) Unsent(ctx context.Context, limit int) ([]store.Unsent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]store.Unsent, 0, min(limit, len(s.unsent)))
	for ch, pos := range s.unsent {
		if len(out) == limit {
			break
		}
		out = append(out, store.Unsent{Channel: ch, Position: pos})
	}
	return out, nil
}

// ClearUnsent implements store.Outbox.
func (s *Store) ClearUnsent(ctx context.Context, channel string, pos message.StreamPosition) error {
	if err := s.check(ctx, channel); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.unsent[channel]; ok && cur == pos {
		delete(s.unsent, channel)
	}
	return nil
}
