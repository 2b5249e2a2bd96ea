package postgres

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/testenv"
)

// These tests talk to the real PostgreSQL (testenv.PostgresURL) with role and
// database names unique to each test, dropped afterwards. The server on this
// machine trusts loopback connections, so a password is proven by comparing
// it with the role's stored SCRAM verifier rather than by logging in.

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func adminConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctxT(t), testenv.PostgresURL())
	if err != nil {
		t.Fatalf("connect to PostgreSQL (run `make services` or set PARLEY_TEST_POSTGRES_URL): %v", err)
	}
	t.Cleanup(func() { closeConn(conn) })
	return conn
}

// forget drops a test's database and role whatever state they are in.
func forget(t *testing.T, names ...Database) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testenv.PostgresURL())
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer closeConn(conn)
		for _, d := range names {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(d.Name)+" WITH (FORCE)"); err != nil {
				t.Errorf("cleanup: drop database %q: %v", d.Name, err)
			}
			if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+ident(d.Role)); err != nil {
				t.Errorf("cleanup: drop role %q: %v", d.Role, err)
			}
		}
	})
}

func newDatabase(t *testing.T) Database {
	t.Helper()
	d := DatabaseFor("test", testenv.UniqueName(t, "pg"))
	forget(t, d)
	return d
}

func ensure(t *testing.T, d Database, password string) Result {
	t.Helper()
	res, err := (&Client{}).Ensure(ctxT(t), Admin{URI: testenv.PostgresURL()}, d, password)
	if err != nil {
		t.Fatalf("Ensure(%q): %v", d.Name, err)
	}
	return res
}

func password(t *testing.T) string {
	p, err := GeneratePassword()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func connectAs(t *testing.T, c Credentials) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctxT(t), c.URI())
	if err != nil {
		t.Fatalf("connect with the generated credentials: %v", err)
	}
	t.Cleanup(func() { closeConn(conn) })
	return conn
}

// storedVerifier reads the role's password verifier as the superuser.
func storedVerifier(t *testing.T, role string) string {
	t.Helper()
	var v *string
	if err := adminConn(t).QueryRow(ctxT(t), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v == nil {
		return ""
	}
	return *v
}

func TestScramVerifierAgreesWithPostgres(t *testing.T) {
	// The server hashes a plaintext password itself; our check must accept it.
	role := "parley_" + strings.ReplaceAll(testenv.UniqueName(t, "scram"), "-", "_")
	forget(t, Database{Name: role + "_db", Role: role})
	conn := adminConn(t)
	if _, err := conn.Exec(ctxT(t), "SET password_encryption = 'scram-sha-256'; CREATE ROLE "+ident(role)+" PASSWORD 'pässwörd 1'"); err != nil {
		t.Fatal(err)
	}
	v := storedVerifier(t, role)
	if !scramMatches(v, "pässwörd 1") {
		t.Fatalf("scramMatches rejects the server's own verifier %q", v)
	}
	if scramMatches(v, "pässwörd 2") {
		t.Fatal("scramMatches accepts a wrong password")
	}
}

func TestEnsureCreatesALeastPrivilegeRoleAndItsDatabase(t *testing.T) {
	d := newDatabase(t)
	pw := password(t)
	res := ensure(t, d, pw)
	if !res.CreatedRole || !res.CreatedDatabase || !res.PasswordSet {
		t.Errorf("first Ensure reported %+v; want role, database and password created", res)
	}
	c := res.Credentials
	if c.Database != d.Name || c.Username != d.Role || c.Password != pw || c.Host == "" || c.Port == 0 {
		t.Fatalf("credentials %+v do not name the new database and role", c)
	}
	if !scramMatches(storedVerifier(t, d.Role), pw) {
		t.Fatal("the role's stored password is not the generated one")
	}

	conn := connectAs(t, c)
	var user, db string
	if err := conn.QueryRow(ctxT(t), "SELECT current_user, current_database()").Scan(&user, &db); err != nil {
		t.Fatal(err)
	}
	if user != d.Role || db != d.Name {
		t.Fatalf("connected as %q to %q, want %q to %q", user, db, d.Role, d.Name)
	}
	// It owns its database: it can build its schema...
	if _, err := conn.Exec(ctxT(t), "CREATE TABLE history (id bigint PRIMARY KEY); INSERT INTO history VALUES (1); CREATE SCHEMA extra"); err != nil {
		t.Fatalf("the role cannot build its own schema: %v", err)
	}
	// ...and nothing more.
	for _, stmt := range []string{
		"CREATE ROLE " + ident(d.Role+"_x"),
		"CREATE DATABASE " + ident(d.Name+"_x"),
		"ALTER ROLE " + ident(d.Role) + " SUPERUSER",
	} {
		_, err := conn.Exec(ctxT(t), stmt)
		if err == nil {
			t.Errorf("%s succeeded; the role must not be able to", stmt)
		} else if sqlState(err) != insufficientPrivilege {
			t.Errorf("%s: %v; want SQLSTATE 42501", stmt, err)
		}
	}
	var super, createRole, createDB, repl, bypass bool
	if err := adminConn(t).QueryRow(ctxT(t), "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1", d.Role).
		Scan(&super, &createRole, &createDB, &repl, &bypass); err != nil {
		t.Fatal(err)
	}
	if super || createRole || createDB || repl || bypass {
		t.Errorf("role attributes super=%v createrole=%v createdb=%v replication=%v bypassrls=%v; want all false", super, createRole, createDB, repl, bypass)
	}

	again := ensure(t, d, pw)
	if again.CreatedRole || again.CreatedDatabase || again.PasswordSet {
		t.Errorf("second Ensure with the same password changed something: %+v", again)
	}
}

func TestOtherRolesCannotConnectToTheDatabase(t *testing.T) {
	a, b := newDatabase(t), newDatabase(t)
	ra := ensure(t, a, password(t))
	rb := ensure(t, b, password(t))
	stranger := rb.Credentials
	stranger.Database = ra.Credentials.Database
	conn, err := pgx.Connect(ctxT(t), stranger.URI())
	if err == nil {
		closeConn(conn)
		t.Fatalf("role %q connected to the database of another ChatCluster", b.Role)
	}
	if sqlState(err) != insufficientPrivilege {
		t.Fatalf("connect to another cluster's database: %v; want permission denied (42501)", err)
	}
}

func TestUserChosenPasswordIsApplied(t *testing.T) {
	d := newDatabase(t)
	generated := password(t)
	ensure(t, d, generated)
	chosen := `my own "pass'word" with ünïcode`
	res := ensure(t, d, chosen)
	if !res.PasswordSet || res.Credentials.Password != chosen {
		t.Fatalf("Ensure with a user password: %+v", res)
	}
	v := storedVerifier(t, d.Role)
	if !scramMatches(v, chosen) || scramMatches(v, generated) {
		t.Fatal("the stored password is not the user's")
	}
	connectAs(t, res.Credentials).Close(ctxT(t))
	if again := ensure(t, d, chosen); again.PasswordSet {
		t.Error("Ensure rewrote a password that was already right")
	}
}

func TestNamesWithQuotesAndUnicodeAreSafe(t *testing.T) {
	full := testenv.UniqueName(t, "q")
	u := full[strings.LastIndexByte(full, '-')+1:] // the random part
	d := Database{
		Name:  `db "` + u + `"; DROP DATABASE postgres; --ü`,
		Role:  `rôle'` + u + `'"; DROP ROLE postgres; --`,
		Owner: `test/quote'"ü`,
	}
	if len(d.Name) > maxIdentifierBytes || len(d.Role) > maxIdentifierBytes {
		t.Fatalf("test names too long: %d, %d bytes", len(d.Name), len(d.Role))
	}
	forget(t, d)
	res := ensure(t, d, `pa'ss"w\rd`)
	conn := connectAs(t, res.Credentials)
	var user, db string
	if err := conn.QueryRow(ctxT(t), "SELECT current_user, current_database()").Scan(&user, &db); err != nil {
		t.Fatal(err)
	}
	if user != d.Role || db != d.Name {
		t.Fatalf("connected as %q to %q, want %q to %q", user, db, d.Role, d.Name)
	}
	closeConn(conn)
	var n int
	if err := adminConn(t).QueryRow(ctxT(t), "SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("role postgres: count %d, err %v", n, err)
	}
	if err := (&Client{}).Drop(ctxT(t), Admin{URI: testenv.PostgresURL()}, d); err != nil {
		t.Fatal(err)
	}
	assertGone(t, d)
}

func assertGone(t *testing.T, d Database) {
	t.Helper()
	var dbs, roles int
	conn := adminConn(t)
	if err := conn.QueryRow(ctxT(t), "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1), (SELECT count(*) FROM pg_roles WHERE rolname = $2)", d.Name, d.Role).Scan(&dbs, &roles); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 || roles != 0 {
		t.Fatalf("after Drop: %d databases named %q, %d roles named %q", dbs, d.Name, roles, d.Role)
	}
}

func TestDropTerminatesConnectionsAndIsIdempotent(t *testing.T) {
	d := newDatabase(t)
	res := ensure(t, d, password(t))
	// A chat server still connected as the role, and a session of the role
	// in another database, must not block the drop.
	conn := connectAs(t, res.Credentials)
	if _, err := conn.Exec(ctxT(t), "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	if err := (&Client{}).Drop(ctxT(t), Admin{URI: testenv.PostgresURL()}, d); err != nil {
		t.Fatal(err)
	}
	assertGone(t, d)
	if err := conn.Ping(ctxT(t)); err == nil {
		t.Error("the role's connection survived the drop")
	}
	if err := (&Client{}).Drop(ctxT(t), Admin{URI: testenv.PostgresURL()}, d); err != nil {
		t.Fatalf("second Drop: %v", err)
	}
}

func TestEnsureRepairsPrivilegeDrift(t *testing.T) {
	d := newDatabase(t)
	pw := password(t)
	ensure(t, d, pw)
	admin := adminConn(t)
	for _, stmt := range []string{
		"ALTER ROLE " + ident(d.Role) + " CREATEDB CREATEROLE",
		"ALTER DATABASE " + ident(d.Name) + " OWNER TO CURRENT_USER",
		"GRANT CONNECT ON DATABASE " + ident(d.Name) + " TO PUBLIC",
	} {
		if _, err := admin.Exec(ctxT(t), stmt); err != nil {
			t.Fatal(err)
		}
	}
	ensure(t, d, pw)
	role, err := lookupRole(ctxT(t), admin, d.Role)
	if err != nil {
		t.Fatal(err)
	}
	if !role.leastPrivilege() {
		t.Errorf("role attributes not restored: %+v", role)
	}
	db, err := lookupDatabase(ctxT(t), admin, d.Name)
	if err != nil {
		t.Fatal(err)
	}
	if db.owner != d.Role || db.publicGranted {
		t.Errorf("database owner %q, PUBLIC granted %v; want %q and false", db.owner, db.publicGranted, d.Role)
	}
}

func TestEnsureFinishesADatabaseLeftHalfSetUp(t *testing.T) {
	d := newDatabase(t)
	pw := password(t)
	ensure(t, d, pw)
	// As if the operator died between CREATE DATABASE and the marking comment.
	admin := adminConn(t)
	if _, err := admin.Exec(ctxT(t), "COMMENT ON DATABASE "+ident(d.Name)+" IS NULL"); err != nil {
		t.Fatal(err)
	}
	if res := ensure(t, d, pw); res.CreatedDatabase {
		t.Error("Ensure re-created an existing database")
	}
	db, err := lookupDatabase(ctxT(t), admin, d.Name)
	if err != nil {
		t.Fatal(err)
	}
	if db.comment != d.marker() {
		t.Errorf("database comment %q, want %q", db.comment, d.marker())
	}
}

func TestForeignRoleOrDatabaseIsNeverAdoptedOrDropped(t *testing.T) {
	admin := adminConn(t)

	d := newDatabase(t)
	// A role someone else made, with a name we would pick.
	if _, err := admin.Exec(ctxT(t), "CREATE ROLE "+ident(d.Role)+" LOGIN CREATEDB"); err != nil {
		t.Fatal(err)
	}
	_, err := (&Client{}).Ensure(ctxT(t), Admin{URI: testenv.PostgresURL()}, d, password(t))
	if ReasonOf(err) != ReasonConflict {
		t.Fatalf("Ensure over a foreign role: reason %q, err %v", ReasonOf(err), err)
	}
	if v := storedVerifier(t, d.Role); v != "" {
		t.Error("Ensure set a password on a role it does not own")
	}
	if err := (&Client{}).Drop(ctxT(t), Admin{URI: testenv.PostgresURL()}, d); ReasonOf(err) != ReasonConflict {
		t.Fatalf("Drop of a foreign role: reason %q, err %v", ReasonOf(err), err)
	}
	if role, _ := lookupRole(ctxT(t), admin, d.Role); !role.exists || !role.createDB {
		t.Fatal("a foreign role was dropped or altered")
	}

	e := newDatabase(t)
	if _, err := admin.Exec(ctxT(t), "CREATE DATABASE "+ident(e.Name)); err != nil {
		t.Fatal(err)
	}
	_, err = (&Client{}).Ensure(ctxT(t), Admin{URI: testenv.PostgresURL()}, e, password(t))
	if ReasonOf(err) != ReasonConflict || !strings.Contains(err.Error(), e.Name) {
		t.Fatalf("Ensure over a foreign database: reason %q, err %v", ReasonOf(err), err)
	}
	if err := (&Client{}).Drop(ctxT(t), Admin{URI: testenv.PostgresURL()}, e); ReasonOf(err) != ReasonConflict {
		t.Fatalf("Drop of a foreign database: reason %q, err %v", ReasonOf(err), err)
	}
	if db, _ := lookupDatabase(ctxT(t), admin, e.Name); !db.exists {
		t.Fatal("a foreign database was dropped")
	}
}

func TestNonSuperuserAdminWithCreateRoleAndCreateDB(t *testing.T) {
	// The least an admin Secret needs: LOGIN CREATEROLE CREATEDB.
	adminRole := Database{Name: "unused", Role: "parley_" + strings.ReplaceAll(testenv.UniqueName(t, "admin"), "-", "_")}
	d := newDatabase(t)
	forget(t, adminRole) // registered after d: runs before d's cleanup
	if _, err := adminConn(t).Exec(ctxT(t), "CREATE ROLE "+ident(adminRole.Role)+" LOGIN CREATEROLE CREATEDB"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(adminRole.Role)
	c := &Client{}
	res, err := c.Ensure(ctxT(t), Admin{URI: u.String()}, d, password(t))
	if err != nil {
		t.Fatal(err)
	}
	connectAs(t, res.Credentials).Close(ctxT(t))
	if err := c.Drop(ctxT(t), Admin{URI: u.String()}, d); err != nil {
		t.Fatal(err)
	}
	assertGone(t, d)
}

func TestAdminWithoutRightsIsPermissionDenied(t *testing.T) {
	adminRole := Database{Name: "unused", Role: "parley_" + strings.ReplaceAll(testenv.UniqueName(t, "weak"), "-", "_")}
	forget(t, adminRole)
	if _, err := adminConn(t).Exec(ctxT(t), "CREATE ROLE "+ident(adminRole.Role)+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(testenv.PostgresURL())
	u.User = url.User(adminRole.Role)
	d := newDatabase(t)
	_, err := (&Client{}).Ensure(ctxT(t), Admin{URI: u.String()}, d, password(t))
	if ReasonOf(err) != ReasonPermissionDenied {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonPermissionDenied)
	}
}

func TestUnknownAdminIsCredentialsRefused(t *testing.T) {
	u, _ := url.Parse(testenv.PostgresURL())
	u.User = url.UserPassword("parley_no_such_admin_"+strings.ReplaceAll(testenv.UniqueName(t, "x"), "-", "_"), "wrong-pa55word")
	_, err := (&Client{}).Ensure(ctxT(t), Admin{URI: u.String()}, DatabaseFor("test", "never"), "pw")
	if ReasonOf(err) != ReasonCredentialsRefused {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonCredentialsRefused)
	}
	if strings.Contains(err.Error(), "wrong-pa55word") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestClosedPortIsUnreachable(t *testing.T) {
	uri := "postgres://postgres:pw@" + testenv.ClosedAddr(t) + "/postgres?sslmode=disable"
	c := &Client{}
	if _, err := c.Ensure(ctxT(t), Admin{URI: uri}, DatabaseFor("test", "never"), "pw"); ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("Ensure: reason %q, err %v; want %q", ReasonOf(err), err, ReasonUnreachable)
	}
	if err := c.Drop(ctxT(t), Admin{URI: uri}, DatabaseFor("test", "never")); ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("Drop: reason %q, err %v; want %q", ReasonOf(err), err, ReasonUnreachable)
	}
}

func TestPing(t *testing.T) {
	c := &Client{}
	if err := c.Ping(ctxT(t), Admin{URI: testenv.PostgresURL()}); err != nil {
		t.Fatalf("Ping of the test server: %v", err)
	}
	u, _ := url.Parse(testenv.PostgresURL())
	u.Path = "/" + testenv.UniqueName(t, "no-such-db")
	if err := c.Ping(ctxT(t), Admin{URI: u.String()}); err == nil {
		t.Fatal("Ping of a missing database succeeded")
	}
	if err := c.Ping(ctxT(t), Admin{URI: "postgres://u:p@127.0.0.1:1/db?sslmode=disable"}); ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("Ping of a closed port: reason %q, err %v", ReasonOf(err), err)
	}
	if err := c.Ping(ctxT(t), Admin{URI: "postgres://u:s3cret@h:x/db"}); ReasonOf(err) != ReasonInvalidURI || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Ping of a bad URI: reason %q, err %v", ReasonOf(err), err)
	}
}

// BenchmarkEnsureExisting is the cost of one check of an unchanged role and
// database (connect as admin, look up, verify the password, close): what
// every check interval costs per ChatCluster.
func BenchmarkEnsureExisting(b *testing.B) {
	d := DatabaseFor("bench", testenv.UniqueName(b, "pg"))
	c := &Client{}
	ctx := context.Background()
	pw, err := GeneratePassword()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Ensure(ctx, Admin{URI: testenv.PostgresURL()}, d, pw); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Drop(context.Background(), Admin{URI: testenv.PostgresURL()}, d) })
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Ensure(ctx, Admin{URI: testenv.PostgresURL()}, d, pw); err != nil {
			b.Fatal(err)
		}
	}
}
