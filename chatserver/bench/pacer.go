package bench

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
)

// Pacer spreads sends evenly at a fixed rate. It is an open-loop schedule:
// the n-th send is due at start + n/rate whatever happened to earlier sends,
// so a slow server does not slow the offered load down (no coordinated
// omission); sends that fell behind are released together on the next call.
type Pacer struct {
	rate  float64 // sends per second
	start time.Time
	sent  int64
	// MaxBurst caps how many overdue sends one Due call releases (0: no cap);
	// the rest stay due for later calls.
	MaxBurst int64
}

// NewPacer returns a pacer at rate sends per second starting at start.
func NewPacer(rate float64, start time.Time) *Pacer {
	return &Pacer{rate: rate, start: start}
}

// Due returns how many sends are due at now and counts them as sent.
func (p *Pacer) Due(now time.Time) int64 {
	if p.rate <= 0 || now.Before(p.start) {
		return 0
	}
	total := int64(now.Sub(p.start).Seconds() * p.rate)
	n := total - p.sent
	if n <= 0 {
		return 0
	}
	if p.MaxBurst > 0 && n > p.MaxBurst {
		n = p.MaxBurst
	}
	p.sent += n
	return n
}

// Next returns when the next send is due.
func (p *Pacer) Next() time.Time {
	if p.rate <= 0 {
		return p.start.Add(24 * time.Hour)
	}
	return p.start.Add(time.Duration(float64(p.sent+1) / p.rate * float64(time.Second)))
}

// Sent is how many sends Due has released.
func (p *Pacer) Sent() int64 { return p.sent }

// minPayload is the size of a payload with an empty pad: {"t":<19 digits>,"x":""}.
const minPayload = len(`{"t":1234567890123456789,"x":""}`)

// EncodePayload writes a JSON payload of exactly size bytes (at least
// minPayload) carrying the send time in Unix nanoseconds.
func EncodePayload(buf []byte, sent time.Time, size int) []byte {
	buf = buf[:0]
	buf = append(buf, `{"t":`...)
	buf = strconv.AppendInt(buf, sent.UnixNano(), 10)
	buf = append(buf, `,"x":"`...)
	for len(buf) < size-2 {
		buf = append(buf, 'x')
	}
	buf = append(buf, `"}`...)
	return buf
}

// DecodeSendTime returns the send time carried by a payload.
func DecodeSendTime(data []byte) (time.Time, error) {
	i := bytes.Index(data, []byte(`"t":`))
	if i < 0 {
		return time.Time{}, fmt.Errorf("payload without send time")
	}
	j := i + 4
	k := j
	for k < len(data) && data[k] >= '0' && data[k] <= '9' {
		k++
	}
	if k == j {
		return time.Time{}, fmt.Errorf("payload send time is not a number")
	}
	if k-j > 19 {
		return time.Time{}, fmt.Errorf("payload send time out of range")
	}
	var ns int64
	for _, c := range data[j:k] {
		ns = ns*10 + int64(c-'0')
	}
	if ns < 0 {
		return time.Time{}, fmt.Errorf("payload send time out of range")
	}
	return time.Unix(0, ns), nil
}
