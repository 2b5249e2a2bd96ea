package scale_test

import (
	"math"
	"strings"
	"testing"
)

func TestQuantileInterpolatesInsideBuckets(t *testing.T) {
	// 100 observations: 50 in (0, 0.01], 40 in (0.01, 0.1], 10 in (0.1, 1].
	h := histogram{bounds: []float64{0.01, 0.1, 1, math.Inf(1)}, cum: []float64{50, 90, 100, 100}, count: 100}
	for _, c := range []struct{ q, want float64 }{{0.5, 0.01}, {0.25, 0.005}, {0.7, 0.055}, {0.99, 0.91}} {
		if got := h.quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%v = %v, want %v", c.q, got, c.want)
		}
	}
	before := histogram{bounds: h.bounds, cum: []float64{50, 50, 50, 50}, count: 50}
	d := h.minus(before)
	if d.count != 50 || math.Abs(d.quantile(0.5)-0.06625) > 1e-9 { // rank 25 of the 40 in (0.01, 0.1]
		t.Fatalf("difference: count %v, median %v", d.count, d.quantile(0.5))
	}
	if !math.IsNaN((histogram{}).quantile(0.5)) {
		t.Fatal("an empty histogram has a median")
	}
}

func TestWriteCountsSkipsReadsAndLeases(t *testing.T) {
	text := `# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",group="apps",resource="deployments",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",group="chat.parley.io",resource="chatclusters",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",group="apps",resource="deployments",scope="cluster",subresource="",verb="LIST",version="v1"} 99
apiserver_request_total{code="200",component="apiserver",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 40
`
	fams, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	got := writeCounts(fams)
	if len(got) != 2 || got["deployments"] != 7 || got["chatclusters/status"] != 3 {
		t.Fatalf("write counts %v", got)
	}
	reads := readCounts(fams)
	if len(reads) != 1 || reads["LIST deployments"] != 99 {
		t.Fatalf("read counts %v", reads)
	}
	total, by := delta(map[string]float64{"GET secrets": 5, "LIST deployments": 1}, map[string]float64{"GET secrets": 9, "LIST deployments": 4, "GET services": 2}, "GET ")
	if total != 6 || len(by) != 2 || by["GET secrets"] != 4 || by["GET services"] != 2 {
		t.Fatalf("delta of GETs = %v %v", total, by)
	}
}
