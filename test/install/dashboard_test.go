package install

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/chatserver/metrics"
	"github.com/parley-chat/parley/internal/alerts"
)

// metricInfo is what a dashboard query may rely on: a metric's labels and
// whether it is a histogram (with _bucket, _sum and _count series).
type metricInfo struct {
	labels    []string
	histogram bool
}

// targetLabels are attached by Prometheus when it scrapes a pod.
var targetLabels = []string{"namespace", "pod", "instance", "job", "container", "service", "endpoint"}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// chatServerMetrics lists every collector the chat server registers.
func chatServerMetrics(t testing.TB) map[string]metricInfo {
	t.Helper()
	m := metrics.New()
	out := map[string]metricInfo{}
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Type().Field(i).Name == "Registry" {
			continue
		}
		_, isHist := c.(prometheus.Histogram)
		_, isHistVec := c.(*prometheus.HistogramVec)
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			s := d.String()
			name := descName.FindStringSubmatch(s)[1]
			var labels []string
			if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
				labels = strings.Split(l[1], ",")
			}
			out[name] = metricInfo{labels: labels, histogram: isHist || isHistVec}
		}
	}
	// The Go and process collectors.
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if _, ok := out[f.GetName()]; !ok {
			out[f.GetName()] = metricInfo{}
		}
	}
	return out
}

// dashboardQueries returns every PromQL expression in the dashboard, by panel title.
func dashboardQueries(t testing.TB) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboards", "parley.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	out := map[string][]string{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			out["variable"] = append(out["variable"], v.Definition)
		}
	}
	return out
}

var (
	promIdent = regexp.MustCompile(`\b([a-z_][a-z0-9_]*)\s*[{\[(,)]`)
	promBy    = regexp.MustCompile(`\b(?:by|on)\s*\(([^)]*)\)`)
)

// queryMetrics finds the metric names a query reads (identifiers with a known
// prefix) and the labels it groups or joins by.
func queryMetrics(expr string, prefixes, skip []string) (names, labels []string) {
	for _, m := range promIdent.FindAllStringSubmatch(expr, -1) {
		if slices.ContainsFunc(skip, func(p string) bool { return strings.HasPrefix(m[1], p) }) {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(m[1], p) && !slices.Contains(names, m[1]) {
				names = append(names, m[1])
			}
		}
	}
	for _, m := range promBy.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	return names, labels
}

// checkQueries fails for a query that reads a metric (with one of prefixes,
// and none of skip) the programs do not export, or groups by a label the
// metric does not carry.
func checkQueries(t testing.TB, queries map[string][]string, known map[string]metricInfo, prefixes, skip []string) int {
	t.Helper()
	checked := 0
	for panel, exprs := range queries {
		for _, e := range exprs {
			names, labels := queryMetrics(e, prefixes, skip)
			allowed := slices.Clone(targetLabels)
			for _, n := range names {
				info, ok := known[n]
				if !ok {
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if b, cut := strings.CutSuffix(n, suffix); cut && known[b].histogram {
							info, ok = known[b], true
							if suffix == "_bucket" {
								allowed = append(allowed, "le")
							}
						}
					}
				}
				if !ok {
					t.Errorf("panel %q reads %s, which is not exported: %s", panel, n, e)
					continue
				}
				allowed = append(allowed, info.labels...)
				checked++
			}
			if len(names) == 0 {
				continue
			}
			for _, l := range labels {
				if !slices.Contains(allowed, l) {
					t.Errorf("panel %q groups by %q, which %v do not carry: %s", panel, l, names, e)
				}
			}
		}
	}
	return checked
}

func TestDashboardReadsRealChatServerMetrics(t *testing.T) {
	known := chatServerMetrics(t)
	if len(known) < 10 {
		t.Fatalf("found only %d chat server metrics", len(known))
	}
	// The operator's parley_operator_* metrics are checked against a running
	// operator in TestOperatorWorksWithExactlyTheChartRBAC.
	n := checkQueries(t, dashboardQueries(t), known, []string{"parley_", "process_", "go_"}, []string{"parley_operator_"})
	if n < 15 {
		t.Errorf("the dashboard reads only %d chat server series", n)
	}
	// Every chat server metric is on the dashboard.
	all := strings.Join(slices.Concat(slices.Collect(maps.Values(dashboardQueries(t)))...), "\n")
	for name := range known {
		if strings.HasPrefix(name, "parley_") && !strings.Contains(all, name) {
			t.Errorf("chat server metric %s is not on the dashboard", name)
		}
	}
}

// alertQueries returns every alert expression of a rule file, by alert name.
func alertQueries(t testing.TB, rules []byte) map[string][]string {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(rules, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = append(out["alert "+r.Alert], r.Expr)
		}
	}
	return out
}

// The per-ChatCluster alerts read only metrics the chat server exports, with
// the labels it (or the scrape) gives them. The operator's alerts are checked
// against a running operator in TestOperatorWorksWithExactlyTheChartRBAC.
func TestAlertsReadRealChatServerMetrics(t *testing.T) {
	queries := alertQueries(t, alerts.ChatCluster("team", "chat"))
	if n := checkQueries(t, queries, chatServerMetrics(t), []string{"parley_"}, nil); n < len(queries) {
		t.Errorf("%d alerts, only %d metric reads checked", len(queries), n)
	}
}
