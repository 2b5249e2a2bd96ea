package amqp

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"hash"
)

// saltBytes is the salt RabbitMQ's internal backend puts before the digest
// in password_hash (base64(salt ++ H(salt ++ password))).
const saltBytes = 4

// passwordMatches reports whether a stored password hash is that of
// password, so an unchanged password is not rewritten at every check. An
// algorithm it does not know (md5 from old definitions) reads as a
// mismatch: the password is then set again, with the server's algorithm.
func passwordMatches(stored, algorithm, password string) bool {
	var h hash.Hash
	switch algorithm {
	case "rabbit_password_hashing_sha256", "":
		h = sha256.New()
	case "rabbit_password_hashing_sha512":
		h = sha512.New()
	default:
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(stored)
	if err != nil || len(raw) != saltBytes+h.Size() {
		return false
	}
	h.Write(raw[:saltBytes])
	h.Write([]byte(password))
	return subtle.ConstantTimeCompare(h.Sum(nil), raw[saltBytes:]) == 1
}
