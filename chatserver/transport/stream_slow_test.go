package transport_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/centrifugal/protocol/cfjson"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/transport"
)

// stalledStream connects an HTTP-streaming client over a raw socket with a
// small receive buffer, subscribes it to channel, and then reads nothing.
func stalledStream(t *testing.T, srv *servertest.Server, channel string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	body := servertest.EncodeCommands(t, protocol.TypeJSON, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{Token: servertest.Token(t, "stalled")}})
	fmt.Fprintf(conn, "POST /connection/http_stream HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", srv.Addr, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var rep protocol.Reply
	if err := cfjson.Unmarshal(line, &rep, 0); err != nil || rep.Connect == nil {
		t.Fatalf("connect reply %q: %v", line, err)
	}
	if code, _ := servertest.PostEmulation(t, nil, srv.HTTP, protocol.TypeJSON, rep.Connect.Node, rep.Connect.Session,
		servertest.EncodeCommands(t, protocol.TypeJSON, &protocol.Command{Id: 2, Subscribe: &protocol.SubscribeRequest{Channel: channel}})); code != http.StatusNoContent {
		t.Fatalf("subscribe: %d", code)
	}
	return conn
}

var bigPayload = []byte(`"` + strings.Repeat("x", 16<<10) + `"`)

// A stream client that stops reading is cut off once its queue passes the
// byte bound, as a slow WebSocket consumer is.
func TestStreamSlowConsumerDisconnected(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.WriteQueueBytes = 64 << 10
	srv := servertest.Start(t, cfg, nil, nil)
	stalledStream(t, srv, "open:firehose")
	slowDisconnects := func() float64 {
		return testutil.ToFloat64(srv.Node.Metrics().Disconnects.WithLabelValues("3008"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for slowDisconnects() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("slow stream consumer never disconnected")
		}
		if _, err := srv.Node.Publish(ctx(t), "open:firehose", bigPayload, nil, node.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitNoConns(t, srv)
}

// A stream whose write is stuck on a client that reads nothing (no queue
// bound here) does not hold the shutdown past the grace period: the goodbye
// it is owed is cut short, not given the write timeout.
func TestStreamStuckWriteDoesNotHoldShutdown(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.WriteQueueBytes = 0
	cfg.HTTP.ShutdownGracePeriod = config.Duration(time.Second)
	srv := servertest.Start(t, cfg, nil, nil)
	stalledStream(t, srv, "open:stuck")
	// Enough to fill the socket buffers on both sides many times over.
	for range 400 {
		if _, err := srv.Node.Publish(ctx(t), "open:stuck", bigPayload, nil, node.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	srv.Stop(t)
	if took := time.Since(start); took > 1*time.Second+transport.AfterGraceWait+time.Second {
		t.Fatalf("shutdown took %s with a grace period of 1s", took)
	}
}

// The server pings over the stream; a client that answers through
// /emulation stays, one that does not is disconnected with 3012.
func TestStreamPingPong(t *testing.T) {
	cfg := servertest.Config()
	cfg.HTTP.PingInterval = config.Duration(time.Second)
	cfg.HTTP.PongTimeout = config.Duration(500 * time.Millisecond)
	srv := servertest.Start(t, cfg, nil, nil)
	mute := servertest.DialStream(t, nil, srv.HTTP, "sse", "json", servertest.Token(t, "mute"))
	talker := servertest.DialStream(t, nil, srv.HTTP, "http_stream", "protobuf", servertest.Token(t, "talker"))
	for range 3 {
		ping := talker.Next(3 * time.Second)
		if ping == nil || ping.Id != 0 || ping.Push != nil {
			t.Fatalf("ping: %+v", ping)
		}
		if code, _ := talker.Emulate(t, srv.HTTP, &protocol.Command{}); code != http.StatusNoContent {
			t.Fatalf("pong: %d", code)
		}
	}
	if code := mute.WaitEnd(t); code != 3012 {
		t.Fatalf("mute client: disconnect %d, want 3012 no pong", code)
	}
}

// Both streams work over HTTP/2 (TLS with ALPN h2), commands and all.
func TestStreamsOverHTTP2(t *testing.T) {
	cfg := servertest.Config()
	certFile, keyFile := writeCert(t, t.TempDir())
	cfg.HTTP.TLS = &config.TLS{CertFile: certFile, KeyFile: keyFile}
	srv := servertest.Start(t, cfg, nil, nil)
	client := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed test certificate
	defer client.CloseIdleConnections()
	base := "https://" + srv.Addr
	for _, k := range streamKinds {
		s := servertest.DialStream(t, client, base, k.kind, k.proto, servertest.Token(t, "h2"))
		if s.Resp.ProtoMajor != 2 {
			t.Fatalf("%s/%s: served over HTTP/%d", k.kind, k.proto, s.Resp.ProtoMajor)
		}
		if s.Resp.Header.Get("Connection") != "" {
			t.Errorf("%s/%s: a Connection header over HTTP/2", k.kind, k.proto)
		}
		code, ids := s.Emulate(t, base, &protocol.Command{Presence: &protocol.PresenceRequest{Channel: "open:h2"}})
		if code != http.StatusNoContent {
			t.Fatalf("emulation over HTTP/2: %d", code)
		}
		if rep := s.Reply(t, ids[0]); rep.Error != nil || rep.Presence == nil {
			t.Fatalf("presence: %+v", rep)
		}
		s.Close()
	}
}

// Shutdown ends streams with 3001 (reconnect, to another replica) and does
// not wait out the grace period for them.
func TestStreamShutdown(t *testing.T) {
	cfg := servertest.Config()
	cfg.HTTP.ShutdownGracePeriod = config.Duration(10 * time.Second)
	srv := servertest.Start(t, cfg, nil, nil)
	var streams []*servertest.Stream
	for _, k := range streamKinds {
		streams = append(streams, servertest.DialStream(t, nil, srv.HTTP, k.kind, k.proto, servertest.Token(t, "alice")))
	}
	start := time.Now()
	srv.Stop(t)
	if took := time.Since(start); took > 7*time.Second {
		t.Errorf("shutdown took %s: streams held it past half the grace period", took)
	}
	for _, s := range streams {
		if code := s.WaitEnd(t); code != 3001 {
			t.Errorf("%s: disconnect %d, want 3001 shutdown", s.Kind, code)
		}
	}
}

func writeCert(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
