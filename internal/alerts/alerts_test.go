package alerts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// repoRoot is the repository's top directory (this file is internal/alerts/alerts_test.go).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// promtool returns the pinned promtool the Makefile builds into bin/
// (PROMTOOL overrides), building it with `make promtool` when it is missing.
// Only when it cannot be built is the test skipped, saying why.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	root := repoRoot(t)
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^PROMTOOL_VERSION \?= (\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile pins no PROMTOOL_VERSION")
	}
	bin := filepath.Join(root, "bin", "promtool-"+string(m[1]))
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	out, err := exec.Command("make", "-C", root, "promtool").CombinedOutput()
	if err != nil {
		t.Skipf("promtool %s is not in bin/ and `make promtool` could not build it (%v); the alerting rules are untested:\n%s", m[1], err, out)
	}
	return bin
}

// TestRulesWithPromtool runs Prometheus's own rule tester on the rules as the
// operator renders them (ChatCluster) and as the chart installs them
// (Operator): `promtool check rules`, then `promtool test rules` with the
// series and expected alerts in testdata/.
func TestRulesWithPromtool(t *testing.T) {
	bin := promtool(t)
	dir := t.TempDir()
	files := map[string][]byte{
		"chatcluster.rules.yaml": ChatCluster("team", "chat"),
		"operator.rules.yaml":    Operator(),
	}
	for _, name := range []string{"chatcluster.test.yaml", "operator.test.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), bytes.TrimSpace(out))
	}
	run("check", "rules", "chatcluster.rules.yaml", "operator.rules.yaml")
	run("test", "rules", "chatcluster.test.yaml", "operator.test.yaml")
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Annotations map[string]string `json:"annotations"`
			Labels      map[string]string `json:"labels"`
		} `json:"rules"`
	} `json:"groups"`
}

// Every alert has a severity, a runbook section in docs/operations.md that
// its runbook_url points at, and at least one promtool test case that
// expects it to fire.
func TestEveryAlertHasARunbookAndATest(t *testing.T) {
	runbooks, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rules    []byte
		testFile string
	}{
		{ChatCluster("team", "chat"), "chatcluster.test.yaml"},
		{Operator(), "operator.test.yaml"},
	} {
		var f ruleFile
		if err := yaml.UnmarshalStrict(tc.rules, &f); err != nil {
			t.Fatal(err)
		}
		tests, err := os.ReadFile(filepath.Join("testdata", tc.testFile))
		if err != nil {
			t.Fatal(err)
		}
		var alerts []string
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				alerts = append(alerts, r.Alert)
				if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
					t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
				}
				if want := RunbookBase + "#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
					t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
				}
				if !regexp.MustCompile(`(?m)^### ` + r.Alert + `$`).Match(runbooks) {
					t.Errorf("%s: docs/operations.md has no section \"### %s\"", r.Alert, r.Alert)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: summary and description are required", r.Alert)
				}
				if !regexp.MustCompile(`alertname: ` + r.Alert + `\n\s+exp_alerts:\n\s+- exp_labels`).Match(tests) {
					t.Errorf("%s: no test case in testdata/%s expects it to fire", r.Alert, tc.testFile)
				}
			}
		}
		if len(alerts) == 0 {
			t.Errorf("%s: no alerts", tc.testFile)
		}
	}
}

// The rendered rules name the cluster everywhere the template has a
// placeholder, and select nothing but its own series.
func TestChatClusterRulesAreTheClusters(t *testing.T) {
	rules := string(ChatCluster("ns-a", "chat-b"))
	if strings.Contains(rules, "__") {
		t.Errorf("a placeholder is left:\n%s", rules)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict([]byte(rules), &f); err != nil {
		t.Fatal(err)
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Labels["namespace"] != "ns-a" || r.Labels["chatcluster"] != "chat-b" {
				t.Errorf("%s: labels %v", r.Alert, r.Labels)
			}
		}
	}
	if n, sel := strings.Count(rules, "parley_"), strings.Count(rules, `{namespace="ns-a",service="chat-b"`); n != sel {
		t.Errorf("%d metric selectors, %d of them select the cluster's Service", n, sel)
	}
	if _, err := Groups(ChatCluster("ns-a", "chat-b")); err != nil {
		t.Error(err)
	}
	if _, err := Groups([]byte("groups: []")); err == nil {
		t.Error("an empty rule file parsed")
	}
}
