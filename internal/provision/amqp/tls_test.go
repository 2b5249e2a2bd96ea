package amqp

import (
	"crypto/tls"
	"net/url"
	"strings"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/internal/provision"
	"github.com/parley-chat/parley/internal/testenv"
)

// The real RabbitMQ behind TLS proxies (testenv.TLSProxy) for its AMQP port
// and its management API, with a CA made by the test.

// tlsBackend returns the admin's Backend through TLS proxies signed by ca.
func tlsBackend(t *testing.T, ca *testenv.CA) Backend {
	t.Helper()
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	mu, err := url.Parse(testenv.AMQPManagementURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme, u.Host = "amqps", testenv.TLSProxy(t, ca, u.Host)
	mu.Scheme, mu.Host = "https", testenv.TLSProxy(t, ca, mu.Host)
	return Backend{URI: u.String(), ManagementURI: mu.String(), CAPEM: ca.CertPEM}
}

func dialTLS(t *testing.T, uri string, caPEM []byte) (*amqp091.Connection, error) {
	t.Helper()
	pool, err := provision.CertPool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return amqp091.DialConfig(uri, amqp091.Config{TLSClientConfig: &tls.Config{RootCAs: pool}})
}

func TestEnsureTenantAndProbeOverTLSWithTheRightCA(t *testing.T) {
	ca := testenv.NewCA(t)
	b := tlsBackend(t, ca)
	c := &Client{}
	info, err := c.Probe(ctxT(t), b)
	if err != nil || info.Version == "" {
		t.Fatalf("Probe through TLS: %+v, %v", info, err)
	}
	ten := newTenant(t)
	res, err := c.EnsureTenant(ctxT(t), b, ten, "pw-tls")
	if err != nil {
		t.Fatalf("EnsureTenant through TLS: %v", err)
	}
	if !strings.HasPrefix(res.URI, "amqps://") {
		t.Fatalf("tenant URI %q is not amqps://", res.URI)
	}
	conn, err := dialTLS(t, res.URI, ca.CertPEM)
	if err != nil {
		t.Fatalf("the tenant URI with the CA: %v", err)
	}
	conn.Close()
	if conn, err := dialTLS(t, res.URI, testenv.NewCA(t).CertPEM); err == nil {
		conn.Close()
		t.Fatal("the tenant URI connected trusting another CA")
	}
	if err := c.DeleteTenant(ctxT(t), b, ten); err != nil {
		t.Fatalf("DeleteTenant through TLS: %v", err)
	}
}

func TestWrongCAIsATLSFailure(t *testing.T) {
	b := tlsBackend(t, testenv.NewCA(t))
	b.CAPEM = testenv.NewCA(t).CertPEM
	c := &Client{}
	ten := newTenant(t)
	_, err := c.EnsureTenant(ctxT(t), b, ten, "pw")
	if ReasonOf(err) != ReasonTLS || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("EnsureTenant with a wrong CA: reason %q, err %v; want %q naming the certificate", ReasonOf(err), err, ReasonTLS)
	}
	t.Logf("wrong CA reads: %v", err)
	if _, err := c.Probe(ctxT(t), b); ReasonOf(err) != ReasonTLS {
		t.Errorf("Probe with a wrong CA: reason %q, err %v", ReasonOf(err), err)
	}
	if err := c.DeleteTenant(ctxT(t), b, ten); ReasonOf(err) != ReasonTLS {
		t.Errorf("DeleteTenant with a wrong CA: reason %q, err %v", ReasonOf(err), err)
	}
	// The AMQP side alone: management reached in plain, AMQP through TLS.
	b.ManagementURI = testenv.AMQPManagementURL()
	_, err = c.Probe(ctxT(t), b)
	t.Logf("wrong CA for amqps:// reads: %v", err)
	if ReasonOf(err) != ReasonTLS {
		t.Errorf("Probe with a wrong CA for amqps:// only: reason %q, err %v", ReasonOf(err), err)
	}
	b.CAPEM = []byte("no certificate here")
	if _, err := c.Probe(ctxT(t), b); ReasonOf(err) != ReasonTLS || !strings.Contains(err.Error(), "CA") {
		t.Errorf("a CA bundle without certificate: reason %q, err %v", ReasonOf(err), err)
	}
}
