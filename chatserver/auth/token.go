// Package auth verifies connection and subscription tokens (JWT: HS256 with
// keys from files and a previous key during rotation, RS256/ES256 through a
// JWKS URL) and decides who may do what in which channel (per-namespace rules,
// channel grants, user-limited channels such as "dm:#alice,bob").
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-chat/parley/chatserver/config"
)

// ErrTokenExpired means the token was valid but its exp has passed; clients
// refresh it and retry.
var ErrTokenExpired = errors.New("token expired")

// ErrInvalidToken means the token cannot be trusted (bad signature, wrong
// audience or issuer, malformed). Its wrapped cause is for logs; the token
// itself is never included.
var ErrInvalidToken = errors.New("invalid token")

// ConnectionClaims are the claims of a connection token.
type ConnectionClaims struct {
	jwt.RegisteredClaims
	// Info is attached to the connection and shown in presence, join/leave and publications.
	Info json.RawMessage `json:"info,omitempty"`
	// Channels are grants: channels ("room:42") or whole namespaces ("room:*")
	// this user may subscribe to even where the namespace requires a token.
	Channels []string `json:"channels,omitempty"`
	// Channel must be empty: a subscription token is not a connection token.
	Channel string `json:"channel,omitempty"`
	// Name and Picture (OpenID Connect's claims) are kept as the user's
	// profile, shown to others in member lists and profile lookups.
	Name    string `json:"name,omitempty"`
	Picture string `json:"picture,omitempty"`
}

// SubscriptionClaims are the claims of a subscription token: sub must be the
// connection's user and channel the channel subscribed to.
type SubscriptionClaims struct {
	jwt.RegisteredClaims
	Channel string          `json:"channel"`
	Info    json.RawMessage `json:"info,omitempty"`
}

// Verifier checks token signatures and standard claims.
type Verifier struct {
	hmac     *fileKeys
	jwks     *jwks
	audience string
	issuer   string
	now      func() time.Time
	// allowNoExpiry is auth.allowTokensWithoutExpiry.
	allowNoExpiry bool
}

// Option customises a Verifier.
type Option func(*Verifier)

// WithClock makes the verifier use now instead of time.Now (tests).
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// NewVerifier builds a verifier from the auth config. The first HMAC key file
// must exist and be non-empty; later files (previous keys) may be missing.
func NewVerifier(cfg config.Auth, opts ...Option) (*Verifier, error) {
	v := &Verifier{audience: cfg.Audience, issuer: cfg.Issuer, now: time.Now, allowNoExpiry: cfg.AllowTokensWithoutExpiry}
	for _, o := range opts {
		o(v)
	}
	if len(cfg.HMACSecretFiles) > 0 {
		k, err := newFileKeys(cfg.HMACSecretFiles)
		if err != nil {
			return nil, fmt.Errorf("auth.hmacSecretFiles: %w", err)
		}
		v.hmac = k
	}
	if cfg.JWKSURL != "" {
		j, err := newJWKS(cfg.JWKSURL)
		if err != nil {
			return nil, fmt.Errorf("auth.jwksURL: %w", err)
		}
		v.jwks = j
	}
	return v, nil
}

// Close stops the verifier's background work (the JWKS refresh).
func (v *Verifier) Close() {
	if v != nil && v.jwks != nil {
		v.jwks.close()
	}
}

// Enabled reports whether any token can be verified at all.
func (v *Verifier) Enabled() bool { return v != nil && (v.hmac != nil || v.jwks != nil) }

func (v *Verifier) parse(ctx context.Context, token string, claims jwt.Claims) error {
	if !v.Enabled() {
		return fmt.Errorf("%w: no verification keys configured", ErrInvalidToken)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"HS256", "RS256", "ES256"}),
		jwt.WithTimeFunc(v.now),
		jwt.WithLeeway(2 * time.Second),
	}
	if !v.allowNoExpiry {
		// A token without exp would be good forever.
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if v.audience != "" {
		opts = append(opts, jwt.WithAudience(v.audience))
	}
	if v.issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.issuer))
	}
	_, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		switch t.Method.Alg() {
		case "HS256":
			if v.hmac == nil {
				return nil, errors.New("HS256 tokens not accepted")
			}
			return v.hmac.keySet()
		default:
			if v.jwks == nil {
				return nil, fmt.Errorf("%s tokens not accepted without a JWKS URL", t.Method.Alg())
			}
			return v.jwks.keys(ctx, t)
		}
	}, opts...)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	default:
		return fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
}

// VerifyConnection checks a connection token.
func (v *Verifier) VerifyConnection(ctx context.Context, token string) (*ConnectionClaims, error) {
	var c ConnectionClaims
	if err := v.parse(ctx, token, &c); err != nil {
		return nil, err
	}
	if c.Channel != "" {
		return nil, fmt.Errorf("%w: subscription token used to connect", ErrInvalidToken)
	}
	if len(c.Info) > 0 && !json.Valid(c.Info) {
		return nil, fmt.Errorf("%w: info claim is not JSON", ErrInvalidToken)
	}
	if err := ValidateUserID(c.Subject); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return &c, nil
}

// MaxUserIDLength bounds a user id, so the channels named after it
// ("personal:#<user>", "dm:#<user>,<user>") stay within MaxChannelLength.
const MaxUserIDLength = 128

// ValidateUserID checks a token's sub. User ids become part of channel
// names, where "," separates users and "#" starts the user list: a sub of
// "a,b" would get a personal channel users a and b may both open.
func ValidateUserID(user string) error {
	if len(user) > MaxUserIDLength {
		return fmt.Errorf("sub claim: longer than %d bytes", MaxUserIDLength)
	}
	for _, r := range user {
		if r == ',' || r == '#' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("sub claim: must not contain %q", r)
		}
	}
	return nil
}

// VerifySubscription checks a subscription token for user and channel.
func (v *Verifier) VerifySubscription(ctx context.Context, token, user, channel string) (*SubscriptionClaims, error) {
	var c SubscriptionClaims
	if err := v.parse(ctx, token, &c); err != nil {
		return nil, err
	}
	if c.Channel != channel {
		return nil, fmt.Errorf("%w: token is for another channel", ErrInvalidToken)
	}
	if c.Subject != user {
		return nil, fmt.Errorf("%w: token is for another user", ErrInvalidToken)
	}
	return &c, nil
}

// ExpiresIn returns how long until exp, and false when the claims carry none.
func ExpiresIn(rc jwt.RegisteredClaims, now time.Time) (time.Duration, bool) {
	if rc.ExpiresAt == nil {
		return 0, false
	}
	return rc.ExpiresAt.Sub(now), true
}
