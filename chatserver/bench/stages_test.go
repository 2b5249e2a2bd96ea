package bench

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// stageServer is a /metrics endpoint with the chat server's stage histogram,
// fed by the test.
func stageServer(t *testing.T) (*prometheus.HistogramVec, string) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: stageMetric,
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}, []string{"stage"})
	reg.MustRegister(h)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// The window's stages are what both nodes observed between the scrapes, not
// what they held before: a stall before the window must not show in it, and
// one in it must show in the stage it happened in.
func TestStagesAreTheWindowsDifferenceOverNodes(t *testing.T) {
	a, ua := stageServer(t)
	b, ub := stageServer(t)
	// Before the window: 1,000 slow appends that must not count.
	for range 1000 {
		a.WithLabelValues("append").Observe(0.2)
	}
	ctx := t.Context()
	before, err := scrapeStages(ctx, []string{ua, "", ub})
	if err != nil {
		t.Fatal(err)
	}
	// In the window: 990 fast appends over both nodes, 10 stalled broker
	// publishes on one of them among 990 fast ones.
	for i := range 990 {
		[]*prometheus.HistogramVec{a, b}[i%2].WithLabelValues("append").Observe(0.0003)
		b.WithLabelValues("broker").Observe(0.0007)
	}
	for range 10 {
		a.WithLabelValues("append").Observe(0.0003)
		b.WithLabelValues("broker").Observe(0.040)
	}
	after, err := scrapeStages(ctx, []string{ua, "", ub})
	if err != nil {
		t.Fatal(err)
	}
	st := stagesSince(before, after)
	ap, br := st["append"], st["broker"]
	if ap.Count != 1000 || br.Count != 1000 {
		t.Fatalf("counts %d / %d, want 1000 / 1000 (the earlier 1000 left out)", ap.Count, br.Count)
	}
	if ap.P99Ms > 0.5 || ap.MaxMs != 0.5 || math.Abs(ap.MeanMs-0.3) > 0.01 {
		t.Errorf("append %+v: want every observation in the 0.25–0.5 ms bucket, mean 0.3 ms", ap)
	}
	if br.P50Ms < 0.5 || br.P50Ms > 1 {
		t.Errorf("broker p50 %.3f ms, want in the 0.5–1 ms bucket", br.P50Ms)
	}
	// Rank 990 of 1000 is the last fast one; p99.9 falls among the stalls.
	if br.P999Ms < 25 || br.P999Ms > 50 || br.MaxMs != 50 {
		t.Errorf("broker %+v: want p99.9 and the highest bucket in 25–50 ms", br)
	}
	if cell := stagesCell(st); !strings.HasPrefix(cell, "append 0.") || !strings.Contains(cell, ", broker ") {
		t.Errorf("cell %q", cell)
	}
}

func TestStageQuantilesPastTheLastBucket(t *testing.T) {
	h := promHist{le: []float64{0.001, 0.01, math.Inf(1)}, counts: []uint64{50, 50, 100}, count: 100, sum: 500}
	if q := h.quantile(0.99); q != 0.01 {
		t.Errorf("p99 in the +Inf bucket = %v, want the last finite bound 0.01", q)
	}
	if q := h.quantile(0.25); math.Abs(q-0.0005) > 1e-9 {
		t.Errorf("p25 = %v, want 0.0005 (linear within the first bucket)", q)
	}
	if got := h.since(promHist{le: h.le, counts: []uint64{60, 60, 200}, count: 200}); got.count != 100 {
		t.Errorf("after a restart the window counts from zero, got %d", got.count)
	}
}

// A server without the histogram (Centrifugo) gives no stages, not an error.
func TestNoStagesFromOtherServers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# TYPE go_goroutines gauge\ngo_goroutines 7\n"))
	}))
	defer srv.Close()
	ctx := t.Context()
	st, err := scrapeStages(ctx, []string{srv.URL})
	if err != nil || len(st) != 0 {
		t.Fatalf("stages %v, err %v", st, err)
	}
	if c := stagesCell(stagesSince(st, st)); c != "–" {
		t.Errorf("cell %q", c)
	}
}
