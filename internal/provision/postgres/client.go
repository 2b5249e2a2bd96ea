package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Provisioner ensures and drops a ChatCluster's role and database. The
// controller depends on this interface, so its logic is testable without a
// server; Client is the real implementation.
type Provisioner interface {
	// Ensure creates the role and database when missing, repairs privilege
	// drift, and makes password the role's password. Idempotent.
	// The admin is not a member of the role afterwards, whatever the outcome.
	Ensure(ctx context.Context, admin Admin, db Database, password string) (Result, error)
	// Drop terminates the database's connections and drops it and the role.
	// Missing objects count as dropped; objects not owned by db.Owner are
	// never touched (ReasonConflict).
	Drop(ctx context.Context, admin Admin, db Database) error
	// Ping connects with a.URI and runs a trivial query: the check for a
	// database the user brings (spec.database.secretRef).
	Ping(ctx context.Context, a Admin) error
	// Probe connects as the admin and returns the server's version.
	Probe(ctx context.Context, a Admin) (BackendInfo, error)
}

// EnsureFunc, DropFunc, PingFunc and ProbeFunc adapt plain functions to
// Provisioner (tests).
type (
	EnsureFunc func(ctx context.Context, admin Admin, db Database, password string) (Result, error)
	DropFunc   func(ctx context.Context, admin Admin, db Database) error
	PingFunc   func(ctx context.Context, a Admin) error
	ProbeFunc  func(ctx context.Context, a Admin) (BackendInfo, error)
)

// Funcs is a Provisioner made of functions.
type Funcs struct {
	EnsureFunc EnsureFunc
	DropFunc   DropFunc
	PingFunc   PingFunc
	ProbeFunc  ProbeFunc
}

// Ensure calls f.EnsureFunc.
func (f Funcs) Ensure(ctx context.Context, admin Admin, db Database, password string) (Result, error) {
	return f.EnsureFunc(ctx, admin, db, password)
}

// Drop calls f.DropFunc.
func (f Funcs) Drop(ctx context.Context, admin Admin, db Database) error {
	return f.DropFunc(ctx, admin, db)
}

// Ping calls f.PingFunc.
func (f Funcs) Ping(ctx context.Context, a Admin) error {
	return f.PingFunc(ctx, a)
}

// Probe calls f.ProbeFunc.
func (f Funcs) Probe(ctx context.Context, a Admin) (BackendInfo, error) {
	return f.ProbeFunc(ctx, a)
}

// BackendInfo is what Probe learns about a server.
type BackendInfo struct {
	// Version is the server's server_version ("15.20 (Debian 15.20-0+deb12u1)").
	Version string
}

// Result reports what Ensure did and how to connect.
type Result struct {
	Credentials     Credentials
	CreatedRole     bool
	CreatedDatabase bool
	// PasswordSet is true when the role's password was (re)written.
	PasswordSet bool
}

// DefaultTimeout bounds one Ensure or Drop when the context has no deadline.
const DefaultTimeout = 30 * time.Second

// Client talks to PostgreSQL with one short-lived admin connection per call.
type Client struct {
	// Timeout bounds a call when ctx has no deadline (DefaultTimeout if 0).
	Timeout time.Duration
	// ConnectTimeout bounds each connection attempt, dial to authentication
	// (10s if 0, or the URI's connect_timeout when shorter), so a server that
	// accepts connections and never answers is given up on early.
	ConnectTimeout time.Duration
}

var _ Provisioner = (*Client)(nil)

func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	t := c.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return context.WithTimeout(ctx, t)
}

// parseAdmin parses the admin URI with the client's connect timeout.
func (c *Client) parseAdmin(a Admin) (*pgx.ConnConfig, string, error) {
	cfg, sslMode, err := parseAdmin(a)
	if err == nil && c.ConnectTimeout > 0 && (cfg.ConnectTimeout == 0 || c.ConnectTimeout < cfg.ConnectTimeout) {
		cfg.ConnectTimeout = c.ConnectTimeout
	}
	return cfg, sslMode, err
}

func connect(ctx context.Context, cfg *pgx.ConnConfig, what string) (*pgx.Conn, error) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classify("connect "+what, err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// exec runs one statement, classifying its failure under op.
func exec(ctx context.Context, conn *pgx.Conn, op, sql string, args ...any) error {
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return classify(op, err)
	}
	return nil
}

// roleState is what Ensure and Drop need to know about an existing role.
type roleState struct {
	exists                                           bool
	super, createRole, createDB, login, repl, bypass bool
	comment                                          string
}

func lookupRole(ctx context.Context, conn *pgx.Conn, name string) (roleState, error) {
	var r roleState
	err := conn.QueryRow(ctx, `
		SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication, r.rolbypassrls,
		       coalesce(shobj_description(r.oid, 'pg_authid'), '')
		FROM pg_roles r WHERE r.rolname = $1`, name).
		Scan(&r.super, &r.createRole, &r.createDB, &r.login, &r.repl, &r.bypass, &r.comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return roleState{}, nil
	}
	if err != nil {
		return r, classify(fmt.Sprintf("look up role %q", name), err)
	}
	r.exists = true
	return r, nil
}

func (r roleState) leastPrivilege() bool {
	return r.login && !r.super && !r.createRole && !r.createDB && !r.repl && !r.bypass
}

type databaseState struct {
	exists        bool
	owner         string
	comment       string
	publicGranted bool
}

func lookupDatabase(ctx context.Context, conn *pgx.Conn, name string) (databaseState, error) {
	var d databaseState
	err := conn.QueryRow(ctx, `
		SELECT pg_get_userbyid(d.datdba), coalesce(shobj_description(d.oid, 'pg_database'), ''),
		       EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE a.grantee = 0)
		FROM pg_database d WHERE d.datname = $1`, name).
		Scan(&d.owner, &d.comment, &d.publicGranted)
	if errors.Is(err, pgx.ErrNoRows) {
		return databaseState{}, nil
	}
	if err != nil {
		return d, classify(fmt.Sprintf("look up database %q", name), err)
	}
	d.exists = true
	return d, nil
}

// ours reports whether the database belongs to db: marked as ours, or
// unmarked but owned by our role (a previous Ensure stopped between CREATE
// DATABASE and the comment that ends its setup).
func (d databaseState) ours(db Database) bool {
	return d.comment == db.marker() || (d.comment == "" && d.owner == db.Role)
}

const roleAttributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"

// Ensure implements Provisioner.
func (c *Client) Ensure(ctx context.Context, admin Admin, db Database, password string) (res Result, err error) {
	if err := db.Validate(); err != nil {
		return res, err
	}
	if err := validPassword(password); err != nil {
		return res, &Error{Reason: ReasonInvalid, Op: "validate password", Err: err}
	}
	cfg, sslMode, err := c.parseAdmin(admin)
	if err != nil {
		return res, err
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	conn, err := connect(ctx, cfg.Copy(), "as admin")
	if err != nil {
		return res, err
	}
	defer closeConn(conn)

	m, err := newMembership(ctx, conn, cfg, db.Role)
	if err != nil {
		return res, err
	}
	// Deferred before anything can fail: also revokes a membership an older
	// operator version left, and one borrowed for a step that then failed.
	defer func() {
		if rerr := m.release(ctx); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if res.CreatedRole, res.PasswordSet, err = ensureRole(ctx, conn, db, password); err != nil {
		return res, err
	}
	if res.CreatedDatabase, err = ensureDatabase(ctx, conn, cfg, db, m); err != nil {
		return res, err
	}
	res.Credentials = Credentials{
		Host: cfg.Host, Port: cfg.Port, Database: db.Name, Username: db.Role, Password: password, SSLMode: sslMode,
	}
	return res, nil
}

func ensureRole(ctx context.Context, conn *pgx.Conn, db Database, password string) (created, passwordSet bool, err error) {
	role, err := lookupRole(ctx, conn, db.Role)
	if err != nil {
		return false, false, err
	}
	op := fmt.Sprintf("create role %q", db.Role)
	if !role.exists {
		verifier, err := scramVerifier(password)
		if err != nil {
			return false, false, &Error{Reason: ReasonError, Op: op, Err: err}
		}
		// Role and marker in one transaction: a role that exists is always marked.
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "CREATE ROLE "+ident(db.Role)+" WITH "+roleAttributes+" PASSWORD "+quoteLiteral(verifier)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "COMMENT ON ROLE "+ident(db.Role)+" IS "+quoteLiteral(db.marker()))
			return err
		})
		if err != nil {
			return false, false, classify(op, err)
		}
		return true, true, nil
	}
	if role.comment != db.marker() {
		return false, false, &Error{Reason: ReasonConflict, Op: fmt.Sprintf("adopt role %q", db.Role),
			Err: fmt.Errorf("the role exists and is not managed by Parley for ChatCluster %s; choose another role name or remove it", db.Owner)}
	}
	if !role.leastPrivilege() {
		if err := exec(ctx, conn, fmt.Sprintf("restore least privilege of role %q", db.Role),
			"ALTER ROLE "+ident(db.Role)+" WITH "+roleAttributes); err != nil {
			return false, false, err
		}
	}
	current, known, err := storedPassword(ctx, conn, db.Role)
	if err != nil {
		return false, false, err
	}
	if known && scramMatches(current, password) {
		return false, false, nil
	}
	verifier, err := scramVerifier(password)
	if err != nil {
		return false, false, &Error{Reason: ReasonError, Op: "set password", Err: err}
	}
	if err := exec(ctx, conn, fmt.Sprintf("set password of role %q", db.Role),
		"ALTER ROLE "+ident(db.Role)+" WITH PASSWORD "+quoteLiteral(verifier)); err != nil {
		return false, false, err
	}
	return false, true, nil
}

// storedPassword reads the role's verifier. Only superusers may read
// pg_authid; for other admins known is false and the password is set anyway.
func storedPassword(ctx context.Context, conn *pgx.Conn, role string) (verifier string, known bool, err error) {
	var v *string
	err = conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&v)
	switch {
	case sqlState(err) == insufficientPrivilege:
		return "", false, nil
	case errors.Is(err, pgx.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, classify(fmt.Sprintf("read password of role %q", role), err)
	case v == nil:
		return "", true, nil
	}
	return *v, true, nil
}

func ensureDatabase(ctx context.Context, conn *pgx.Conn, admin *pgx.ConnConfig, db Database, m *membership) (bool, error) {
	d, err := lookupDatabase(ctx, conn, db.Name)
	if err != nil {
		return false, err
	}
	if d.exists && !d.ours(db) {
		return false, &Error{Reason: ReasonConflict, Op: fmt.Sprintf("adopt database %q", db.Name),
			Err: fmt.Errorf("the database exists (owner %q) and is not managed by Parley for ChatCluster %s; choose another database name or remove it", d.owner, db.Owner)}
	}
	if d.exists && d.owner == db.Role && !d.publicGranted && d.comment == db.marker() {
		return false, nil // nothing to change: no membership needed
	}
	// Creating a database owned by the role, and changing it, need the
	// admin to be a member of the role (or a superuser).
	if err := m.borrow(ctx); err != nil {
		return false, err
	}
	created := false
	if !d.exists {
		// CREATE DATABASE cannot run in a transaction: the comment that marks
		// the database as set up comes last, see databaseState.ours.
		if err := exec(ctx, conn, fmt.Sprintf("create database %q", db.Name),
			"CREATE DATABASE "+ident(db.Name)+" OWNER "+ident(db.Role)); err != nil {
			return false, err
		}
		created = true
		d = databaseState{exists: true, owner: db.Role, publicGranted: true}
	}
	if d.owner != db.Role {
		if err := exec(ctx, conn, fmt.Sprintf("give database %q back to role %q", db.Name, db.Role),
			"ALTER DATABASE "+ident(db.Name)+" OWNER TO "+ident(db.Role)); err != nil {
			return created, err
		}
	}
	if d.publicGranted {
		// Other roles on this server (other ChatClusters) must not connect.
		if err := exec(ctx, conn, fmt.Sprintf("revoke PUBLIC privileges on database %q", db.Name),
			"REVOKE ALL ON DATABASE "+ident(db.Name)+" FROM PUBLIC"); err != nil {
			return created, err
		}
	}
	if d.comment != db.marker() {
		if err := setupSchema(ctx, admin, db); err != nil {
			return created, err
		}
		if err := exec(ctx, conn, fmt.Sprintf("mark database %q", db.Name),
			"COMMENT ON DATABASE "+ident(db.Name)+" IS "+quoteLiteral(db.marker())); err != nil {
			return created, err
		}
	}
	return created, nil
}

// setupSchema gives the role the database's public schema and takes CREATE
// on it from PUBLIC (PostgreSQL before 15 grants it; 15 and later already
// make the database owner the schema's owner).
func setupSchema(ctx context.Context, admin *pgx.ConnConfig, db Database) error {
	cfg := admin.Copy()
	cfg.Database = db.Name
	conn, err := connect(ctx, cfg, fmt.Sprintf("to database %q as admin", db.Name))
	if err != nil {
		return err
	}
	defer closeConn(conn)
	return exec(ctx, conn, fmt.Sprintf("set up schema public of database %q", db.Name),
		"ALTER SCHEMA public OWNER TO "+ident(db.Role)+"; REVOKE CREATE ON SCHEMA public FROM PUBLIC")
}

// Drop implements Provisioner.
func (c *Client) Drop(ctx context.Context, admin Admin, db Database) (err error) {
	if err := db.Validate(); err != nil {
		return err
	}
	cfg, _, err := c.parseAdmin(admin)
	if err != nil {
		return err
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	conn, err := connect(ctx, cfg, "as admin")
	if err != nil {
		return err
	}
	defer closeConn(conn)
	m, err := newMembership(ctx, conn, cfg, db.Role)
	if err != nil {
		return err
	}
	// Deferred before anything can fail, as in Ensure.
	defer func() {
		if rerr := m.release(ctx); rerr != nil && err == nil {
			err = rerr
		}
	}()

	// Check both before touching either: a half-owned pair is left alone.
	d, err := lookupDatabase(ctx, conn, db.Name)
	if err != nil {
		return err
	}
	role, err := lookupRole(ctx, conn, db.Role)
	if err != nil {
		return err
	}
	if d.exists && !(d.comment == db.marker() || (d.comment == "" && d.owner == db.Role && role.comment == db.marker())) {
		return &Error{Reason: ReasonConflict, Op: fmt.Sprintf("drop database %q", db.Name),
			Err: fmt.Errorf("the database is not managed by Parley for ChatCluster %s; left in place", db.Owner)}
	}
	if role.exists && role.comment != db.marker() {
		return &Error{Reason: ReasonConflict, Op: fmt.Sprintf("drop role %q", db.Role),
			Err: fmt.Errorf("the role is not managed by Parley for ChatCluster %s; left in place", db.Owner)}
	}
	if role.exists {
		// Ending the role's sessions and dropping its database need the
		// admin to be a member of the role (or a superuser).
		if err := m.borrow(ctx); err != nil {
			return err
		}
	}
	if d.exists {
		if err := exec(ctx, conn, fmt.Sprintf("terminate connections to database %q", db.Name),
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", db.Name); err != nil {
			return err
		}
		drop := "DROP DATABASE IF EXISTS " + ident(db.Name)
		if v, err := serverVersion(ctx, conn); err == nil && v >= 130000 {
			// Also ends sessions that connected since the terminate above.
			drop += " WITH (FORCE)"
		}
		if err := exec(ctx, conn, fmt.Sprintf("drop database %q", db.Name), drop); err != nil {
			return err
		}
	}
	if role.exists {
		if err := exec(ctx, conn, fmt.Sprintf("terminate sessions of role %q", db.Role),
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()", db.Role); err != nil {
			return err
		}
		if err := exec(ctx, conn, fmt.Sprintf("drop role %q", db.Role), "DROP ROLE IF EXISTS "+ident(db.Role)); err != nil {
			return err
		}
	}
	return nil
}

func serverVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var s string
	if err := conn.QueryRow(ctx, "SHOW server_version_num").Scan(&s); err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

// Ping implements Provisioner.
func (c *Client) Ping(ctx context.Context, a Admin) error {
	cfg, _, err := c.parseAdmin(a)
	if err != nil {
		return err
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	conn, err := connect(ctx, cfg, "to the database")
	if err != nil {
		return err
	}
	defer closeConn(conn)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return classify("query the database", err)
	}
	return nil
}

// Probe implements Provisioner.
func (c *Client) Probe(ctx context.Context, a Admin) (BackendInfo, error) {
	var info BackendInfo
	cfg, _, err := c.parseAdmin(a)
	if err != nil {
		return info, err
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	conn, err := connect(ctx, cfg, "as admin")
	if err != nil {
		return info, err
	}
	defer closeConn(conn)
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&info.Version); err != nil {
		return info, classify("read the server version", err)
	}
	return info, nil
}
