package kubectl

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/parley-chat/parley/internal/testenv"
)

// operatorSA is the identity config/default runs the operator as.
const operatorSA = "system:serviceaccount:parley-system:parley-controller-manager"

// testApplyKustomize: `kubectl apply -k config/default` (kubectl's built-in
// kustomize) installs the operator bundle; `--dry-run=server` accepts every
// object first. Server dry-run persists nothing, so the namespace the bundle
// creates does not exist for the objects that go into it: like every bundle
// that carries its own namespace, the dry-run needs that namespace to exist
// (on a fresh cluster it reports `namespaces "parley-system" not found` for
// each of them, which is kubectl's behaviour, not the bundle's). The test
// creates it first, as a user checking a cluster would.
//
// The default overlay needs nothing envtest lacks: no cert-manager (there
// is no webhook) and no Prometheus Operator (config/prometheus is opt-in).
func testApplyKustomize(t *testing.T, e *env) {
	dir := filepath.Join(testenv.RepoRoot(), "config", "default")
	objs := decode(t, e.must(t, "kustomize", dir))
	if len(objs) < 10 {
		t.Fatalf("kubectl kustomize config/default rendered %d objects: %s", len(objs), kinds(objs))
	}

	e.must(t, "create", "namespace", "parley-system")
	out := e.must(t, "apply", "-k", dir, "--dry-run=server")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(objs) {
		t.Errorf("the server dry-run reported %d objects, the bundle has %d (%s):\n%s", len(lines), len(objs), kinds(objs), out)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "(server dry run)") {
			t.Errorf("not a server dry run: %q", l)
		}
	}
	if got := e.run(t, "get", "deployment", "-n", "parley-system", "parley-controller-manager"); got.err == nil {
		t.Fatalf("the dry run created the operator Deployment:\n%s", got)
	}

	// The real install, then a second apply that changes nothing: every
	// object keeps its resourceVersion. (kubectl still prints "configured"
	// for the PodDisruptionBudget: policy/v1's selector has the "replace"
	// patch strategy, so client-side apply always sends it again; the server
	// finds nothing to change.)
	e.must(t, "apply", "-k", dir)
	versions := func() string {
		return e.must(t, "get", "-k", dir, "-o", `jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion} {end}`)
	}
	before := versions()
	if n := len(strings.Fields(before)); n != len(objs) {
		t.Errorf("kubectl get -k config/default after the install found %d of %d objects: %s", n, len(objs), before)
	}
	e.must(t, "apply", "-k", dir)
	if after := versions(); after != before {
		t.Errorf("a second kubectl apply -k changed objects:\nbefore %s\nafter  %s", before, after)
	}
	if sa := e.must(t, "get", "deployment", "-n", "parley-system", "parley-controller-manager",
		"-o", "jsonpath={.spec.template.spec.serviceAccountName}"); sa != "parley-controller-manager" {
		t.Errorf("the operator runs as service account %q", sa)
	}
	// The installed RBAC lets the operator's identity do its work and no more.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"update", "chatclusters.chat.parley.io", "--subresource=status", "-n", "team-a"}, "yes"},
		{[]string{"create", "deployments.apps", "-n", "team-a"}, "yes"},
		{[]string{"create", "pods", "-n", "team-a"}, "no"},
		{[]string{"delete", "chatclusters.chat.parley.io", "-n", "team-a"}, "no"},
	} {
		r := e.run(t, append(append([]string{"auth", "can-i"}, c.args...), "--as="+operatorSA)...)
		if got := strings.TrimSpace(r.stdout); got != c.want {
			t.Errorf("kubectl auth can-i %s as the installed operator = %q, want %s\n%s", strings.Join(c.args, " "), got, c.want, r)
		}
	}
}

func decode(t *testing.T, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(manifests)), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decode kubectl kustomize output: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

func kinds(objs []*unstructured.Unstructured) string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetKind()+" "+o.GetName())
	}
	return strings.Join(s, ", ")
}
