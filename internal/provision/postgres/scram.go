package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/secure/precis"
)

// The operator sends PostgreSQL a SCRAM-SHA-256 verifier, never the password
// itself, so the password cannot end up in the server's statement log or in
// pg_stat_activity. This is what psql's \password does.

const (
	scramIterations = 4096 // PostgreSQL's default scram_iterations
	scramSaltBytes  = 16
	maxPasswordLen  = 1024
)

// scramVerifier returns the pg_authid.rolpassword value for password.
func scramVerifier(password string) (string, error) {
	salt := make([]byte, scramSaltBytes)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read random salt: %w", err)
	}
	return scramVerifierWithSalt(password, salt, scramIterations)
}

func scramVerifierWithSalt(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, normalizePassword(password), salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

// scramMatches reports whether verifier (a rolpassword value) was made from
// password. Any other format (md5, NULL) does not match.
func scramMatches(verifier, password string) bool {
	rest, ok := strings.CutPrefix(verifier, "SCRAM-SHA-256$")
	if !ok {
		return false
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return false
	}
	iterStr, saltB64, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return false
	}
	iterations, err := strconv.Atoi(iterStr)
	if err != nil || iterations <= 0 || iterations > 1<<24 {
		return false
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		return false
	}
	want, err := scramVerifierWithSalt(password, salt, iterations)
	if err != nil {
		return false
	}
	wantKeys := want[strings.LastIndexByte(want, '$')+1:]
	return subtle.ConstantTimeCompare([]byte(wantKeys), []byte(keys)) == 1
}

// PasswordMatches reports whether a role's stored password (pg_authid.rolpassword)
// is the SCRAM-SHA-256 verifier of password. Tests use it to prove a password
// was applied where the server trusts every connection.
func PasswordMatches(rolpassword, password string) bool { return scramMatches(rolpassword, password) }

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// normalizePassword applies SASLprep the way pgx (the chat server's client)
// does: PRECIS OpaqueString, and the raw password when that refuses it (as
// PostgreSQL itself does for passwords SASLprep cannot handle).
func normalizePassword(p string) string {
	if n, err := precis.OpaqueString.String(p); err == nil {
		return n
	}
	return p
}

// validPassword refuses passwords no client can send.
func validPassword(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("password is empty")
	case len(p) > maxPasswordLen:
		return fmt.Errorf("password is longer than %d bytes", maxPasswordLen)
	case !utf8.ValidString(p):
		return fmt.Errorf("password is not valid UTF-8")
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("password contains a NUL byte")
	}
	return nil
}

// GeneratePassword returns a random password: 32 bytes from crypto/rand,
// URL-safe base64 (43 characters), so it needs no escaping in a URI.
func GeneratePassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
