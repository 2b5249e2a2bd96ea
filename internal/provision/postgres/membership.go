package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// membership is the admin's membership in one tenant role during one call.
//
// PostgreSQL lets only a member of a role (or a superuser) create a database
// owned by it, change or drop that database and end the role's sessions. A
// membership left in place would let anyone holding the admin credentials
// SET ROLE into every tenant, so a non-superuser admin is granted the role
// for the step that needs it (borrow) and it is revoked when the call ends,
// whether the step worked or not (release, deferred). A membership an
// earlier operator version left for good is revoked the same way.
//
// On PostgreSQL 16 and later a CREATEROLE admin also holds the ADMIN OPTION
// membership the server gives the creator of a role (INHERIT FALSE, SET
// FALSE): it is what lets the admin alter and drop the role, gives no access
// to the role's objects, and is left alone.
type membership struct {
	conn    *pgx.Conn
	cfg     *pgx.ConnConfig // to revoke on a fresh connection when conn died
	role    string
	super   bool
	version int // server_version_num
}

func newMembership(ctx context.Context, conn *pgx.Conn, cfg *pgx.ConnConfig, role string) (*membership, error) {
	m := &membership{conn: conn, cfg: cfg, role: role}
	if err := conn.QueryRow(ctx,
		"SELECT r.rolsuper, current_setting('server_version_num')::int FROM pg_roles r WHERE r.rolname = current_user").
		Scan(&m.super, &m.version); err != nil {
		return nil, classify("check the admin's rights", err)
	}
	return m, nil
}

// borrow makes a non-superuser admin a member of the role until release.
func (m *membership) borrow(ctx context.Context) error {
	if m.super {
		return nil
	}
	return exec(ctx, m.conn, fmt.Sprintf("grant role %q to the admin for this step", m.role),
		"GRANT "+ident(m.role)+" TO CURRENT_USER")
}

// releaseTimeout bounds the revoke, which runs even when the call's context
// has ended (a timed-out step must not leave the membership behind).
const releaseTimeout = 10 * time.Second

// release revokes any membership of the admin in the role that gives access
// to it (see membership). Missing role: nothing to do.
func (m *membership) release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	conn := m.conn
	if conn.IsClosed() {
		c, err := connect(ctx, m.cfg.Copy(), "as admin to revoke the step's membership")
		if err != nil {
			return err
		}
		defer closeConn(c)
		conn = c
	}
	member, err := m.isMember(ctx, conn)
	if err != nil || !member {
		return err
	}
	return exec(ctx, conn, fmt.Sprintf("revoke role %q from the admin", m.role),
		"REVOKE "+ident(m.role)+" FROM CURRENT_USER")
}

// isMember reports a direct membership of the admin in the role that lets
// it use the role's rights or SET ROLE to it.
func (m *membership) isMember(ctx context.Context, conn *pgx.Conn) (bool, error) {
	access := ""
	if m.version >= 160000 {
		access = " AND (a.inherit_option OR a.set_option)"
	}
	var member bool
	err := conn.QueryRow(ctx, `
		SELECT EXISTS (
			SELECT 1 FROM pg_auth_members a
			JOIN pg_roles r ON r.oid = a.roleid
			JOIN pg_roles u ON u.oid = a.member
			WHERE r.rolname = $1 AND u.rolname = current_user`+access+`)`, m.role).Scan(&member)
	if err != nil {
		return false, classify(fmt.Sprintf("check the admin's membership in role %q", m.role), err)
	}
	return member, nil
}
