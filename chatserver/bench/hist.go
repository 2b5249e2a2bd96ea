package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram buckets: values below 2*subBuckets nanoseconds are exact; above,
// each power of two is split into subBuckets linear buckets, so a recorded
// value is known to within 1/subBuckets (1.6%). Values past maxShift octaves
// (about 18 minutes) land in the last bucket.
const (
	subBuckets = 64
	subBits    = 6 // log2(subBuckets)
	maxShift   = 34
	numBuckets = 2*subBuckets + maxShift*subBuckets
)

// bucketOf returns the bucket index of a non-negative value in nanoseconds.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 2*subBuckets {
		return int(u)
	}
	shift := bits.Len64(u) - subBits - 1 // mantissa keeps subBits+1 bits: [64,128)
	if shift > maxShift {
		return numBuckets - 1
	}
	mant := u >> uint(shift)
	return 2*subBuckets + (shift-1)*subBuckets + int(mant-subBuckets)
}

// bucketRange returns the lowest and highest value a bucket holds.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subBuckets {
		return int64(i), int64(i)
	}
	j := i - 2*subBuckets
	shift := j/subBuckets + 1
	mant := int64(j%subBuckets + subBuckets)
	return mant << uint(shift), (mant+1)<<uint(shift) - 1
}

// Histogram records latencies; Record is safe for concurrent use and lock-free.
// Histograms from several processes merge exactly (same bucket layout).
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
}

// Record adds one value.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Snapshot copies the histogram into its serializable form.
func (h *Histogram) Snapshot() HistSnapshot {
	s := HistSnapshot{Sum: h.sum.Load(), Max: h.max.Load()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			s.Buckets = append(s.Buckets, [2]uint64{uint64(i), c})
			s.Count += c
		}
	}
	return s
}

// Reset zeroes the histogram. Values recorded concurrently with Reset may be
// split between before and after; callers reset between measurement windows.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.sum.Store(0)
	h.max.Store(0)
}

// HistSnapshot is a histogram's JSON form: sparse (bucket, count) pairs.
type HistSnapshot struct {
	Buckets [][2]uint64 `json:"buckets,omitempty"`
	Count   uint64      `json:"count"`
	Sum     int64       `json:"sumNs"`
	Max     int64       `json:"maxNs"`
}

// Merge returns the union of two snapshots.
func (s HistSnapshot) Merge(o HistSnapshot) HistSnapshot {
	counts := map[uint64]uint64{}
	for _, b := range s.Buckets {
		counts[b[0]] += b[1]
	}
	for _, b := range o.Buckets {
		counts[b[0]] += b[1]
	}
	out := HistSnapshot{Count: s.Count + o.Count, Sum: s.Sum + o.Sum, Max: max(s.Max, o.Max)}
	for i := uint64(0); i < numBuckets; i++ {
		if c := counts[i]; c > 0 {
			out.Buckets = append(out.Buckets, [2]uint64{i, c})
		}
	}
	return out
}

// Quantile returns the value at quantile q (0..1): the midpoint of the bucket
// holding the ceil(q*count)-th smallest value, capped at the maximum seen.
// It returns 0 for an empty histogram.
func (s HistSnapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(s.Max)
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for _, b := range s.Buckets {
		seen += b[1]
		if seen >= rank {
			lo, hi := bucketRange(int(b[0]))
			return time.Duration(min(lo+(hi-lo)/2, s.Max))
		}
	}
	return time.Duration(s.Max)
}

// Mean returns the average recorded value.
func (s HistSnapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return time.Duration(s.Sum / int64(s.Count))
}

// Summary is the latency digest a report shows.
type Summary struct {
	Count  uint64  `json:"count"`
	MeanMs float64 `json:"meanMs"`
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
	P999Ms float64 `json:"p999Ms"`
	MaxMs  float64 `json:"maxMs"`
}

// Summary digests the snapshot.
func (s HistSnapshot) Summary() Summary {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Summary{Count: s.Count, MeanMs: ms(s.Mean()), P50Ms: ms(s.Quantile(0.5)), P99Ms: ms(s.Quantile(0.99)),
		P999Ms: ms(s.Quantile(0.999)), MaxMs: ms(time.Duration(s.Max))}
}
