package postgres

import (
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/testenv"
)

// Several ChatClusters on one server, provisioned by an admin that is not a
// superuser: what each tenant role can reach, and that the admin holds no
// tenant's rights once a call is over.

// nonSuperuserAdmin creates the least an admin Secret needs (LOGIN
// CREATEROLE CREATEDB) and returns how to connect as it, and its name.
// Register it before the tenants it provisions: cleanups run in reverse.
func nonSuperuserAdmin(t *testing.T) (Admin, string) {
	t.Helper()
	role := "parley_" + strings.ReplaceAll(testenv.UniqueName(t, "admin"), "-", "_")
	forget(t, Database{Name: role + "_unused", Role: role})
	if _, err := adminConn(t).Exec(ctxT(t), "CREATE ROLE "+ident(role)+" LOGIN CREATEROLE CREATEDB"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return Admin{URI: u.String()}, role
}

// hasRole reports whether admin may use role's rights or SET ROLE to it:
// membership before PostgreSQL 16; from 16 on, the creator's ADMIN OPTION
// membership (INHERIT FALSE, SET FALSE) gives neither, so USAGE and SET are
// what count.
func hasRole(t *testing.T, admin, role string) bool {
	t.Helper()
	conn := adminConn(t)
	v, err := serverVersion(ctxT(t), conn)
	if err != nil {
		t.Fatal(err)
	}
	q := "SELECT pg_has_role($1, $2, 'MEMBER')"
	if v >= 160000 {
		q = "SELECT pg_has_role($1, $2, 'USAGE') OR pg_has_role($1, $2, 'SET')"
	}
	var ok bool
	if err := conn.QueryRow(ctxT(t), q, admin, role).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func assertNoMembership(t *testing.T, when, admin string, roles ...string) {
	t.Helper()
	for _, r := range roles {
		if hasRole(t, admin, r) {
			t.Errorf("%s: the admin %q is a member of tenant role %q", when, admin, r)
		}
	}
}

func connectAdmin(t *testing.T, a Admin, database string) *pgx.Conn {
	t.Helper()
	cfg, _, err := parseAdmin(a)
	if err != nil {
		t.Fatal(err)
	}
	if database != "" {
		cfg.Database = database
	}
	conn, err := pgx.ConnectConfig(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeConn(conn) })
	return conn
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded; it must be refused", what)
	} else if sqlState(err) != insufficientPrivilege {
		t.Errorf("%s: %v; want permission denied (42501)", what, err)
	}
}

func TestTenantRolesAreIsolatedFromEachOtherAndFromTheAdmin(t *testing.T) {
	admin, adminRole := nonSuperuserAdmin(t)
	a, b := newDatabase(t), newDatabase(t)
	c := &Client{}
	ra, err := c.Ensure(ctxT(t), admin, a, password(t))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := c.Ensure(ctxT(t), admin, b, password(t))
	if err != nil {
		t.Fatal(err)
	}
	assertNoMembership(t, "after Ensure", adminRole, a.Role, b.Role)

	// B keeps something in its database.
	connB := connectAs(t, rb.Credentials)
	if _, err := connB.Exec(ctxT(t), "CREATE TABLE secret (v text); INSERT INTO secret VALUES ('b only')"); err != nil {
		t.Fatal(err)
	}

	connA := connectAs(t, ra.Credentials)
	_, err = connA.Exec(ctxT(t), "SET ROLE "+ident(b.Role))
	wantDenied(t, "A: SET ROLE B", err)
	_, err = connA.Exec(ctxT(t), "DROP DATABASE "+ident(b.Name))
	wantDenied(t, "A: DROP DATABASE B", err)
	stranger := ra.Credentials
	stranger.Database = b.Name
	_, err = pgx.Connect(ctxT(t), stranger.URI())
	wantDenied(t, "A: connect to B's database", err)

	// Even inside B's database A has no right on B's table (checked as the
	// superuser there, since A cannot get in).
	super := connectAdmin(t, Admin{URI: testenv.PostgresURL()}, b.Name)
	var canRead, canConnect bool
	if err := super.QueryRow(ctxT(t), "SELECT has_table_privilege($1, 'secret', 'SELECT'), has_database_privilege($1, $2, 'CONNECT')",
		a.Role, b.Name).Scan(&canRead, &canConnect); err != nil {
		t.Fatal(err)
	}
	if canRead || canConnect {
		t.Errorf("A may read B's table: %v, connect to B's database: %v", canRead, canConnect)
	}

	// The admin credentials do not open the tenants either.
	adminConn := connectAdmin(t, admin, "")
	_, err = adminConn.Exec(ctxT(t), "SET ROLE "+ident(a.Role))
	wantDenied(t, "admin: SET ROLE A", err)
	_, err = pgx.Connect(ctxT(t), strings.Replace(admin.URI, "/postgres?", "/"+url.PathEscape(b.Name)+"?", 1))
	wantDenied(t, "admin: connect to B's database", err)

	if err := c.Drop(ctxT(t), admin, a); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a)
	assertNoMembership(t, "after Drop", adminRole, b.Role)
}

func TestAdminIsNoMemberAfterAFailedEnsureOrDrop(t *testing.T) {
	admin, adminRole := nonSuperuserAdmin(t)
	d := newDatabase(t)
	c := &Client{}
	pw := password(t)
	if _, err := c.Ensure(ctxT(t), admin, d, pw); err != nil {
		t.Fatal(err)
	}
	super := adminConn(t)

	// A step that fails after the membership was granted: the database
	// looks half set up (no marker) and its schema public is gone, so
	// setting the schema's owner fails.
	if _, err := super.Exec(ctxT(t), "COMMENT ON DATABASE "+ident(d.Name)+" IS NULL"); err != nil {
		t.Fatal(err)
	}
	asSuper(t, d.Name, "DROP SCHEMA public CASCADE")
	if _, err := c.Ensure(ctxT(t), admin, d, pw); err == nil || !strings.Contains(err.Error(), "schema public") {
		t.Fatalf("Ensure with schema public gone: %v; want the schema step to fail", err)
	}
	assertNoMembership(t, "after an Ensure that failed mid-way", adminRole, d.Role)
	asSuper(t, d.Name, "CREATE SCHEMA public AUTHORIZATION "+ident(d.Role))

	// A membership an older operator version left for good is revoked by
	// the next Ensure, even one that fails (a database name conflict).
	leftover := func() {
		t.Helper()
		if _, err := super.Exec(ctxT(t), "GRANT "+ident(d.Role)+" TO "+ident(adminRole)); err != nil {
			t.Fatal(err)
		}
		if !hasRole(t, adminRole, d.Role) {
			t.Fatal("the leftover membership was not set up")
		}
	}
	leftover()
	if _, err := c.Ensure(ctxT(t), admin, d, pw); err != nil {
		t.Fatal(err)
	}
	assertNoMembership(t, "after an Ensure that found a leftover membership", adminRole, d.Role)

	foreign := newDatabase(t)
	if _, err := super.Exec(ctxT(t), "CREATE DATABASE "+ident(foreign.Name)); err != nil {
		t.Fatal(err)
	}
	conflicting := Database{Name: foreign.Name, Role: d.Role, Owner: d.Owner}
	leftover()
	if _, err := c.Ensure(ctxT(t), admin, conflicting, pw); ReasonOf(err) != ReasonConflict {
		t.Fatalf("Ensure over a foreign database: reason %q, err %v", ReasonOf(err), err)
	}
	assertNoMembership(t, "after an Ensure that met a foreign database", adminRole, d.Role)

	leftover()
	if err := c.Drop(ctxT(t), admin, conflicting); ReasonOf(err) != ReasonConflict {
		t.Fatalf("Drop of a foreign database: reason %q, err %v", ReasonOf(err), err)
	}
	assertNoMembership(t, "after a Drop that refused", adminRole, d.Role)

	leftover()
	if err := c.Drop(ctxT(t), admin, d); err != nil {
		t.Fatal(err)
	}
	assertGone(t, d)
}

func TestSuperuserAdminGetsNoMembership(t *testing.T) {
	d := newDatabase(t)
	ensure(t, d, password(t))
	var rows int
	if err := adminConn(t).QueryRow(ctxT(t), `
		SELECT count(*) FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid
		WHERE r.rolname = $1`, d.Role).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Errorf("role %q has %d members after Ensure by a superuser; want none", d.Role, rows)
	}
	if err := (&Client{}).Drop(ctxT(t), Admin{URI: testenv.PostgresURL()}, d); err != nil {
		t.Fatal(err)
	}
	assertGone(t, d)
}

func TestProbeReturnsTheServerVersion(t *testing.T) {
	c := &Client{}
	info, err := c.Probe(ctxT(t), Admin{URI: testenv.PostgresURL()})
	if err != nil {
		t.Fatal(err)
	}
	var want string
	if err := adminConn(t).QueryRow(ctxT(t), "SHOW server_version").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if info.Version != want || info.Version == "" {
		t.Errorf("Version = %q, want %q", info.Version, want)
	}
	if _, err := c.Probe(ctxT(t), Admin{URI: "postgres://u:p@" + testenv.ClosedAddr(t) + "/db?sslmode=disable"}); ReasonOf(err) != ReasonUnreachable {
		t.Errorf("closed port: reason %q, err %v", ReasonOf(err), err)
	}
}

// asSuper runs stmt as the superuser in database and disconnects (a
// superuser's session would keep a non-superuser admin from dropping it).
func asSuper(t *testing.T, database, stmt string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = database
	conn, err := pgx.ConnectConfig(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctxT(t), stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}
