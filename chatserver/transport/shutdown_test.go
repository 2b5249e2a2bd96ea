package transport_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/transport"
)

// An upgrade that arrives once the node is draining is refused (503) and
// must not leave Shutdown waiting for a connection that never was.
func TestShutdownAfterARefusedUpgrade(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	srv.Node.SetShuttingDown()
	req := httptest.NewRequest(http.MethodGet, transport.Path, nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	srv.Conns.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("upgrade while draining: %d, want 503", rec.Code)
	}
	c, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Conns.Shutdown(c, 0) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown with no connection: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown hangs after a refused upgrade")
	}
}

// Clients keep upgrading while the server shuts down: the shutdown ends
// within the grace period (plus the short wait for connections closed at
// its end), never waiting on a refused or late upgrade.
func TestShutdownWhileUpgradesArrive(t *testing.T) {
	cfg := servertest.Config()
	grace := 2 * time.Second
	cfg.HTTP.ShutdownGracePeriod = config.Duration(grace)
	cfg.Limits.ConnectionsPerUser = 0
	srv := servertest.Start(t, cfg, nil, nil)
	token := servertest.Token(t, "alice")

	stop := make(chan struct{})
	var dials, upgraded atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			d := websocket.Dialer{HandshakeTimeout: time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				dials.Add(1)
				ws, resp, err := d.Dial(srv.WS, nil)
				if resp != nil && resp.Body != nil {
					_ = resp.Body.Close()
				}
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				upgraded.Add(1)
				// Half connect and stay until the server closes them; half never speak.
				if upgraded.Load()%2 == 0 {
					_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"token":"`+token+`"}}`))
				}
				go func() {
					defer ws.Close()
					_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
					for {
						if _, _, err := ws.ReadMessage(); err != nil {
							return
						}
					}
				}()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	srv.Stop(t)
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if upgraded.Load() == 0 {
		t.Fatal("no upgrade succeeded before the shutdown")
	}
	if took > grace+2*time.Second {
		t.Fatalf("shutdown took %s with a grace period of %s", took, grace)
	}
	t.Logf("%d dials, %d upgraded, shutdown in %s", dials.Load(), upgraded.Load(), took)
}
