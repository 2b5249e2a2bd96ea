package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/chatserver/internal/procstat"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
	"github.com/parley-chat/parley/chatserver/store/postgres"
)

// BenchmarkAppend measures committed appends: one channel (every append
// waits for the channel row's lock) or many channels, one writer or many,
// each committed alone ("lone", store.appendBatch 1) or grouped with the
// appends that arrive while a commit is in flight ("group", the default).
// Besides time it reports the WAL and the PostgreSQL server CPU per append
// and the appends one commit carried.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name     string
		channels int
		key      bool
	}{
		{"one-channel", 1, false},
		{"many-channels", 64, false},
		{"one-channel-idempotent", 1, true},
	} {
		for _, par := range []int{1, 8} {
			for _, commit := range []string{"lone", "group"} {
				if tc.key && commit == "group" {
					continue // idempotent appends take their own transaction
				}
				b.Run(fmt.Sprintf("%s/writers-%d/%s", tc.name, par*2, commit), func(b *testing.B) {
					benchAppend(b, tc.channels, tc.key, par, commit == "lone")
				})
			}
		}
	}
}

func benchAppend(b *testing.B, channels int, key bool, par int, lone bool) {
	opts := postgres.Options{MaxConns: 16}
	if lone {
		opts.AppendBatch = 1
	}
	s := open(b, db.URL, opts)
	defer s.Close()
	prefix := fmt.Sprintf("bench:%d:%v:%d:%d:", channels, key, par, time.Now().UnixNano())
	pub := &message.Publication{Data: []byte(`{"text":"a chat message of a typical size, around a hundred bytes long"}`), Info: &message.ClientInfo{User: "alice", Client: "c1"}}
	var n atomic.Int64
	b.SetParallelism(par)
	wal0 := walBytes(b)
	cpu0, sys0 := procstat.Times("postgres")
	c0, a0 := s.GroupCommitStats()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			opts := store.AppendOptions{HistorySize: 1000, HistoryTTL: time.Hour}
			if key {
				opts.IdempotencyKey = fmt.Sprint(i)
			}
			if _, err := s.Append(context.Background(), fmt.Sprintf("%s%d", prefix, i%int64(channels)), pub, opts); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	// WAL written and server CPU used per committed append (the whole
	// server's: run it alone for a clean figure; docs/scaling.md uses it).
	b.ReportMetric(float64(walBytes(b)-wal0)/float64(b.N), "wal-B/op")
	cpu1, sys1 := procstat.Times("postgres")
	b.ReportMetric((cpu1-cpu0).Seconds()*1e6/float64(b.N), "pg-cpu-µs/op")
	// The kernel's part: WAL writes and flushes, per append.
	b.ReportMetric((sys1-sys0).Seconds()*1e6/float64(b.N), "pg-sys-µs/op")
	if c1, a1 := s.GroupCommitStats(); c1 > c0 {
		b.ReportMetric(float64(a1-a0)/float64(c1-c0), "appends/commit")
	}
}

// walBytes is the server's WAL insert position in bytes.
func walBytes(b *testing.B) int64 {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), db.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(context.Background(), "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkHistory reads the last 50 publications of a 1000-publication channel.
func BenchmarkHistory(b *testing.B) {
	s := open(b, db.URL, postgres.Options{})
	defer s.Close()
	ch := fmt.Sprintf("bench:history:%d", time.Now().UnixNano())
	for i := 0; i < 1000; i++ {
		if _, err := s.Append(context.Background(), ch, &message.Publication{Data: []byte(`{"n":1}`)}, store.AppendOptions{HistorySize: 1000, HistoryTTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pubs, _, err := s.History(context.Background(), ch, store.HistoryOptions{Limit: 50, Reverse: true})
		if err != nil || len(pubs) != 50 {
			b.Fatal(len(pubs), err)
		}
	}
}
