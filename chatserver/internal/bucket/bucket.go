// Package bucket is a token bucket: a budget that is spent by what a client
// does and recovers at a steady rate, so a client that overdoes it for a
// while is refused for a while, never banished for good.
package bucket

import (
	"sync"
	"time"
)

// Bucket holds up to burst tokens and gains rate tokens a second. A rate of
// zero or less disables it (every Take succeeds). Safe for concurrent use.
type Bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

// New returns a full bucket.
func New(rate, burst float64) *Bucket {
	if burst < 1 {
		burst = 1
	}
	return &Bucket{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

func (b *Bucket) refillLocked(now time.Time) {
	b.tokens += now.Sub(b.last).Seconds() * b.rate
	if b.tokens > b.burst {
		b.tokens = b.burst
	}
	b.last = now
}

// Take spends cost tokens and reports whether there were enough; nothing is
// spent when there were not.
func (b *Bucket) Take(cost float64) bool {
	if b == nil || b.rate <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(time.Now())
	if b.tokens < cost {
		return false
	}
	b.tokens -= cost
	return true
}

// Refund gives back tokens a Take spent (a command another budget refused).
func (b *Bucket) Refund(cost float64) {
	if b == nil || b.rate <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.tokens+cost, b.burst)
}

// UntilFull is how long until the bucket is full again (0 when it is, or
// when it is disabled).
func (b *Bucket) UntilFull() time.Duration {
	if b == nil || b.rate <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(time.Now())
	return time.Duration((b.burst - b.tokens) / b.rate * float64(time.Second))
}
