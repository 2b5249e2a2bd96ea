package session

import (
	"sync"
	"time"
)

// rateLimiter is a token bucket: perSecond tokens a second, bursts of up to
// perSecond. Zero disables it.
type rateLimiter struct {
	mu        sync.Mutex
	perSecond float64
	tokens    float64
	last      time.Time
}

func newRateLimiter(perSecond int) rateLimiter {
	return rateLimiter{perSecond: float64(perSecond), tokens: float64(perSecond), last: time.Now()}
}

func (r *rateLimiter) allow() bool {
	if r.perSecond <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.tokens += now.Sub(r.last).Seconds() * r.perSecond
	if r.tokens > r.perSecond {
		r.tokens = r.perSecond
	}
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
