package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBucketsCoverValuesContiguously(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prevHi = hi
	}
	if got := bucketOf(1 << 62); got != numBuckets-1 {
		t.Fatalf("huge value in bucket %d, want the last (%d)", got, numBuckets-1)
	}
	if got := bucketOf(-5); got != 0 {
		t.Fatalf("negative value in bucket %d, want 0", got)
	}
}

func TestQuantilesMatchExactPercentilesWithinBucketPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var vals []int64
	for i := 0; i < 100000; i++ {
		v := int64(r.ExpFloat64() * float64(2*time.Millisecond))
		vals = append(vals, v)
		h.Record(time.Duration(v))
	}
	slices.Sort(vals)
	s := h.Snapshot()
	if s.Count != uint64(len(vals)) {
		t.Fatalf("count %d, want %d", s.Count, len(vals))
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := int64(s.Quantile(q))
		if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
			t.Errorf("p%v = %d, exact %d (off by %.1f%%)", q*100, got, exact, diff*100)
		}
	}
	if s.Max != vals[len(vals)-1] {
		t.Errorf("max %d, want %d", s.Max, vals[len(vals)-1])
	}
	if s.Quantile(1) != time.Duration(s.Max) {
		t.Errorf("p100 %v, want the max %v", s.Quantile(1), time.Duration(s.Max))
	}
}

func TestMergedSnapshotsEqualOneHistogramOfAllValues(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	m := a.Snapshot().Merge(b.Snapshot())
	w := all.Snapshot()
	if m.Count != w.Count || m.Sum != w.Sum || m.Max != w.Max || !slices.Equal(m.Buckets, w.Buckets) {
		t.Fatalf("merged %+v\nwant %+v", m.Summary(), w.Summary())
	}
	if (HistSnapshot{}).Quantile(0.99) != 0 {
		t.Fatal("empty histogram quantile is not 0")
	}
	a.Reset()
	if a.Snapshot().Count != 0 {
		t.Fatal("reset left counts")
	}
}

func TestReadProcOfThisProcess(t *testing.T) {
	s, err := ReadProc(pidSelf())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS < 1<<20 {
		t.Fatalf("rss %d is implausibly small", s.RSS)
	}
	before, _ := ReadProcs([]int{pidSelf()})
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := ReadProcs([]int{pidSelf()})
	if err != nil {
		t.Fatal(err)
	}
	if d := CPUDelta(before, after); d < 0 {
		t.Fatalf("negative cpu delta %v", d)
	}
	if _, err := ReadProcs([]int{1 << 30}); err == nil {
		t.Fatal("a missing pid gave no error")
	}
}

func TestPacerReleasesSendsOnScheduleAndCatchesUp(t *testing.T) {
	start := time.Unix(1000, 0)
	p := NewPacer(100, start) // one send every 10ms
	if n := p.Due(start.Add(-time.Second)); n != 0 {
		t.Fatalf("%d due before start", n)
	}
	if n := p.Due(start.Add(5 * time.Millisecond)); n != 0 {
		t.Fatalf("%d due at 5ms", n)
	}
	if n := p.Due(start.Add(10 * time.Millisecond)); n != 1 {
		t.Fatalf("%d due at 10ms, want 1", n)
	}
	if want := start.Add(20 * time.Millisecond); !p.Next().Equal(want) {
		t.Fatalf("next %v, want %v", p.Next(), want)
	}
	// The caller stalled for a second: the schedule does not slip.
	if n := p.Due(start.Add(1010 * time.Millisecond)); n != 100 {
		t.Fatalf("%d due after a stall, want 100", n)
	}
	p.MaxBurst = 10
	if n := p.Due(start.Add(2010 * time.Millisecond)); n != 10 {
		t.Fatalf("burst %d, want the cap 10", n)
	}
	if p.Sent() != 111 {
		t.Fatalf("sent %d, want 111", p.Sent())
	}
	if n := NewPacer(0, start).Due(start.Add(time.Hour)); n != 0 {
		t.Fatalf("rate 0 released %d", n)
	}
}

func TestPayloadHasExactSizeAndCarriesSendTime(t *testing.T) {
	now := time.Now()
	for _, size := range []int{0, minPayload, 100, 1000} {
		p := EncodePayload(nil, now, size)
		if want := max(size, minPayload); len(p) != want {
			t.Errorf("size %d: payload is %d bytes, want %d", size, len(p), want)
		}
		got, err := DecodeSendTime(p)
		if err != nil || !got.Equal(time.Unix(0, now.UnixNano())) {
			t.Errorf("size %d: decoded %v, %v", size, got, err)
		}
	}
	for _, bad := range []string{`{}`, `{"t":"x"}`, `{"t":` + strings.Repeat("9", 25) + `}`} {
		if _, err := DecodeSendTime([]byte(bad)); err == nil {
			t.Errorf("DecodeSendTime(%s) gave no error", bad)
		}
	}
}

func TestParseGoMemory(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 31
# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2e+07
# TYPE go_memstats_heap_alloc_bytes gauge
go_memstats_heap_alloc_bytes 9e+06
# TYPE parley_connections gauge
parley_connections 5
`
	m, err := ParseGoMemory(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if m.HeapInuse != 1.2e7 || m.HeapAlloc != 9e6 || m.Goroutines != 31 {
		t.Fatalf("got %+v", m)
	}
	if _, err := ParseGoMemory(strings.NewReader("parley_connections 5\n")); err == nil {
		t.Fatal("metrics without the Go collector gave no error")
	}
}

// TestEndpointSpreadsRoomsOverNodes: every room's members are spread over
// the nodes as evenly as their number allows, whatever the room count.
func TestEndpointSpreadsRoomsOverNodes(t *testing.T) {
	for _, c := range []struct{ rooms, perRoom, nodes int }{{500, 10, 2}, {1000, 10, 2}, {7, 10, 3}, {1, 100, 2}, {500, 10, 1}} {
		j := Job{Rooms: c.rooms}
		for n := range c.nodes {
			j.Endpoints = append(j.Endpoints, fmt.Sprint("ws://node", n))
		}
		for r := range c.rooms {
			count := map[string]int{}
			for k := range c.perRoom {
				count[j.Endpoint(r+k*c.rooms)]++
			}
			for _, e := range j.Endpoints {
				if lo := c.perRoom / c.nodes; count[e] < lo || count[e] > lo+1 {
					t.Fatalf("%+v: room %d has %d members on %s: %v", c, r, count[e], e, count)
				}
			}
		}
	}
}
