package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
)

func TestMain(m *testing.M) { leakcheck.Main(m, servertest.LeakOptions()...) }

// SIGTERM (context cancel): clients are told to reconnect (3001 shutdown),
// spread over time, the server drains and every goroutine ends (goleak).
func TestGracefulShutdown(t *testing.T) {
	cfg := servertest.Config()
	cfg.HTTP.ShutdownGracePeriod = config.Duration(2 * time.Second)
	srv := servertest.Start(t, cfg, nil, nil)
	const n = 6
	codes := make(chan uint32, n)
	for i := range n {
		proto := servertest.Protocols[i%2]
		c := servertest.Connect(t, srv.WS, proto, servertest.Token(t, "user"+string(rune('a'+i))))
		servertest.Subscribe(t, c, "room:shutdown", centrifuge.SubscriptionConfig{})
		c.OnConnecting(func(e centrifuge.ConnectingEvent) { servertest.Send(codes, e.Code) })
	}
	unauthenticated := servertest.DialRaw(t, srv.WS, "json")
	start := time.Now()
	srv.Stop(t)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("shutdown took %s with a 2s grace period", took)
	}
	for range n {
		if code := servertest.Recv(t, codes, "reconnect after shutdown"); code != 3001 {
			t.Fatalf("code %d, want 3001 shutdown", code)
		}
	}
	if code := unauthenticated.WaitClose(t); code != 3001 {
		t.Fatalf("unauthenticated connection closed with %d", code)
	}
	if srv.Conns.NumConns() != 0 || srv.Node.Hub().NumConns() != 0 {
		t.Fatalf("connections left: %d %d", srv.Conns.NumConns(), srv.Node.Hub().NumConns())
	}
}

func writeCert(t *testing.T, dir, cn string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	// Renames, like a Secret volume update, so a reader never sees half a file.
	if err := os.Rename(keyFile+".tmp", keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certFile+".tmp", certFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func servedCN(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test reads the served certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// wss works with the configured certificate, and a renewed certificate is
// served without a restart.
func TestTLSWithCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "first")
	cfg := servertest.Config()
	cfg.HTTP.TLS = &config.TLS{CertFile: certFile, KeyFile: keyFile}
	srv := servertest.Start(t, cfg, nil, nil)
	if cn := servedCN(t, srv.Addr); cn != "first" {
		t.Fatalf("served %q", cn)
	}
	c := servertest.NewClient(t, "wss://"+srv.Addr+"/connection/websocket", "json", centrifuge.Config{
		Token: servertest.Token(t, "alice"), TLSConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificate
	})
	connected := make(chan struct{}, 1)
	c.OnConnected(func(centrifuge.ConnectedEvent) { servertest.Send(connected, struct{}{}) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	servertest.Recv(t, connected, "wss connect")

	time.Sleep(1100 * time.Millisecond) // modification times must differ; checks run at most once a second
	writeCert(t, dir, "second")
	deadline := time.Now().Add(servertest.Timeout)
	for servedCN(t, srv.Addr) != "second" {
		if time.Now().After(deadline) {
			t.Fatal("renewed certificate never served")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestBadConfigFailsAtStart(t *testing.T) {
	_, err := config.Parse([]byte(`{"namespaces":[{"name":"room","allowHistory":"everyone"}],"auth":{"allowAnonymous":true}}`))
	if err == nil || !strings.Contains(err.Error(), "namespaces[0].allowHistory") {
		t.Fatalf("got %v, want an error naming namespaces[0].allowHistory", err)
	}
	_, err = config.Parse([]byte(`{"http":{"pingInterval":"-1s"},"auth":{"allowAnonymous":true}}`))
	if err == nil || !strings.Contains(err.Error(), "http.pingInterval") {
		t.Fatalf("got %v", err)
	}
}
