package scale_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// histogram is controller_runtime_reconcile_time_seconds for the chatcluster
// controller: cumulative bucket counts by upper bound.
type histogram struct {
	bounds []float64
	cum    []float64
	count  float64
}

// quantile interpolates linearly inside the bucket, like PromQL's histogram_quantile.
func (h histogram) quantile(q float64) float64 {
	if h.count == 0 || len(h.bounds) == 0 {
		return math.NaN()
	}
	rank := q * h.count
	prevBound, prevCum := 0.0, 0.0
	for i, ub := range h.bounds {
		if h.cum[i] >= rank {
			if math.IsInf(ub, 1) {
				return prevBound
			}
			if h.cum[i] == prevCum {
				return ub
			}
			return prevBound + (ub-prevBound)*(rank-prevCum)/(h.cum[i]-prevCum)
		}
		prevBound, prevCum = ub, h.cum[i]
	}
	return prevBound
}

// minus is the histogram of the observations between o and h.
func (h histogram) minus(o histogram) histogram {
	out := histogram{bounds: h.bounds, cum: make([]float64, len(h.cum)), count: h.count - o.count}
	for i := range h.cum {
		out.cum[i] = h.cum[i]
		if i < len(o.cum) {
			out.cum[i] -= o.cum[i]
		}
	}
	return out
}

func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// reconcileHistogram extracts the chatcluster controller's reconcile histogram.
func reconcileHistogram(fams map[string]*dto.MetricFamily) (histogram, error) {
	f := fams["controller_runtime_reconcile_time_seconds"]
	if f == nil {
		return histogram{}, fmt.Errorf("no controller_runtime_reconcile_time_seconds in the manager's metrics")
	}
	for _, m := range f.GetMetric() {
		if label(m, "controller") != "chatcluster" {
			continue
		}
		h := histogram{count: float64(m.GetHistogram().GetSampleCount())}
		for _, b := range m.GetHistogram().GetBucket() {
			h.bounds = append(h.bounds, b.GetUpperBound())
			h.cum = append(h.cum, float64(b.GetCumulativeCount()))
		}
		h.bounds = append(h.bounds, math.Inf(1))
		h.cum = append(h.cum, h.count)
		return h, nil
	}
	return histogram{}, nil // no reconcile yet
}

func scrape(b *testing.B, url string) histogram {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	fams, err := parseMetrics(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	h, err := reconcileHistogram(fams)
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// reconcileErrors is controller_runtime_reconcile_errors_total for the chatcluster controller.
func reconcileErrors(b *testing.B, url string) float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	fams, err := parseMetrics(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, m := range fams["controller_runtime_reconcile_errors_total"].GetMetric() {
		if label(m, "controller") == "chatcluster" {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// writeVerbs are the API verbs that change state.
var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true, "DELETECOLLECTION": true, "APPLY": true, "CREATE": true, "UPDATE": true}

// readVerbs are the API verbs that read (a WATCH is long-running: counted
// once when it starts, so left out).
var readVerbs = map[string]bool{"GET": true, "LIST": true}

// writeCounts sums apiserver_request_total over write verbs by
// resource[/subresource], leaving out the API server's own lease renewals.
func writeCounts(fams map[string]*dto.MetricFamily) map[string]float64 {
	return requestCounts(fams, writeVerbs)
}

// readCounts is writeCounts for GET and LIST, keyed "VERB resource": the
// operator's GETs are reads that miss its cache (uncached Secrets, the API
// reader), each paying the client's rate limit as a write does.
func readCounts(fams map[string]*dto.MetricFamily) map[string]float64 {
	return requestCounts(fams, readVerbs)
}

func requestCounts(fams map[string]*dto.MetricFamily, verbs map[string]bool) map[string]float64 {
	_, reads := verbs["GET"]
	out := map[string]float64{}
	f := fams["apiserver_request_total"]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		if !verbs[strings.ToUpper(label(m, "verb"))] {
			continue
		}
		res := label(m, "resource")
		if res == "leases" {
			continue
		}
		if res == "" {
			res = "(non-resource: discovery, /metrics)"
		}
		if sub := label(m, "subresource"); sub != "" {
			res += "/" + sub
		}
		if reads {
			res = strings.ToUpper(label(m, "verb")) + " " + res
		}
		out[res] += m.GetCounter().GetValue()
	}
	return out
}

// apiWrites scrapes the API server's write counters as an administrator.
func apiWrites(b *testing.B, cfg *rest.Config) map[string]float64 {
	b.Helper()
	w, _ := apiRequests(b, cfg)
	return w
}

// apiRequests scrapes the API server's write and read counters.
func apiRequests(b *testing.B, cfg *rest.Config) (writes, reads map[string]float64) {
	b.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	data, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		b.Fatalf("API server /metrics: %v", err)
	}
	fams, err := parseMetrics(bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	return writeCounts(fams), readCounts(fams)
}

func procRSS(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// procCPU is utime+stime in seconds (USER_HZ is 100 on Linux).
func procCPU(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return math.NaN()
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}
