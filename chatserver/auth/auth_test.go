package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
)

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.Claims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(user string, ttl time.Duration) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl))}
}

func TestHMACRotationAndReload(t *testing.T) {
	dir := t.TempDir()
	current, previous := filepath.Join(dir, "current"), filepath.Join(dir, "previous")
	if err := os.WriteFile(current, []byte("key-two-key-two-key-two-key-two!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(previous, []byte("key-one-key-one-key-one-key-one!"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(config.Auth{HMACSecretFiles: []string{current, previous}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{"key-two-key-two-key-two-key-two!", "key-one-key-one-key-one-key-one!"} {
		c, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodHS256, []byte(key), claims("alice", time.Hour), ""))
		if err != nil || c.Subject != "alice" {
			t.Fatalf("key %q: %v", key, err)
		}
	}
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodHS256, []byte("key-three-key-three-key-three-ke"), claims("alice", time.Hour), "")); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodHS256, []byte("key-two-key-two-key-two-key-two!"), claims("alice", -time.Hour), "")); !errors.Is(err, auth.ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
	// Rotation finishes: the previous key file disappears, a new current key appears.
	time.Sleep(1100 * time.Millisecond)
	if err := os.Remove(previous); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(current, []byte("key-three-key-three-key-three-ke"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodHS256, []byte("key-three-key-three-key-three-ke"), claims("alice", time.Hour), "")); err != nil {
		t.Fatalf("reloaded key: %v", err)
	}
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodHS256, []byte("key-one-key-one-key-one-key-one!"), claims("alice", time.Hour), "")); err == nil {
		t.Fatal("removed key still accepted")
	}
	// A missing current key is a start-up error naming the config key.
	if _, err := auth.NewVerifier(config.Auth{HMACSecretFiles: []string{filepath.Join(dir, "missing")}}); err == nil {
		t.Fatal("missing key file accepted")
	}
}

func TestAlgorithmConfusionAndNone(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "k")
	_ = os.WriteFile(f, []byte("secret-secret-secret-secret-1234"), 0o600)
	v, err := auth.NewVerifier(config.Auth{HMACSecretFiles: []string{f}})
	if err != nil {
		t.Fatal(err)
	}
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("alice", time.Hour), "")
	if _, err := v.VerifyConnection(context.Background(), none); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("alg none: %v", err)
	}
	hs384 := sign(t, jwt.SigningMethodHS384, []byte("secret-secret-secret-secret-1234"), claims("alice", time.Hour), "")
	if _, err := v.VerifyConnection(context.Background(), hs384); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("HS384: %v", err)
	}
	for _, garbage := range []string{"", "x", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..."} {
		if _, err := v.VerifyConnection(context.Background(), garbage); !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("%q: %v", garbage, err)
		}
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestJWKS(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "use": "sig", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(ecKey.X.FillBytes(make([]byte, 32))), "y": b64(ecKey.Y.FillBytes(make([]byte, 32)))},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(doc) }))
	defer srv.Close()
	v, err := auth.NewVerifier(config.Auth{JWKSURL: srv.URL, Audience: "parley"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := claims("alice", time.Hour)
	c.Audience = jwt.ClaimStrings{"parley"}
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodRS256, rsaKey, c, "r1")); err != nil {
		t.Fatalf("RS256: %v", err)
	}
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodES256, ecKey, c, "e1")); err != nil {
		t.Fatalf("ES256: %v", err)
	}
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodES256, ecKey, c, "")); err != nil {
		t.Fatalf("ES256 without kid: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodES256, other, c, "e1")); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("foreign EC key: %v", err)
	}
	noAud := claims("alice", time.Hour)
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodRS256, rsaKey, noAud, "r1")); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("missing audience: %v", err)
	}
	// HS256 is not accepted when only a JWKS is configured.
	if _, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodHS256, []byte("x"), c, "")); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("HS256 without keys: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	cfg := config.Default()
	cfg.Namespaces = []config.Namespace{
		{Name: "room"},
		{Name: "vip", AllowSubscribe: "token"},
		{Name: "pub", AllowAnonymous: true, AllowPublish: config.PublishNone},
	}
	a := auth.NewAuthorizer(cfg)
	alice := auth.Subject{User: "alice", Grants: []string{"vip:1"}}
	anon := auth.Subject{Anonymous: true}
	tests := []struct {
		name string
		err  error
		want *codes.Error
	}{
		{"room open to users", a.CanSubscribe(alice, "room:1", false), nil},
		{"unknown namespace", a.CanSubscribe(alice, "x:1", false), codes.ErrUnknownChannel},
		{"no namespace configured for bare channels", a.CanSubscribe(alice, "lobby", false), codes.ErrUnknownChannel},
		{"vip with grant", a.CanSubscribe(alice, "vip:1", false), nil},
		{"vip without grant", a.CanSubscribe(alice, "vip:2", false), codes.ErrPermissionDenied},
		{"vip with subscription token", a.CanSubscribe(alice, "vip:2", true), nil},
		{"anonymous in room", a.CanSubscribe(anon, "room:1", false), codes.ErrPermissionDenied},
		{"anonymous in pub", a.CanSubscribe(anon, "pub:1", false), nil},
		{"dm member", a.CanSubscribe(alice, "room:#alice,bob", false), nil},
		{"dm outsider", a.CanSubscribe(auth.Subject{User: "eve"}, "room:#alice,bob", false), codes.ErrPermissionDenied},
		{"dm prefix is not membership", a.CanSubscribe(auth.Subject{User: "ali"}, "room:#alice,bob", false), codes.ErrPermissionDenied},
		{"publish subscribed", a.CanPublish(alice, "room:1", true), nil},
		{"publish unsubscribed", a.CanPublish(alice, "room:1", false), codes.ErrPermissionDenied},
		{"publish none", a.CanPublish(alice, "pub:1", true), codes.ErrPermissionDenied},
		{"anonymous publish", a.CanPublish(anon, "room:1", true), codes.ErrPermissionDenied},
		{"presence not enabled", a.CanPresence(alice, "room:1", true), codes.ErrNotAvailable},
	}
	for _, tc := range tests {
		if tc.want == nil && tc.err != nil || tc.want != nil && !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
		}
	}
}

func hmacVerifier(t *testing.T, cfg config.Auth) (*auth.Verifier, []byte) {
	t.Helper()
	key := []byte("key-exp-key-exp-key-exp-key-exp!")
	file := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(file, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.HMACSecretFiles = []string{file}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v, key
}

// A token without exp would never expire: refused unless
// auth.allowTokensWithoutExpiry says otherwise.
func TestTokensWithoutExpiry(t *testing.T) {
	ctx := context.Background()
	noExp := jwt.RegisteredClaims{Subject: "alice"}
	for _, allow := range []bool{false, true} {
		v, key := hmacVerifier(t, config.Auth{AllowTokensWithoutExpiry: allow})
		_, err := v.VerifyConnection(ctx, sign(t, jwt.SigningMethodHS256, key, &auth.ConnectionClaims{RegisteredClaims: noExp}, ""))
		if allow != (err == nil) || (!allow && !errors.Is(err, auth.ErrInvalidToken)) {
			t.Fatalf("connection token without exp, allowTokensWithoutExpiry=%v: %v", allow, err)
		}
		_, err = v.VerifySubscription(ctx, sign(t, jwt.SigningMethodHS256, key, &auth.SubscriptionClaims{RegisteredClaims: noExp, Channel: "room:1"}, ""), "alice", "room:1")
		if allow != (err == nil) {
			t.Fatalf("subscription token without exp, allowTokensWithoutExpiry=%v: %v", allow, err)
		}
	}
}

// A user id becomes part of channel names ("personal:#alice",
// "dm:#alice,bob"): one that could name two users, or none, is refused.
func TestUserIDValidation(t *testing.T) {
	v, key := hmacVerifier(t, config.Auth{})
	for sub, ok := range map[string]bool{
		"alice": true, "alice@example.com": true, "user-42_x.y": true, "Zoë": true,
		"a,b": false, "a#b": false, "a b": false, "tab\tx": false, "nl\n": false, strings.Repeat("a", 129): false,
	} {
		_, err := v.VerifyConnection(context.Background(), sign(t, jwt.SigningMethodHS256, key, &auth.ConnectionClaims{RegisteredClaims: claims(sub, time.Hour)}, ""))
		if ok != (err == nil) {
			t.Errorf("sub %q: %v, want ok=%v", sub, err, ok)
		}
		if err != nil && !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("sub %q: %v, want an invalid token", sub, err)
		}
	}
}

// A user-limited channel in a namespace that requires a token still
// requires one: "#" in the name is no way around allowSubscribe: token.
func TestUserLimitedChannelInTokenNamespace(t *testing.T) {
	cfg := config.Default()
	cfg.Namespaces = append(cfg.Namespaces, config.Namespace{Name: "secret", AllowSubscribe: "token"})
	a := auth.NewAuthorizer(cfg)
	alice := auth.Subject{User: "alice"}
	if err := a.CanSubscribe(alice, "secret:#alice", false); !errors.Is(err, codes.ErrPermissionDenied) {
		t.Fatalf("secret:#alice without a token: %v, want permission denied", err)
	}
	if err := a.CanSubscribe(alice, "secret:#alice", true); err != nil {
		t.Fatalf("with a subscription token: %v", err)
	}
	granted := auth.Subject{User: "alice", Grants: []string{"secret:*"}}
	if err := a.CanSubscribe(granted, "secret:#alice", false); err != nil {
		t.Fatalf("with a grant: %v", err)
	}
	if err := a.CanSubscribe(auth.Subject{User: "bob", Grants: []string{"secret:*"}}, "secret:#alice", false); !errors.Is(err, codes.ErrPermissionDenied) {
		t.Fatalf("bob with a grant on alice's channel: %v", err)
	}
}

// The identity provider going down (a JWKS endpoint that hangs) must not
// make verifications queue behind one another: each honours its own
// context, keys already fetched keep verifying, and a new key (rotation) is
// picked up when the endpoint serves it.
func TestJWKSOutageDoesNotQueueConnects(t *testing.T) {
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk := func(kid string, k *ecdsa.PrivateKey) map[string]string {
		return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(k.X.FillBytes(make([]byte, 32))), "y": b64(k.Y.FillBytes(make([]byte, 32)))}
	}
	var (
		mu    sync.Mutex
		keys  = []map[string]string{jwk("old", oldKey)}
		down  bool
		gone  = make(chan struct{})
		calls int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		hang, doc := down, map[string]any{"keys": keys}
		mu.Unlock()
		if hang {
			select { // an identity provider that accepts and never answers
			case <-r.Context().Done():
			case <-gone:
			}
			return
		}
		_ = json.NewEncoder(w).Encode(doc)
	}))
	defer srv.Close()
	defer close(gone)
	v, err := auth.NewVerifier(config.Auth{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := claims("alice", time.Hour)
	if _, err := v.VerifyConnection(context.Background(), sign(t, jwt.SigningMethodES256, oldKey, c, "old")); err != nil {
		t.Fatalf("known key: %v", err)
	}

	// Rotation: a token signed with a key the verifier has not seen yet.
	mu.Lock()
	keys = append(keys, jwk("new", newKey))
	mu.Unlock()
	if _, err := v.VerifyConnection(context.Background(), sign(t, jwt.SigningMethodES256, newKey, c, "new")); err != nil {
		t.Fatalf("rotated key: %v", err)
	}

	mu.Lock()
	down = true
	mu.Unlock()
	forged, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if i%2 == 0 { // unknown kids: each would want a refetch
				_, errs[i] = v.VerifyConnection(ctx, sign(t, jwt.SigningMethodES256, forged, c, fmt.Sprint("forged-", i)))
			} else {
				_, errs[i] = v.VerifyConnection(ctx, sign(t, jwt.SigningMethodES256, oldKey, c, "old"))
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("20 verifications with 300 ms contexts took %s: they queued behind the JWKS fetch", took)
	}
	for i, err := range errs {
		if i%2 == 0 && !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("forged kid %d: %v", i, err)
		}
		if i%2 == 1 && err != nil {
			t.Fatalf("known key while the identity provider is down: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls > 4 {
		t.Fatalf("%d JWKS requests: unknown kids must be rate limited", calls)
	}
}
