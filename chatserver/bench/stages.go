package bench

// Where a publication's time goes inside Parley, per measured window: the
// servers' own parley_publish_stage_seconds histograms (append: the store's
// commit; broker: the confirmed broker publish), scraped from every node at
// both ends of the window and differenced. Client-side latency says how slow
// a step was; this says which stage the slow publications waited in, so a
// p99 stall can be put on PostgreSQL or RabbitMQ without a hand scrape.

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// stageMetric is the histogram the chat server keeps per publish stage.
const stageMetric = "parley_publish_stage_seconds"

// promHist is one Prometheus histogram: cumulative counts at upper bounds
// (seconds, ascending, +Inf last), the total count and the sum in seconds.
type promHist struct {
	le     []float64
	counts []uint64
	count  uint64
	sum    float64
}

// stageHistograms picks the publish-stage histograms out of a scrape, by
// stage label. A server without them (Centrifugo, an older Parley) gives an
// empty map.
func stageHistograms(fams map[string]*dto.MetricFamily) map[string]promHist {
	out := map[string]promHist{}
	f := fams[stageMetric]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		stage := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "stage" {
				stage = l.GetValue()
			}
		}
		var ph promHist
		for _, b := range h.GetBucket() {
			ph.le = append(ph.le, b.GetUpperBound())
			ph.counts = append(ph.counts, b.GetCumulativeCount())
		}
		if len(ph.le) == 0 || !math.IsInf(ph.le[len(ph.le)-1], 1) {
			// The text format leaves +Inf implicit in the parsed buckets.
			ph.le = append(ph.le, math.Inf(1))
			ph.counts = append(ph.counts, h.GetSampleCount())
		}
		ph.count, ph.sum = h.GetSampleCount(), h.GetSampleSum()
		out[stage] = ph
	}
	return out
}

// add sums b into h (the same metric on another node). Histograms with
// different buckets cannot be summed; the caller's servers are one build.
func (h promHist) add(b promHist) (promHist, error) {
	if len(h.le) == 0 {
		return promHist{le: append([]float64(nil), b.le...), counts: append([]uint64(nil), b.counts...), count: b.count, sum: b.sum}, nil
	}
	if len(h.le) != len(b.le) {
		return h, fmt.Errorf("%s: nodes disagree on buckets", stageMetric)
	}
	out := promHist{le: h.le, counts: make([]uint64, len(h.counts)), count: h.count + b.count, sum: h.sum + b.sum}
	for i := range h.counts {
		if h.le[i] != b.le[i] {
			return h, fmt.Errorf("%s: nodes disagree on buckets", stageMetric)
		}
		out.counts[i] = h.counts[i] + b.counts[i]
	}
	return out, nil
}

// since is what h observed after before (a scrape of the same process).
// A counter that went down (a restarted node) counts from zero.
func (h promHist) since(before promHist) promHist {
	if len(before.le) != len(h.le) || before.count > h.count {
		return h
	}
	out := promHist{le: h.le, counts: make([]uint64, len(h.counts)), count: h.count - before.count, sum: h.sum - before.sum}
	for i := range h.counts {
		out.counts[i] = h.counts[i] - min(before.counts[i], h.counts[i])
	}
	return out
}

// quantile estimates the q-quantile in seconds the way Prometheus's
// histogram_quantile does: linear within the bucket it falls in. In the
// +Inf bucket it answers the highest finite bound (a floor, not a value).
func (h promHist) quantile(q float64) float64 {
	if h.count == 0 || len(h.le) == 0 {
		return 0
	}
	rank := q * float64(h.count)
	for i, c := range h.counts {
		if float64(c) < rank {
			continue
		}
		if math.IsInf(h.le[i], 1) {
			if i == 0 {
				return 0
			}
			return h.le[i-1]
		}
		lo, below := 0.0, uint64(0)
		if i > 0 {
			lo, below = h.le[i-1], h.counts[i-1]
		}
		in := c - below
		if in == 0 {
			return h.le[i]
		}
		return lo + (h.le[i]-lo)*(rank-float64(below))/float64(in)
	}
	// Counts that do not reach the total: a torn scrape. Answer the floor.
	if len(h.le) < 2 {
		return 0
	}
	return h.le[len(h.le)-2]
}

// highest is the upper bound of the highest bucket anything fell in
// (seconds; the highest finite bound when something fell past it).
func (h promHist) highest() float64 {
	for i := range h.counts {
		if h.counts[i] == h.count && h.count > 0 {
			if math.IsInf(h.le[i], 1) && i > 0 {
				return h.le[i-1]
			}
			return h.le[i]
		}
	}
	return 0
}

// summary digests h in the client histograms' units (bucket estimates for
// the quantiles, exact mean; MaxMs is the highest bucket's bound).
func (h promHist) summary() Summary {
	if h.count == 0 {
		return Summary{}
	}
	return Summary{Count: h.count, MeanMs: h.sum * 1e3 / float64(h.count), P50Ms: h.quantile(0.5) * 1e3,
		P99Ms: h.quantile(0.99) * 1e3, P999Ms: h.quantile(0.999) * 1e3, MaxMs: h.highest() * 1e3}
}

// scrapeStages reads every node's stage histograms and sums them by stage.
// Nodes without a metrics URL are skipped.
func scrapeStages(ctx context.Context, urls []string) (map[string]promHist, error) {
	total := map[string]promHist{}
	for _, u := range urls {
		if u == "" {
			continue
		}
		fams, err := fetchFamilies(ctx, u)
		if err != nil {
			return nil, err
		}
		hs := stageHistograms(fams)
		for stage, h := range hs {
			if total[stage], err = total[stage].add(h); err != nil {
				return nil, err
			}
		}
	}
	return total, nil
}

// stagesSince summarises what each stage observed between two scrapes.
func stagesSince(before, after map[string]promHist) map[string]Summary {
	var out map[string]Summary
	for stage, h := range after {
		d := h.since(before[stage])
		if d.count == 0 {
			continue
		}
		if out == nil {
			out = map[string]Summary{}
		}
		out[stage] = d.summary()
	}
	return out
}

// stagesCell renders a window's stages for the report: "append 0.4 / 3.1,
// broker 0.6 / 9.8" (p50 / p99 ms), or "–" for servers without them.
func stagesCell(st map[string]Summary) string {
	if len(st) == 0 {
		return "–"
	}
	names := make([]string, 0, len(st))
	for k := range st {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %.2f / %.1f", k, st[k].P50Ms, st[k].P99Ms))
	}
	return strings.Join(parts, ", ")
}
