// Package alerts holds Parley's Prometheus alerting rules in one place: the
// per-ChatCluster rules the operator writes into a PrometheusRule, and the
// operator's own rules the Helm chart installs (a verbatim copy made by
// hack/sync-chart.sh). The promtool unit tests run these same bytes.
package alerts

import (
	_ "embed"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// RunbookBase is the page every alert's runbook_url points into, at the
// section named after the alert.
const RunbookBase = "https://github.com/parley-chat/parley/blob/main/docs/operations.md"

//go:embed chatcluster.rules.yaml
var chatClusterRules string

//go:embed operator.rules.yaml
var operatorRules []byte

// ChatCluster returns the rule file (Prometheus's format: {groups: [...]})
// for one ChatCluster's chat servers, selecting the series of its Service.
// Namespace and cluster names are DNS labels, so they are safe in PromQL
// strings and YAML without quoting.
func ChatCluster(namespace, cluster string) []byte {
	return []byte(strings.NewReplacer("__NAMESPACE__", namespace, "__CLUSTER__", cluster).Replace(chatClusterRules))
}

// Operator returns the rule file for the operator itself.
func Operator() []byte { return append([]byte(nil), operatorRules...) }

// Groups parses a rule file into its groups, as a PrometheusRule's
// spec.groups holds them.
func Groups(ruleFile []byte) ([]any, error) {
	var f struct {
		Groups []any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(ruleFile, &f); err != nil {
		return nil, fmt.Errorf("parse alerting rules: %w", err)
	}
	if len(f.Groups) == 0 {
		return nil, fmt.Errorf("parse alerting rules: no groups")
	}
	return f.Groups, nil
}
