package postgres

import (
	"errors"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/provision"
)

// Admin is how the operator reaches one PostgreSQL server as its admin.
type Admin struct {
	// URI is a PostgreSQL URI (URL or key=value form). It may hold a
	// password: it never appears in errors.
	URI string
	// CAPEM, when set, is the only CA trusted: the connection uses TLS and
	// verifies the server's certificate and host name (verify-full),
	// whatever sslmode the URI names, with no plain-text fallback. The chat
	// servers' credentials then say sslmode=verify-full too.
	CAPEM []byte
}

// parseAdmin parses a.URI (the admin's, or a user's database) without ever
// echoing it, since it holds a password, and applies a.CAPEM. It returns the
// sslmode the chat servers should use.
func parseAdmin(a Admin) (*pgx.ConnConfig, string, error) {
	cfg, err := pgx.ParseConfig(a.URI)
	if err != nil {
		return nil, "", &Error{Reason: ReasonInvalidURI, Op: "parse PostgreSQL URI",
			Err: errors.New("cannot parse the PostgreSQL URI (want postgres://user:password@host:5432/postgres?sslmode=require, reserved characters percent-encoded)")}
	}
	if len(a.CAPEM) == 0 {
		return cfg, sslModeOf(a.URI), nil
	}
	if strings.HasPrefix(cfg.Host, "/") {
		return nil, "", &Error{Reason: ReasonTLS, Op: "configure TLS",
			Err: errors.New("the URI names a Unix socket; TLS with a CA needs a host name or address")}
	}
	tlsConfig, err := provision.TLSConfig(a.CAPEM, cfg.Host)
	if err != nil {
		return nil, "", &Error{Reason: ReasonTLS, Op: "load the database CA", Err: err}
	}
	cfg.TLSConfig = tlsConfig
	// sslmode=prefer or allow parse into a plain-text fallback: never with a CA.
	cfg.Fallbacks = nil
	return cfg, "verify-full", nil
}

// sslModeOf returns the sslmode the admin URI asks for, to give the chat
// servers the same.
func sslModeOf(uri string) string {
	if strings.HasPrefix(uri, "postgres://") || strings.HasPrefix(uri, "postgresql://") {
		if u, err := url.Parse(uri); err == nil {
			return u.Query().Get("sslmode")
		}
		return ""
	}
	for _, f := range strings.Fields(uri) {
		if v, ok := strings.CutPrefix(f, "sslmode="); ok {
			return strings.Trim(v, "'")
		}
	}
	return ""
}
