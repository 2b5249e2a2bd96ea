package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// AMQPManagementURL is the management API of the RabbitMQ the tests use
// (credentials: those of AMQPURL unless the URL carries its own).
func AMQPManagementURL() string {
	if u := os.Getenv("PARLEY_TEST_AMQP_MANAGEMENT_URL"); u != "" {
		return u
	}
	return "http://127.0.0.1:15672"
}

// CA is a certificate authority made for one test, and a server certificate
// it signed for 127.0.0.1 and localhost.
type CA struct {
	// CertPEM is the CA's certificate, what a client is told to trust.
	CertPEM []byte
	// Server is the certificate the TLS proxies present.
	Server tls.Certificate
}

// NewCA generates a CA and a server certificate (SAN 127.0.0.1, ::1 and
// localhost), valid for an hour.
func NewCA(t testing.TB) *CA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "parley test CA " + t.Name()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Server:  tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key},
	}
}

// WriteCertFile writes the CA certificate to a file in the test's temporary
// directory and returns its path (what a pod would mount).
func (ca *CA) WriteCertFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TLSProxy terminates TLS with ca's server certificate on a loopback port
// and forwards the plain bytes to target (RabbitMQ's AMQP or management
// port). It returns the proxy's host:port and stops when the test ends.
func TLSProxy(t testing.TB, ca *CA, target string) string {
	t.Helper()
	return startProxy(t, ca, target, false)
}

// PostgresTLSProxy fronts a PostgreSQL server the way a server with TLS
// does: it answers the 8-byte SSLRequest with 'S', does the TLS handshake,
// then forwards the rest to target in plain. A client that does not ask for
// TLS is hung up on, so a test cannot pass by skipping it.
func PostgresTLSProxy(t testing.TB, ca *CA, target string) string {
	t.Helper()
	return startProxy(t, ca, target, true)
}

// PostgreSQL's request codes in the first 8 bytes of a connection.
const (
	pgSSLRequest    = 80877103
	pgGSSENCRequest = 80877104
)

func startProxy(t testing.TB, ca *CA, target string, postgres bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveProxied(c, cfg, target, postgres, track)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

func serveProxied(c net.Conn, cfg *tls.Config, target string, postgres bool, track func(net.Conn) bool) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if postgres && !pgNegotiate(c) {
		return
	}
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		return // a client that does not trust the CA hangs up here
	}
	_ = c.SetDeadline(time.Time{})
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	if !track(up) {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, tc); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(tc, up); _ = tc.CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// pgNegotiate reads the client's first requests until it asks for TLS
// (answered 'S'); GSS encryption is declined ('N'), anything else ends the
// connection.
func pgNegotiate(c net.Conn) bool {
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return false
		}
		if binary.BigEndian.Uint32(hdr[:4]) != 8 {
			return false
		}
		switch binary.BigEndian.Uint32(hdr[4:]) {
		case pgSSLRequest:
			_, err := c.Write([]byte{'S'})
			return err == nil
		case pgGSSENCRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return false
			}
		default:
			return false
		}
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
