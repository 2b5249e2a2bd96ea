package postgres

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Credentials are what a chat server needs to reach its database; the
// controller writes them to the Secret "<name>-db".
type Credentials struct {
	Host     string
	Port     uint16
	Database string
	Username string
	Password string
	// SSLMode is carried over from the admin URI ("" when it named none), or
	// "verify-full" when the admin connection was given a CA.
	SSLMode string
	// SSLRootCert, when set, is the path of the CA file where the chat
	// servers find it (rendered as sslrootcert=). Ensure leaves it empty: the
	// caller knows where the pod mounts the CA.
	SSLRootCert string
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
	if c.SSLRootCert != "" {
		q.Set("sslrootcert", c.SSLRootCert)
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
