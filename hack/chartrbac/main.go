// Command chartrbac turns the operator's generated RBAC (config/rbac/role.yaml,
// written by controller-gen from the kubebuilder markers) into the Helm chart's
// rule templates, so the chart grants exactly what the code declares. Rules on
// namespaced resources and rules on cluster-scoped resources are kept apart:
// with watchNamespaces set the chart puts the first in per-namespace Roles and
// only the second in a ClusterRole.
//
//	go run ./hack/chartrbac -in config/rbac/role.yaml -out charts/parley/templates/_rbac_rules.tpl
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// roleName is the ClusterRole controller-gen writes (rbac:roleName=manager-role in the Makefile).
const roleName = "manager-role"

func main() {
	in := flag.String("in", "config/rbac/role.yaml", "controller-gen's RBAC output")
	out := flag.String("out", "charts/parley/templates/_rbac_rules.tpl", "the chart template to write")
	flag.Parse()
	src, err := os.ReadFile(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartrbac:", err)
		os.Exit(1)
	}
	tpl, err := Render(src, *in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartrbac:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, tpl, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "chartrbac:", err)
		os.Exit(1)
	}
}

// clusterScoped lists the built-in cluster-scoped resources by API group.
// Anything else (ChatClusters, Deployments, Secrets, ...) is namespaced.
var clusterScoped = map[string][]string{
	"":                             {"namespaces", "nodes", "persistentvolumes", "componentstatuses"},
	"apiextensions.k8s.io":         {"customresourcedefinitions"},
	"apiregistration.k8s.io":       {"apiservices"},
	"admissionregistration.k8s.io": {"mutatingwebhookconfigurations", "validatingwebhookconfigurations", "validatingadmissionpolicies", "validatingadmissionpolicybindings", "mutatingadmissionpolicies", "mutatingadmissionpolicybindings"},
	"authentication.k8s.io":        {"tokenreviews", "selfsubjectreviews"},
	"authorization.k8s.io":         {"subjectaccessreviews", "selfsubjectaccessreviews", "selfsubjectrulesreviews"},
	"certificates.k8s.io":          {"certificatesigningrequests", "clustertrustbundles"},
	// Parley's own cluster-scoped kind.
	"chat.parley.io":               {"chatbackends", "chatbackends/status", "chatbackends/finalizers"},
	"flowcontrol.apiserver.k8s.io": {"flowschemas", "prioritylevelconfigurations"},
	"networking.k8s.io":            {"ingressclasses", "ipaddresses", "servicecidrs"},
	"node.k8s.io":                  {"runtimeclasses"},
	"rbac.authorization.k8s.io":    {"clusterroles", "clusterrolebindings"},
	"scheduling.k8s.io":            {"priorityclasses"},
	"storage.k8s.io":               {"storageclasses", "csidrivers", "csinodes", "volumeattachments", "volumeattributesclasses"},
}

func isClusterScoped(group, resource string) bool {
	base, _, _ := strings.Cut(resource, "/") // "namespaces/status" is a namespaces subresource
	for _, r := range clusterScoped[group] {
		if r == base {
			return true
		}
	}
	return false
}

// Split separates rules on namespaced resources from rules on cluster-scoped
// resources and non-resource URLs. A rule mixing both is split in two. Rules
// with wildcards are refused: least privilege means naming what is used.
func Split(rules []rbacv1.PolicyRule) (namespaced, cluster []rbacv1.PolicyRule, err error) {
	for i, r := range rules {
		if len(r.NonResourceURLs) > 0 {
			cluster = append(cluster, r)
			continue
		}
		for _, s := range append(append(append([]string{}, r.APIGroups...), r.Resources...), r.Verbs...) {
			if s == "*" {
				return nil, nil, fmt.Errorf("rule %d (%v %v %v) has a wildcard: name the groups, resources and verbs the operator uses", i, r.APIGroups, r.Resources, r.Verbs)
			}
		}
		if len(r.APIGroups) != 1 {
			// controller-gen writes one group per rule; a rule over several groups
			// is kept whole and counts as cluster-scoped if any pair is.
			ns, cl := r.DeepCopy(), false
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					cl = cl || isClusterScoped(g, res)
				}
			}
			if cl {
				cluster = append(cluster, *ns)
			} else {
				namespaced = append(namespaced, *ns)
			}
			continue
		}
		var nsRes, clRes []string
		for _, res := range r.Resources {
			if isClusterScoped(r.APIGroups[0], res) {
				clRes = append(clRes, res)
			} else {
				nsRes = append(nsRes, res)
			}
		}
		if len(nsRes) > 0 {
			c := r.DeepCopy()
			c.Resources = nsRes
			namespaced = append(namespaced, *c)
		}
		if len(clRes) > 0 {
			c := r.DeepCopy()
			c.Resources = clRes
			cluster = append(cluster, *c)
		}
	}
	return namespaced, cluster, nil
}

// Render reads controller-gen's role.yaml and returns the chart template
// defining "parley.rules.namespaced" and "parley.rules.cluster".
func Render(roleYAML []byte, source string) ([]byte, error) {
	var rules []rbacv1.PolicyRule
	found := false
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(roleYAML), 4096)
	for {
		var obj rbacv1.ClusterRole // a Role has the same fields we read
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if obj.Kind == "" {
			continue // an empty document
		}
		if obj.Kind != "ClusterRole" || obj.Name != roleName {
			return nil, fmt.Errorf("%s: unexpected %s %q: the chart supports one ClusterRole %q (kubebuilder rbac markers without namespace=)", source, obj.Kind, obj.Name, roleName)
		}
		if found {
			return nil, fmt.Errorf("%s: ClusterRole %q appears twice", source, roleName)
		}
		found = true
		rules = obj.Rules
	}
	if !found {
		return nil, fmt.Errorf("%s: no ClusterRole %q (run `make manifests`)", source, roleName)
	}
	namespaced, cluster, err := Split(rules)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "{{- /* Code generated by hack/sync-chart.sh from %s. DO NOT EDIT. */}}\n\n", source)
	for _, d := range []struct {
		name  string
		rules []rbacv1.PolicyRule
	}{{"parley.rules.namespaced", namespaced}, {"parley.rules.cluster", cluster}} {
		fmt.Fprintf(&b, "{{- define %q }}\n", d.name)
		if len(d.rules) > 0 {
			y, err := yaml.Marshal(d.rules)
			if err != nil {
				return nil, err
			}
			b.Write(y)
		}
		b.WriteString("{{- end }}\n\n")
	}
	return append(bytes.TrimRight(b.Bytes(), "\n"), '\n'), nil
}
