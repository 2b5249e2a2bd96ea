package postgres

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Credentials are what a chat server needs to reach its database; the
// controller writes them to the Secret "<name>-db".
type Credentials struct {
	Host     string
	Port     uint16
	Database string
	Username string
	Password string
	// SSLMode is carried over from the admin URI ("" when it named none).
	SSLMode string
}

// URI renders the credentials as a postgres:// URL, every part escaped, so a
// database or user name with quotes, spaces or non-ASCII letters survives.
func (c Credentials) URI() string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.UserPassword(c.Username, c.Password),
		Path:   "/" + c.Database,
	}
	q := url.Values{}
	if strings.HasPrefix(c.Host, "/") {
		// A Unix socket directory cannot be the URL's host.
		q.Set("host", c.Host)
		q.Set("port", strconv.Itoa(int(c.Port)))
	} else {
		u.Host = net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
	}
	if c.SSLMode != "" {
		q.Set("sslmode", c.SSLMode)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Map returns the credentials as the keys of the "<name>-db" Secret: host,
// port, database, username, password and uri.
func (c Credentials) Map() map[string]string {
	return map[string]string{
		"host":     c.Host,
		"port":     strconv.Itoa(int(c.Port)),
		"database": c.Database,
		"username": c.Username,
		"password": c.Password,
		"uri":      c.URI(),
	}
}

// parseAdmin parses a PostgreSQL URI (the admin's, or a user's database) (URL or key=value form) without ever
// echoing it, since it holds a password.
func parseAdmin(uri string) (*pgx.ConnConfig, string, error) {
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return nil, "", &Error{Reason: ReasonInvalidURI, Op: "parse PostgreSQL URI",
			Err: errors.New("cannot parse the PostgreSQL URI (want postgres://user:password@host:5432/postgres?sslmode=require, reserved characters percent-encoded)")}
	}
	return cfg, sslModeOf(uri), nil
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
