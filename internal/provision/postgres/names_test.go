package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestDatabaseForNamesRoleAndDatabaseFromNamespaceAndName(t *testing.T) {
	got := DatabaseFor("chat", "team-chat")
	want := Database{Name: "parley_chat_team-chat", Role: "parley_chat_team-chat", Owner: "chat/team-chat"}
	if got != want {
		t.Fatalf("DatabaseFor = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestDatabaseForNeverCollides(t *testing.T) {
	seen := map[string]string{}
	for _, p := range [][2]string{{"a-b", "c"}, {"a", "b-c"}, {"a", "b.c"}, {"ab", "c"}, {"a", "bc"}} {
		n := DatabaseFor(p[0], p[1]).Name
		if prev, dup := seen[n]; dup {
			t.Fatalf("%v and %s both map to %q", p, prev, n)
		}
		seen[n] = p[0] + "/" + p[1]
	}
}

func TestIdentifierShortensToPostgresLimitUniquely(t *testing.T) {
	long := DatabaseFor(strings.Repeat("n", 63), strings.Repeat("x", 253))
	other := DatabaseFor(strings.Repeat("n", 63), strings.Repeat("x", 252)+"y")
	if len(long.Name) > maxIdentifierBytes {
		t.Fatalf("%q is %d bytes", long.Name, len(long.Name))
	}
	if long.Name == other.Name {
		t.Fatalf("long names that differ at the end collide: %q", long.Name)
	}
	if err := long.Validate(); err != nil {
		t.Fatal(err)
	}
	// Multi-byte letters are never cut in half.
	u := Identifier(strings.Repeat("é", 40))
	if !utf8.ValidString(u) || len(u) > maxIdentifierBytes {
		t.Fatalf("Identifier(é×40) = %q (%d bytes, valid UTF-8 %v)", u, len(u), utf8.ValidString(u))
	}
	if Identifier("short") != "short" {
		t.Error("a short identifier was changed")
	}
}

func TestValidateRefusesNamesPostgresWouldMangle(t *testing.T) {
	ok := Database{Name: `db "quoted"; DROP TABLE x; --`, Role: "rôle'x", Owner: "ns/name"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("quotes and unicode are fine once quoted: %v", err)
	}
	for name, d := range map[string]Database{
		"empty name":      {Name: "", Role: "r", Owner: "o"},
		"empty role":      {Name: "d", Role: "", Owner: "o"},
		"too long":        {Name: strings.Repeat("x", 64), Role: "r", Owner: "o"},
		"NUL":             {Name: "a\x00b", Role: "r", Owner: "o"},
		"invalid UTF-8":   {Name: "a\xffb", Role: "r", Owner: "o"},
		"reserved db":     {Name: "postgres", Role: "r", Owner: "o"},
		"reserved role":   {Name: "d", Role: "Postgres", Owner: "o"},
		"template":        {Name: "template1", Role: "r", Owner: "o"},
		"pg_ prefix":      {Name: "d", Role: "pg_monitor", Owner: "o"},
		"no owner":        {Name: "d", Role: "r", Owner: ""},
		"NUL in owner":    {Name: "d", Role: "r", Owner: "a\x00"},
		"public reserved": {Name: "d", Role: "PUBLIC", Owner: "o"},
	} {
		err := d.Validate()
		if ReasonOf(err) != ReasonInvalid {
			t.Errorf("%s: reason %q, err %v; want %q", name, ReasonOf(err), err, ReasonInvalid)
		}
	}
}

func TestQuoteLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          "'plain'",
		"it's":           "'it''s'",
		`back\slash`:     `E'back\\slash'`,
		`\'; DROP x; --`: `E'\\''; DROP x; --'`,
		"ünïcode":        "'ünïcode'",
	} {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestScramVerifierMatchesOnlyItsPassword(t *testing.T) {
	v, err := scramVerifier("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") {
		t.Fatalf("verifier %q is not in PostgreSQL's format", v)
	}
	if !scramMatches(v, "correct horse") {
		t.Error("verifier does not match its password")
	}
	if scramMatches(v, "correct horsE") {
		t.Error("verifier matches another password")
	}
	v2, _ := scramVerifier("correct horse")
	if v == v2 {
		t.Error("two verifiers share a salt")
	}
	for _, bad := range []string{"", "md5abc", "SCRAM-SHA-256$x:y$z:w", "SCRAM-SHA-256$4096:!!$a:b", "SCRAM-SHA-256$0:AAAA$a:b"} {
		if scramMatches(bad, "correct horse") {
			t.Errorf("scramMatches(%q) = true", bad)
		}
	}
}

func TestGeneratePasswordIsRandomAndURLSafe(t *testing.T) {
	a, err := GeneratePassword()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GeneratePassword()
	if a == b || len(a) != 43 {
		t.Fatalf("passwords %q, %q: want two different 43-character strings", a, b)
	}
	if strings.ContainsAny(a, "/+=@:?#% ") {
		t.Fatalf("password %q needs escaping in a URI", a)
	}
	if err := validPassword(a); err != nil {
		t.Fatal(err)
	}
}

func TestValidPasswordRefusesWhatNoClientCanSend(t *testing.T) {
	for name, p := range map[string]string{"empty": "", "NUL": "a\x00b", "invalid UTF-8": "\xff", "too long": strings.Repeat("p", 1025)} {
		if validPassword(p) == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCredentialsURIRoundTripsThroughPgx(t *testing.T) {
	for _, c := range []Credentials{
		{Host: "postgres.db.svc", Port: 5432, Database: "parley_chat_team-chat", Username: "parley_chat_team-chat", Password: "abc", SSLMode: "require"},
		{Host: "127.0.0.1", Port: 5433, Database: `db "q"/?#%&ü`, Username: `rôle'"@:x`, Password: `p@ss:w/rd?#%'"`},
		{Host: "::1", Port: 5432, Database: "d", Username: "u", Password: "p"},
		{Host: "/var/run/postgresql", Port: 5432, Database: "d", Username: "u", Password: "p"},
	} {
		cfg, err := pgx.ParseConfig(c.URI())
		if err != nil {
			t.Errorf("%+v: pgx cannot parse %q: %v", c, c.URI(), err)
			continue
		}
		if cfg.Host != c.Host || cfg.Port != c.Port || cfg.Database != c.Database || cfg.User != c.Username || cfg.Password != c.Password {
			t.Errorf("round trip of %+v gave host=%q port=%d db=%q user=%q password=%q", c, cfg.Host, cfg.Port, cfg.Database, cfg.User, cfg.Password)
		}
		m := c.Map()
		for _, k := range []string{"host", "port", "database", "username", "password", "uri"} {
			if m[k] == "" {
				t.Errorf("Map() lacks %q", k)
			}
		}
	}
}

func TestSSLModeIsCarriedOver(t *testing.T) {
	for uri, want := range map[string]string{
		"postgres://u:p@h:5432/postgres?sslmode=verify-full": "verify-full",
		"postgresql://u:p@h/postgres":                        "",
		"host=h user=u password=p sslmode=require":           "require",
	} {
		if got := sslModeOf(uri); got != want {
			t.Errorf("sslModeOf(%q) = %q, want %q", uri, got, want)
		}
	}
}

func TestParseAdminNeverEchoesThePassword(t *testing.T) {
	for _, uri := range []string{"postgres://u:s3cret-pa55@h:notaport/db", "postgres://u:s3cret-pa55@h:5432/db?sslmode=bogus", "host=h password=s3cret-pa55 sslmode=nope"} {
		_, _, err := parseAdmin(Admin{URI: uri})
		if ReasonOf(err) != ReasonInvalidURI {
			t.Errorf("%q: reason %q, err %v", uri, ReasonOf(err), err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestClassify(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want Reason
	}{
		"no such role":       {&pgconn.PgError{Code: "28000"}, ReasonCredentialsRefused},
		"wrong password":     {&pgconn.PgError{Code: "28P01"}, ReasonCredentialsRefused},
		"no CREATEROLE":      {&pgconn.PgError{Code: "42501"}, ReasonPermissionDenied},
		"shutting down":      {&pgconn.PgError{Code: "57P01"}, ReasonUnreachable},
		"starting up":        {&pgconn.PgError{Code: "57P03"}, ReasonUnreachable},
		"too many clients":   {&pgconn.PgError{Code: "53300"}, ReasonUnreachable},
		"connection failure": {&pgconn.PgError{Code: "08006"}, ReasonUnreachable},
		"syntax":             {&pgconn.PgError{Code: "42601"}, ReasonError},
		"refused":            {&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, ReasonUnreachable},
		"dns":                {&net.DNSError{Name: "postgres.db.svc"}, ReasonUnreachable},
		"eof":                {io.EOF, ReasonUnreachable},
		"deadline":           {context.DeadlineExceeded, ReasonUnreachable},
		"anything else":      {errors.New("boom"), ReasonError},
	} {
		err := classify("op", tc.err)
		if got := ReasonOf(err); got != tc.want {
			t.Errorf("%s: reason %q, want %q", name, got, tc.want)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: classified error does not wrap its cause", name)
		}
	}
	if ReasonOf(nil) != "" {
		t.Error("ReasonOf(nil) is not empty")
	}
}
