package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// GoMemory is what a Go server's /metrics says about its memory (the
// standard Go collector, which both Parley and Centrifugo expose).
type GoMemory struct {
	HeapInuse  float64 `json:"heapInuseBytes"`
	HeapAlloc  float64 `json:"heapAllocBytes"`
	StackInuse float64 `json:"stackInuseBytes"`
	Sys        float64 `json:"sysBytes"`
	Goroutines float64 `json:"goroutines"`
}

// parseFamilies reads a Prometheus text exposition.
func parseFamilies(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// fetchFamilies scrapes url (a /metrics endpoint).
func fetchFamilies(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseFamilies(resp.Body)
}

// ParseGoMemory reads the Go collector's gauges from a Prometheus text exposition.
func ParseGoMemory(r io.Reader) (GoMemory, error) {
	fams, err := parseFamilies(r)
	if err != nil {
		return GoMemory{}, err
	}
	return goMemory(fams)
}

func goMemory(fams map[string]*dto.MetricFamily) (GoMemory, error) {
	gauge := func(name string) float64 {
		f := fams[name]
		if f == nil || len(f.GetMetric()) == 0 {
			return 0
		}
		m := f.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		if u := m.GetUntyped(); u != nil {
			return u.GetValue()
		}
		return 0
	}
	if fams["go_memstats_heap_inuse_bytes"] == nil {
		return GoMemory{}, fmt.Errorf("metrics have no go_memstats_heap_inuse_bytes")
	}
	return GoMemory{
		HeapInuse: gauge("go_memstats_heap_inuse_bytes"), HeapAlloc: gauge("go_memstats_heap_alloc_bytes"),
		StackInuse: gauge("go_memstats_stack_inuse_bytes"), Sys: gauge("go_memstats_sys_bytes"),
		Goroutines: gauge("go_goroutines"),
	}, nil
}

// FetchGoMemory scrapes url (a /metrics endpoint).
func FetchGoMemory(ctx context.Context, url string) (GoMemory, error) {
	fams, err := fetchFamilies(ctx, url)
	if err != nil {
		return GoMemory{}, err
	}
	return goMemory(fams)
}
