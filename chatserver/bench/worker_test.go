package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/server"
)

// startParley runs a single in-memory Parley node on a loopback port with
// the config the benchmarks use.
func startParley(t *testing.T, secret string) string {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "hmac")
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := ParleyConfig("127.0.0.1:0", "127.0.0.1:0", keyFile, nil)
	cfg.Log = config.Log{Level: "error", Format: "text"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), server.Options{Listener: ln})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(30 * time.Second):
			// Every wait has a bound: say where it hangs instead of
			// running into the test binary's timeout.
			buf := make([]byte, 1<<20)
			t.Errorf("the server did not stop within 30s; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		}
	})
	return "ws://" + ln.Addr().String() + "/connection/websocket"
}

func waitFor(t *testing.T, f *Fleet, what string, ok func(*Stats) bool) *Stats {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := f.Snapshot(false)
		if err != nil {
			t.Fatal(err)
		}
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFleetDeliversEverythingAndRecoversAfterADrop drives a real server with
// two in-process workers: every acknowledged publication reaches every
// subscriber of its room exactly once, and after every subscriber's TCP
// connection is cut, all of them recover without a gap.
func TestFleetDeliversEverythingAndRecoversAfterADrop(t *testing.T) {
	const secret = "bench-test-secret"
	ws := startParley(t, secret)
	const subs, rooms = 20, 2
	jobs := Split(Layout{
		Endpoints: []string{ws}, Secret: secret, ChannelPrefix: "room:t-", Rooms: rooms,
		Subscribers: subs, Publishers: 2, PayloadBytes: 100, SourceAddrs: 4, Workers: 2,
	})
	f, err := StartFleet("", nil, jobs)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reps, err := f.Do(Command{Op: "connect"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if r.Connect.Failed > 0 {
			t.Fatalf("connect: %+v", r.Connect)
		}
	}
	expected := func(s *Stats) int64 { return ExpectedDeliveries(s.PubsPerRoom, subs) }

	if err := f.SetRate(200, PublisherWeights(jobs)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond)
	if err := f.SetRate(0, nil); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, f, "every publication delivered", func(s *Stats) bool { return s.Published > 0 && s.Delivered == expected(s) })
	if s.Gaps != 0 || s.Duplicates != 0 || s.PublishErrors != 0 || s.BadPayloads != 0 {
		t.Fatalf("before the drop: %+v", s)
	}
	if s.Latency.Count != uint64(s.Delivered) || s.Latency.Quantile(0.5) <= 0 {
		t.Fatalf("latency histogram %+v for %d deliveries", s.Latency.Summary(), s.Delivered)
	}

	reps, err = f.Do(Command{Op: "drop"})
	if err != nil {
		t.Fatal(err)
	}
	if reps[0].Dropped+reps[1].Dropped != subs {
		t.Fatalf("dropped %d and %d connections, want %d in all", reps[0].Dropped, reps[1].Dropped, subs)
	}
	if err := f.SetRate(200, PublisherWeights(jobs)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := f.SetRate(0, nil); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, f, "recovery", func(s *Stats) bool {
		return s.Recovered == subs && s.Subscribed == subs && s.Delivered == expected(s)
	})
	if s.Gaps != 0 || s.Duplicates != 0 || s.WasRecovering != subs || s.DisconnectCount() < subs {
		t.Fatalf("after the drop: %+v", s)
	}
}
