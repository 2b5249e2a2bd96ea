// Package postgres creates and drops a ChatCluster's PostgreSQL role and
// database with least privilege. It is the operator's only SQL client: every
// identifier goes through pgx.Identifier and every literal through
// quoteLiteral, so no name a user can write becomes SQL. Errors carry a Reason
// the controller turns into the DatabaseReady condition.
package postgres

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxIdentifierBytes is PostgreSQL's identifier limit (NAMEDATALEN-1). Longer
// names are silently truncated by the server, so two long names could meet:
// we shorten them ourselves, with a hash.
const maxIdentifierBytes = 63

// Database names one ChatCluster's role and database, and who owns them.
type Database struct {
	// Name of the database.
	Name string
	// Role is the login role that owns the database.
	Role string
	// Owner identifies the ChatCluster ("<namespace>/<name>"). It is written as
	// the comment of the role and the database, and checked before any change:
	// the operator never adopts, alters or drops a role or database it did not
	// create for this ChatCluster.
	Owner string
}

// DatabaseFor returns the default names for the ChatCluster namespace/name:
// role and database "parley_<namespace>_<name>". Kubernetes names contain no
// "_", so the names of two ChatClusters never meet.
func DatabaseFor(namespace, name string) Database {
	n := Identifier("parley_" + namespace + "_" + name)
	return Database{Name: n, Role: n, Owner: namespace + "/" + name}
}

// Identifier returns s, or, when s is longer than PostgreSQL keeps, a prefix
// of s (cut at a rune boundary) and a hash of all of s.
func Identifier(s string) string {
	if len(s) <= maxIdentifierBytes {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	suffix := "_" + hex.EncodeToString(sum[:6])
	keep := maxIdentifierBytes - len(suffix)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + suffix
}

// Validate refuses names PostgreSQL would mangle or reject.
func (d Database) Validate() error {
	for _, f := range []struct{ what, v string }{{"database name", d.Name}, {"role name", d.Role}} {
		if err := validIdentifier(f.v); err != nil {
			return &Error{Reason: ReasonInvalid, Op: "validate " + f.what, Err: err}
		}
	}
	if d.Owner == "" {
		return &Error{Reason: ReasonInvalid, Op: "validate owner", Err: fmt.Errorf("owner is empty")}
	}
	if strings.ContainsRune(d.Owner, 0) || !utf8.ValidString(d.Owner) {
		return &Error{Reason: ReasonInvalid, Op: "validate owner", Err: fmt.Errorf("owner %q is not valid UTF-8 text", d.Owner)}
	}
	return nil
}

func validIdentifier(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("must not be empty")
	case len(s) > maxIdentifierBytes:
		return fmt.Errorf("%q is %d bytes; PostgreSQL keeps at most %d", s, len(s), maxIdentifierBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("%q is not valid UTF-8", s)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%q contains a NUL byte", s)
	}
	for _, reserved := range []string{"public", "postgres", "template0", "template1"} {
		if strings.EqualFold(s, reserved) {
			return fmt.Errorf("%q is reserved", s)
		}
	}
	if strings.HasPrefix(strings.ToLower(s), "pg_") {
		return fmt.Errorf("%q: names starting with pg_ are reserved", s)
	}
	return nil
}

// marker is the comment that marks a role or database as Parley's.
func (d Database) marker() string {
	return "managed by parley for ChatCluster " + d.Owner
}

// quoteLiteral quotes s as an SQL string literal, whatever the server's
// standard_conforming_strings (the E” form doubles backslashes).
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		return "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}
