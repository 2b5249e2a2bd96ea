// Package keys generates and rotates the secrets a ChatCluster's chat servers
// verify: the HMAC key of connection tokens (JWT) and the server HTTP API key.
// Everything here is a pure function of its inputs (the clock and the random
// source are parameters), so rotation is tested without a cluster or a wait.
//
// Rotation: a new value of the request annotation on the ChatCluster makes
// the current key the previous one and generates a new current key; the chat
// servers accept both until the overlap has passed, then the previous key is
// dropped. Tokens signed with the old key keep working for the overlap.
package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/parley-chat/parley/internal/naming"
)

// KeyBytes is the entropy of a generated key: 256 bits, the HS256 hash size
// (RFC 7518 §3.2 asks for a key at least that long).
const KeyBytes = 32

// MinKeyBytes is the shortest key accepted from a user.
const MinKeyBytes = 32

// DefaultOverlap is how long a previous key stays valid after a rotation when
// the ChatCluster does not say.
const DefaultOverlap = 24 * time.Hour

// Annotations on the ChatCluster that request a rotation: every new value
// (a timestamp, a ticket number) rotates once.
const (
	RotateJWTKeyAnnotation = "chat.parley.io/rotate-jwt-key"
	RotateAPIKeyAnnotation = "chat.parley.io/rotate-api-key"
)

// Annotations on a key Secret that record the rotation state.
const (
	// RotatedAtAnnotation is when the current key replaced the previous one (RFC 3339).
	RotatedAtAnnotation = "chat.parley.io/rotated-at"
	// RotationRequestAnnotation is the last rotation request honoured.
	RotationRequestAnnotation = "chat.parley.io/rotation-request"
)

// Generate returns a new random key: KeyBytes from crypto/rand, URL-safe
// base64 without padding (43 characters, no whitespace, so the chat server's
// trimming of mounted files never changes it).
func Generate() (string, error) {
	b := make([]byte, KeyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Validate checks a key a user supplied.
func Validate(key string) error {
	trimmed := bytes.TrimSpace([]byte(key))
	if len(trimmed) < MinKeyBytes {
		return fmt.Errorf("key is %d bytes; at least %d are needed", len(trimmed), MinKeyBytes)
	}
	return nil
}

// Ring is the state of one rotated key, as stored in its Secret.
type Ring struct {
	Current  string
	Previous string
	// RotatedAt is when Current replaced Previous; zero when there is no
	// rotation in progress.
	RotatedAt time.Time
	// Request is the last rotation request honoured.
	Request string
}

// Plan is what Reconcile decided.
type Plan struct {
	Ring Ring
	// Generated: there was no current key and one was generated (or the
	// user's was copied).
	Generated bool
	// Rotated: a new request made the current key the previous one.
	Rotated bool
	// Dropped: the previous key's overlap ended and it was removed.
	Dropped bool
	// RequeueAfter is when to look again to drop the previous key (0: nothing pending).
	RequeueAfter time.Duration
}

// Changed reports whether the Secret must be written.
func (p Plan) Changed(before Ring) bool { return !p.Ring.Equal(before) }

// Equal compares two rings (times with time.Time.Equal).
func (r Ring) Equal(o Ring) bool {
	return r.Current == o.Current && r.Previous == o.Previous && r.Request == o.Request && r.RotatedAt.Equal(o.RotatedAt)
}

// Reconcile returns the ring r should become at now, given the latest
// rotation request ("" for none) and the overlap during which a previous key
// stays valid. gen makes new keys (Generate in production).
//
// A request seen while a previous key is still in its overlap rotates again:
// the key two generations old is dropped at once, as it would have been by a
// rotation without overlap.
func Reconcile(r Ring, request string, now time.Time, overlap time.Duration, gen func() (string, error)) (Plan, error) {
	return reconcile(r, request, now, overlap, gen, "")
}

func reconcile(r Ring, request string, now time.Time, overlap time.Duration, gen func() (string, error), supplied string) (Plan, error) {
	if overlap < 0 {
		return Plan{Ring: r}, fmt.Errorf("overlap %s is negative", overlap)
	}
	// Rotation times are stored with second precision (RFC 3339).
	now = now.UTC().Truncate(time.Second)
	p := Plan{Ring: r}
	switch {
	case supplied != "" && r.Current == "":
		p.Ring = Ring{Current: supplied, Previous: r.Previous, RotatedAt: r.RotatedAt, Request: r.Request}
		p.Generated = true
	case supplied != "" && supplied != r.Current:
		p.Ring = Ring{Current: supplied, Previous: r.Current, RotatedAt: now, Request: r.Request}
		p.Rotated = true
	case supplied != "":
		// Unchanged user key: only the overlap below may change something.
	case r.Current == "":
		k, err := gen()
		if err != nil {
			return Plan{Ring: r}, err
		}
		// A first key answers any pending request: there is nothing to rotate.
		p.Ring = Ring{Current: k, Previous: r.Previous, RotatedAt: r.RotatedAt, Request: orElse(request, r.Request)}
		p.Generated = true
	case request != "" && request != r.Request:
		k, err := gen()
		if err != nil {
			return Plan{Ring: r}, err
		}
		p.Ring = Ring{Current: k, Previous: r.Current, RotatedAt: now, Request: request}
		p.Rotated = true
	}
	if p.Ring.Previous == "" {
		p.Ring.RotatedAt = time.Time{}
		return p, nil
	}
	if p.Ring.RotatedAt.IsZero() || p.Ring.RotatedAt.After(now) {
		// A previous key with no (or a future) rotation time, e.g. written
		// by hand: its overlap starts now.
		p.Ring.RotatedAt = now
	}
	if expires := p.Ring.RotatedAt.Add(overlap); !now.Before(expires) {
		p.Ring.Previous, p.Ring.RotatedAt = "", time.Time{}
		p.Dropped = true
	} else {
		p.RequeueAfter = expires.Sub(now)
	}
	return p, nil
}

// ReconcileSupplied is Reconcile for a key the user supplies in their own
// Secret: the operator copies it, never generates or rotates it, but a change
// of the user's key is a rotation, so tokens signed with the replaced key stay
// valid for the overlap too. Rotation requests do not apply (the user rotates
// by changing their Secret).
func ReconcileSupplied(r Ring, supplied string, now time.Time, overlap time.Duration) (Plan, error) {
	if err := Validate(supplied); err != nil {
		return Plan{Ring: r}, err
	}
	return reconcile(r, "", now, overlap, nil, supplied)
}

func orElse(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// APIKeyPreviousKey holds the API key replaced by the last rotation, during the overlap.
const APIKeyPreviousKey = naming.APIKeyKey + "-previous"

// Layout says which Secret keys hold a ring's current and previous values.
type Layout struct {
	CurrentKey  string
	PreviousKey string
}

// The two key Secrets the operator manages.
var (
	// JWT is Secret "<name>-jwt": keys "current" and "previous", the files the
	// chat server's auth.hmacSecretFiles name.
	JWT = Layout{CurrentKey: naming.JWTCurrentKey, PreviousKey: naming.JWTPreviousKey}
	// APIKey is Secret "<name>-api-key": keys "api-key" and "api-key-previous".
	APIKey = Layout{CurrentKey: naming.APIKeyKey, PreviousKey: APIKeyPreviousKey}
)

// Read returns the ring stored in a Secret's data and annotations. An
// unparsable rotation time counts as none (the overlap restarts).
func (l Layout) Read(data map[string][]byte, annotations map[string]string) Ring {
	r := Ring{
		Current:  string(data[l.CurrentKey]),
		Previous: string(data[l.PreviousKey]),
		Request:  annotations[RotationRequestAnnotation],
	}
	if t, err := time.Parse(time.RFC3339, annotations[RotatedAtAnnotation]); err == nil {
		r.RotatedAt = t
	}
	return r
}

// Write stores r in a Secret's data and annotations (both non-nil), removing
// what r no longer has. The previous key is written empty rather than removed,
// so a mounted file stays in place and the chat server sees "no previous key".
func (l Layout) Write(r Ring, data map[string][]byte, annotations map[string]string) {
	data[l.CurrentKey] = []byte(r.Current)
	data[l.PreviousKey] = []byte(r.Previous)
	if r.RotatedAt.IsZero() {
		delete(annotations, RotatedAtAnnotation)
	} else {
		annotations[RotatedAtAnnotation] = r.RotatedAt.UTC().Format(time.RFC3339)
	}
	if r.Request == "" {
		delete(annotations, RotationRequestAnnotation)
	} else {
		annotations[RotationRequestAnnotation] = r.Request
	}
}
