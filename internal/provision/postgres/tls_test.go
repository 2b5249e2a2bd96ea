package postgres

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/testenv"
)

// The real server behind a TLS proxy (testenv.PostgresTLSProxy) that hangs
// up on any client that does not negotiate TLS, with a CA made by the test.

// tlsAdmin returns the superuser's URI through a TLS proxy signed by ca.
// The URI says sslmode=disable: with a CA, TLS is used whatever it says.
func tlsAdmin(t *testing.T, ca *testenv.CA) Admin {
	t.Helper()
	cfg, err := pgx.ParseConfig(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.PostgresTLSProxy(t, ca, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	u, err := url.Parse(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Host = proxy
	return Admin{URI: u.String(), CAPEM: ca.CertPEM}
}

func TestEnsureProbeAndPingOverTLSWithTheRightCA(t *testing.T) {
	ca := testenv.NewCA(t)
	admin := tlsAdmin(t, ca)
	c := &Client{}
	info, err := c.Probe(ctxT(t), admin)
	if err != nil || info.Version == "" {
		t.Fatalf("Probe through TLS: %+v, %v", info, err)
	}
	if err := c.Ping(ctxT(t), admin); err != nil {
		t.Fatalf("Ping through TLS: %v", err)
	}
	d := newDatabase(t)
	res, err := c.Ensure(ctxT(t), admin, d, password(t))
	if err != nil {
		t.Fatalf("Ensure through TLS: %v", err)
	}
	cr := res.Credentials
	if cr.SSLMode != "verify-full" {
		t.Errorf("credentials sslmode %q, want verify-full", cr.SSLMode)
	}
	// The chat servers' credentials work through the proxy with the CA file
	// where the pod would mount it.
	cr.SSLRootCert = ca.WriteCertFile(t)
	if !strings.Contains(cr.URI(), "sslrootcert=") || !strings.Contains(cr.URI(), "sslmode=verify-full") {
		t.Fatalf("credentials URI %q lacks sslmode or sslrootcert", cr.URI())
	}
	conn := connectAs(t, cr)
	var db string
	if err := conn.QueryRow(ctxT(t), "SELECT current_database()").Scan(&db); err != nil || db != d.Name {
		t.Fatalf("connected to %q, %v", db, err)
	}
	closeConn(conn)
	// With another CA's file they do not.
	cr.SSLRootCert = testenv.NewCA(t).WriteCertFile(t)
	if conn, err := pgx.Connect(ctxT(t), cr.URI()); err == nil {
		closeConn(conn)
		t.Fatal("the credentials connected with a CA that did not sign the server's certificate")
	}
	if err := c.Drop(ctxT(t), admin, d); err != nil {
		t.Fatalf("Drop through TLS: %v", err)
	}
	assertGone(t, d)
}

func TestWrongCAIsATLSFailure(t *testing.T) {
	ca := testenv.NewCA(t)
	admin := tlsAdmin(t, ca)
	admin.CAPEM = testenv.NewCA(t).CertPEM
	c := &Client{}
	d := DatabaseFor("test", "never-created")
	_, err := c.Ensure(ctxT(t), admin, d, "pw")
	if ReasonOf(err) != ReasonTLS || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Ensure with a wrong CA: reason %q, err %v; want %q naming the certificate", ReasonOf(err), err, ReasonTLS)
	}
	t.Logf("wrong CA reads: %v", err)
	if _, err := c.Probe(ctxT(t), admin); ReasonOf(err) != ReasonTLS {
		t.Errorf("Probe with a wrong CA: reason %q, err %v", ReasonOf(err), err)
	}
	if err := c.Drop(ctxT(t), admin, d); ReasonOf(err) != ReasonTLS {
		t.Errorf("Drop with a wrong CA: reason %q, err %v", ReasonOf(err), err)
	}
	if err := c.Ping(ctxT(t), admin); ReasonOf(err) != ReasonTLS {
		t.Errorf("Ping with a wrong CA: reason %q, err %v", ReasonOf(err), err)
	}
}

func TestCAIsEnforcedAgainstAServerItDidNotSign(t *testing.T) {
	// The server reached directly either has no TLS (it answers 'N') or a
	// certificate of its own (a snakeoil one on Debian): with a CA both are
	// failures, never a fall back to plain text or to the system roots.
	_, err := (&Client{}).Probe(ctxT(t), Admin{URI: testenv.PostgresURL(), CAPEM: testenv.NewCA(t).CertPEM})
	if ReasonOf(err) != ReasonTLS {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonTLS)
	}
}

func TestCABundleWithoutCertificateIsRefused(t *testing.T) {
	_, err := (&Client{}).Probe(ctxT(t), Admin{URI: testenv.PostgresURL(), CAPEM: []byte("not a certificate")})
	if ReasonOf(err) != ReasonTLS || !strings.Contains(err.Error(), "CA") {
		t.Fatalf("reason %q, err %v; want %q naming the CA", ReasonOf(err), err, ReasonTLS)
	}
}
