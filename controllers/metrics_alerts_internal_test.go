package controllers

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/alerts"
)

// The operator's alerts (internal/alerts) read parley_operator_* series the
// operator defines, grouped by labels those series carry — checked on the
// descriptors, since some series exist only while a cleanup fails.
func TestOperatorAlertsReadDefinedMetrics(t *testing.T) {
	defined := map[string][]string{} // name → variable labels
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	vars := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	for _, c := range []prometheus.Collector{&clusterCollector{}, cleanupFailures, leftBehind} {
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			s := d.String()
			var labels []string
			if m := vars.FindStringSubmatch(s); m != nil && m[1] != "" {
				labels = strings.Split(m[1], ",")
			}
			defined[fq.FindStringSubmatch(s)[1]] = labels
		}
	}
	rules := string(alerts.Operator())
	scrape := []string{"namespace", "pod", "instance", "job", "service", "endpoint", "container"}
	read := 0
	for _, expr := range regexp.MustCompile(`(?m)expr: (?:\|-\n)?((?:.+\n?)+?)\s+(?:for|labels):`).FindAllStringSubmatch(rules, -1) {
		for _, m := range regexp.MustCompile(`(parley_operator_[a-z_]+)(\{[^}]*\})?`).FindAllStringSubmatch(expr[1], -1) {
			labels, ok := defined[m[1]]
			if !ok {
				t.Errorf("an alert reads %s, which the operator does not define: %s", m[1], expr[1])
				continue
			}
			read++
			for _, sel := range regexp.MustCompile(`([a-z_]+)=~?"`).FindAllStringSubmatch(m[2], -1) {
				if !slices.Contains(labels, sel[1]) && !slices.Contains(scrape, sel[1]) {
					t.Errorf("an alert selects %s by %q, which it does not carry (%v)", m[1], sel[1], labels)
				}
			}
			for _, by := range regexp.MustCompile(`by \(([^)]*)\) \(\w*\(?`+m[1]).FindAllStringSubmatch(expr[1], -1) {
				for _, l := range strings.Split(by[1], ",") {
					if l = strings.TrimSpace(l); !slices.Contains(labels, l) && !slices.Contains(scrape, l) {
						t.Errorf("an alert groups %s by %q, which it does not carry (%v)", m[1], l, labels)
					}
				}
			}
		}
	}
	if read < 4 {
		t.Errorf("only %d parley_operator_ reads found in the operator's alerts", read)
	}
}
