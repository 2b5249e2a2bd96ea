package install

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/parley-chat/parley/internal/alerts"
)

// grant is one (group, resource, verb) permission, or a non-resource URL and verb.
type grant struct{ group, resource, name, verb string }

// grants flattens rules into individual permissions, so rule sets compare
// regardless of how they are grouped.
func grants(rules []rbacv1.PolicyRule) []grant {
	set := map[grant]bool{}
	for _, r := range rules {
		for _, v := range r.Verbs {
			for _, u := range r.NonResourceURLs {
				set[grant{resource: "url:" + u, verb: v}] = true
			}
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, n := range names {
						set[grant{group: g, resource: res, name: n, verb: v}] = true
					}
				}
			}
		}
	}
	var out []grant
	for g := range set {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.group+"/"+a.resource+"/"+a.name+"/"+a.verb < b.group+"/"+b.resource+"/"+b.name+"/"+b.verb
	})
	return out
}

// generatedRules reads config/rbac/role.yaml, written by controller-gen from
// the kubebuilder markers.
func generatedRules(t testing.TB) []rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(configDir, "rbac", "role.yaml"))
	if err != nil {
		t.Fatalf("config/rbac/role.yaml: %v (run `make manifests`)", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var rules []rbacv1.PolicyRule
	for {
		var cr rbacv1.ClusterRole
		if err := dec.Decode(&cr); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if cr.Kind == "ClusterRole" && cr.Name == "manager-role" {
			rules = append(rules, cr.Rules...)
		}
	}
	if len(rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no manager-role rules")
	}
	return rules
}

func diffGrants(t testing.TB, what string, got, want []grant) {
	t.Helper()
	for _, g := range want {
		if !slices.Contains(got, g) {
			t.Errorf("%s lacks %+v, which the kubebuilder markers declare", what, g)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("%s grants %+v, which no kubebuilder marker declares", what, g)
		}
	}
}

func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	want := crdFiles(t)
	got, _ := filepath.Glob(filepath.Join(chartDir, "files", "crds", "*.yaml"))
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	if !slices.Equal(names(got), names(want)) {
		t.Fatalf("chart CRDs %v differ from config/crd/bases %v: run `make manifests`", names(got), names(want))
	}
	for i := range want {
		a, _ := os.ReadFile(want[i])
		b, _ := os.ReadFile(got[i])
		if !bytes.Equal(a, b) {
			t.Errorf("charts/parley/files/crds/%s differs from config/crd/bases: run `make manifests`", filepath.Base(want[i]))
		}
	}

	// What the chart renders is the generated CRD plus the keep policy and labels.
	rendered := map[string]*unstructured.Unstructured{}
	for _, o := range find(renderChart(t, "parley-system"), "CustomResourceDefinition", "") {
		rendered[o.GetName()] = o
	}
	for _, f := range want {
		crd := readCRD(t, f)
		r, ok := rendered[crd.Name]
		if !ok {
			t.Errorf("the chart does not render CRD %s", crd.Name)
			continue
		}
		got := typed[apiextensionsv1.CustomResourceDefinition](t, r)
		if !reflect.DeepEqual(got.Spec, crd.Spec) {
			t.Errorf("the chart's rendering of CRD %s changes its spec", crd.Name)
		}
		for k, v := range crd.Annotations {
			if got.Annotations[k] != v {
				t.Errorf("CRD %s: annotation %s lost", crd.Name, k)
			}
		}
	}
}

func TestChartRBACIsTheGeneratedRole(t *testing.T) {
	// The committed template is what hack/sync-chart.sh generates now.
	tmp := filepath.Join(t.TempDir(), "_rbac_rules.tpl")
	cmd := exec.Command("go", "run", "./hack/chartrbac", "-in", "config/rbac/role.yaml", "-out", tmp)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/chartrbac: %v\n%s", err, out)
	}
	want, _ := os.ReadFile(tmp)
	got, err := os.ReadFile(filepath.Join(chartDir, "templates", "_rbac_rules.tpl"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("charts/parley/templates/_rbac_rules.tpl is not what config/rbac/role.yaml generates (%v): run `make manifests`", err)
	}

	wantGrants := grants(generatedRules(t))

	// Cluster-wide: one ClusterRole with every generated rule.
	objs := renderChart(t, "parley-system")
	cr := typed[rbacv1.ClusterRole](t, one(t, objs, "ClusterRole", "parley-manager"))
	diffGrants(t, "the chart's ClusterRole", grants(cr.Rules), wantGrants)

	// Namespaced: each watched namespace's Role plus the cluster-scoped rest.
	objs = renderChart(t, "parley-system", "--set", "watchNamespaces={team-a,team-b}")
	for _, ns := range []string{"team-a", "team-b"} {
		var rules []rbacv1.PolicyRule
		for _, r := range find(objs, "Role", "parley-manager") {
			if r.GetNamespace() == ns {
				rules = append(rules, typed[rbacv1.Role](t, r).Rules...)
			}
		}
		if len(rules) == 0 {
			t.Errorf("no manager Role in watched namespace %s", ns)
		}
		for _, c := range find(objs, "ClusterRole", "parley-manager-cluster") {
			rules = append(rules, typed[rbacv1.ClusterRole](t, c).Rules...)
		}
		diffGrants(t, "the chart's Role in "+ns+" with the cluster-scoped ClusterRole", grants(rules), wantGrants)
	}
}

// TestKustomizeRBACIsTheGeneratedRole checks the kustomize bundle grants the
// same: the generated role, bound to the operator's ServiceAccount.
func TestKustomizeRBACIsTheGeneratedRole(t *testing.T) {
	objs := kustomizeBuild(t, filepath.Join(configDir, "default"))
	cr := typed[rbacv1.ClusterRole](t, one(t, objs, "ClusterRole", "parley-manager-role"))
	diffGrants(t, "config/default's ClusterRole", grants(cr.Rules), grants(generatedRules(t)))
	crb := typed[rbacv1.ClusterRoleBinding](t, one(t, objs, "ClusterRoleBinding", "parley-manager-rolebinding"))
	if crb.RoleRef.Name != "parley-manager-role" || len(crb.Subjects) != 1 ||
		crb.Subjects[0].Name != "parley-controller-manager" || crb.Subjects[0].Namespace != "parley-system" {
		t.Errorf("ClusterRoleBinding: %+v", crb)
	}
	if !strings.HasPrefix(crb.Subjects[0].Name, "parley-") {
		t.Error("namePrefix not applied to the subject")
	}
}

// TestCommittedChartIsGenerated runs in CI (CI=true), after `make test` has
// run `make manifests` in a fresh clone: any difference between the commit's
// chart and the regenerated one means the commit carries a stale chart (one
// `helm package` would ship). Commit the files `make manifests` writes.
func TestCommittedChartIsGenerated(t *testing.T) {
	if os.Getenv("CI") != "true" {
		t.Skip("CI only: in a shared work tree, uncommitted API changes regenerate the chart before they are committed")
	}
	cmd := exec.Command("git", "status", "--porcelain", "--", "charts/parley/files/crds", "charts/parley/files/alerts", "charts/parley/templates/_rbac_rules.tpl", "config/crd/bases", "config/rbac/role.yaml")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git status: %v\n%s", err, out)
	}
	if len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("`make manifests` changed committed files; commit them:\n%s", out)
	}
}

// TestChartAlertsAreTheTestedOnes: the chart's PrometheusRule holds exactly
// the operator rules internal/alerts serves and the promtool tests run.
func TestChartAlertsAreTheTestedOnes(t *testing.T) {
	copied, err := os.ReadFile(filepath.Join(chartDir, "files", "alerts", "operator.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(copied, alerts.Operator()) {
		t.Error("charts/parley/files/alerts/operator.rules.yaml differs from internal/alerts/operator.rules.yaml: run `make manifests`")
	}
	if got := find(renderChart(t, "parley-system"), "PrometheusRule", ""); len(got) > 0 {
		t.Error("a PrometheusRule is rendered with prometheusRule.enabled=false (the default)")
	}
	rule := one(t, renderChart(t, "parley-system", "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=prometheus"), "PrometheusRule", "parley")
	want, err := alerts.Groups(alerts.Operator())
	if err != nil {
		t.Fatal(err)
	}
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	if !reflect.DeepEqual(groups, want) || rule.GetLabels()["release"] != "prometheus" {
		t.Errorf("the chart's PrometheusRule (labels %v) is not internal/alerts' operator rules", rule.GetLabels())
	}
}
