package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwks fetches and caches public keys from a JWKS URL (RFC 7517). Keys are
// refetched when the cache is older than maxAge, or when a token names an
// unknown kid (at most once per minRefetch, so forged kids cannot make us
// hammer the identity provider).
type jwks struct {
	url        string
	client     *http.Client
	maxAge     time.Duration
	minRefetch time.Duration

	mu      sync.Mutex
	fetched time.Time
	byKID   map[string]any
	all     []any
}

func newJWKS(url string) *jwks {
	return &jwks{url: url, client: &http.Client{Timeout: 5 * time.Second}, maxAge: 5 * time.Minute, minRefetch: 10 * time.Second}
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func (j *jwks) keys(ctx context.Context, kid, alg string) (any, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := time.Now()
	stale := now.Sub(j.fetched) > j.maxAge
	_, known := j.byKID[kid]
	if stale || (kid != "" && !known && now.Sub(j.fetched) > j.minRefetch) {
		if err := j.fetch(ctx); err != nil && j.byKID == nil {
			return nil, err
		}
		j.fetched = now
	}
	want := func(k any) bool {
		switch k.(type) {
		case *rsa.PublicKey:
			return alg == "RS256"
		case *ecdsa.PublicKey:
			return alg == "ES256"
		}
		return false
	}
	if kid != "" {
		k, ok := j.byKID[kid]
		if !ok || !want(k) {
			return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
		}
		return k, nil
	}
	var set jwt.VerificationKeySet
	for _, k := range j.all {
		if want(k) {
			set.Keys = append(set.Keys, k)
		}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("no %s keys in JWKS", alg)
	}
	return set, nil
}

func (j *jwks) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return fmt.Errorf("jwks request: %w", err)
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch jwks: status %d", resp.StatusCode)
	}
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return fmt.Errorf("decode jwks: %w", err)
	}
	byKID := map[string]any{}
	var all []any
	for _, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			continue // one bad key must not disable the others
		}
		all = append(all, pub)
		if k.Kid != "" {
			byKID[k.Kid] = pub
		}
	}
	j.byKID, j.all = byKID, all
	return nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	return new(big.Int).SetBytes(b), nil
}

func (k jwk) publicKey() (any, error) {
	switch k.Kty {
	case "RSA":
		n, err := b64int(k.N)
		if err != nil {
			return nil, fmt.Errorf("rsa n: %w", err)
		}
		e, err := b64int(k.E)
		if err != nil || !e.IsInt64() || e.Int64() > 1<<31 {
			return nil, errors.New("rsa e invalid")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		x, err := b64int(k.X)
		if err != nil {
			return nil, err
		}
		y, err := b64int(k.Y)
		if err != nil {
			return nil, err
		}
		pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
		if !pub.Curve.IsOnCurve(x, y) { //nolint:staticcheck // validating untrusted input
			return nil, errors.New("point not on curve")
		}
		return pub, nil
	}
	return nil, fmt.Errorf("unsupported kty %q", k.Kty)
}
