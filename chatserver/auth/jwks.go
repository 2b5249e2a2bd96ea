package auth

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// JWKS timings. Keys are refreshed in the background, never on a connect's
// path; a token naming a kid the verifier has not seen (a key rotation)
// triggers one refresh at most every JWKSUnknownKIDInterval, so forged kids
// cannot make the server hammer the identity provider, and waits at most
// jwksRateLimitWait for its turn (bounded by the connect's context too).
const (
	JWKSRefreshInterval    = 5 * time.Minute
	JWKSUnknownKIDInterval = 10 * time.Second
	jwksHTTPTimeout        = 5 * time.Second
	jwksRateLimitWait      = time.Second
)

// jwks holds the public keys of a JWKS URL (RFC 7517) through
// MicahParks/keyfunc and jwkset: no lock is held across an HTTP call, so an
// identity provider that is down or slow delays no connect beyond its own
// context, and keys already fetched keep verifying.
type jwks struct {
	kf   keyfunc.Keyfunc
	stop context.CancelFunc
}

func newJWKS(url string) (*jwks, error) {
	ctx, stop := context.WithCancel(context.Background())
	remote, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
		HTTPTimeout:       jwksHTTPTimeout,
		RefreshInterval:   JWKSRefreshInterval,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(JWKSUnknownKIDInterval), 1),
		RateLimitWaitMax:  jwksRateLimitWait,
		// The first fetch may fail (the identity provider down at start):
		// the background refresh keeps trying.
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				slog.Default().WarnContext(ctx, "refresh JWKS", "error", err) // the URL may hold a secret: not logged
			}
		},
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("jwks: %w", err)
	}
	// Keys published for encryption never verify a signature.
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: remote.Storage(), UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	if err != nil {
		stop()
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return &jwks{kf: kf, stop: stop}, nil
}

// keys returns the key (or, without a kid, the keys) to verify t with.
func (j *jwks) keys(ctx context.Context, t *jwt.Token) (any, error) {
	return j.kf.KeyfuncCtx(ctx)(t)
}

// close ends the background refresh.
func (j *jwks) close() { j.stop() }
