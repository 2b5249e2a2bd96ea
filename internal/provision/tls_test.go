package provision

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

func testCertPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestTLSConfigTrustsOnlyTheBundleAndNamesTheHost(t *testing.T) {
	ca := testCertPEM(t)
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("ignored")})
	cfg, err := TLSConfig(append(append([]byte{}, key...), ca...), "db.example")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "db.example" || cfg.InsecureSkipVerify || cfg.RootCAs == nil || cfg.MinVersion < tls.VersionTLS12 {
		t.Fatalf("config %+v", cfg)
	}
	if !cfg.RootCAs.Equal(mustPool(t, ca)) {
		t.Fatal("the pool holds more or less than the bundle's certificate")
	}
	for name, bundle := range map[string][]byte{
		"empty":        nil,
		"not PEM":      []byte("hello"),
		"only a key":   key,
		"bad DER cert": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}),
	} {
		if _, err := TLSConfig(bundle, "h"); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !TLSFailure(err) && name != "bad DER cert" {
			t.Errorf("%s: %v is not a TLS failure", name, err)
		}
	}
}

func mustPool(t *testing.T, pemBytes []byte) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no cert")
	}
	return p
}

func TestTLSFailure(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"unknown authority":  {&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true},
		"wrapped hostname":   {fmt.Errorf("connect: %w", x509.HostnameError{Host: "h", Certificate: &x509.Certificate{}}), true},
		"expired":            {x509.CertificateInvalidError{Reason: x509.Expired}, true},
		"not TLS":            {tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true},
		"alert":              {tls.AlertError(40), true},
		"pg refused TLS":     {errors.New("failed to connect: server refused TLS connection"), true},
		"empty bundle":       {ErrNoCertificate, true},
		"connection refused": {&net.OpError{Op: "dial", Err: errors.New("refused")}, false},
		"eof":                {io.EOF, false},
		"nil":                {nil, false},
	} {
		if got := TLSFailure(tc.err); got != tc.want {
			t.Errorf("%s: TLSFailure = %v, want %v", name, got, tc.want)
		}
	}
}
