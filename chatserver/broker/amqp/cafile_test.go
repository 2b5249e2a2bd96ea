package amqp_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/config"
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func selfSignedPEM(t *testing.T) []byte {
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

func TestLoadCAFile(t *testing.T) {
	if pool, err := amqp.LoadCAFile(writeFile(t, "ca.crt", selfSignedPEM(t))); err != nil || pool == nil {
		t.Fatalf("a PEM certificate: %v", err)
	}
	for name, path := range map[string]string{
		"no certificate": writeFile(t, "empty.crt", []byte("-----BEGIN NOTHING-----\n")),
		"missing file":   filepath.Join(t.TempDir(), "absent.crt"),
	} {
		if _, err := amqp.LoadCAFile(path); err == nil || !strings.Contains(err.Error(), "broker.caFile") {
			t.Errorf("%s: %v; want an error naming broker.caFile", name, err)
		}
	}
}

func TestOpenRefusesABadCAFile(t *testing.T) {
	_, err := amqp.Open(config.Broker{
		Type: "amqp", URLFile: writeFile(t, "url", []byte("amqps://u:p@127.0.0.1:5671/")),
		Exchange: "e", ControlExchange: "c", CAFile: writeFile(t, "ca.crt", []byte("garbage")),
	}, "node", nil)
	if err == nil || !strings.Contains(err.Error(), "broker.caFile") {
		t.Fatalf("Open with a CA file holding no certificate: %v; want an error naming broker.caFile", err)
	}
}
