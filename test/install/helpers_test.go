// Package install tests the ways platform teams install Parley: the Helm chart
// (charts/parley), the kustomize bundle (config/) and the container image
// (Dockerfile). Every path must produce the same operator with the same
// least-privilege permissions, and the chart must not drift from `make manifests`.
package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/parley-chat/parley/internal/testenv"
)

// helmVersion is the Helm the Makefile builds (HELM_VERSION).
const helmVersion = "v3.22.0"

// kubeVersion is the Kubernetes version the chart is rendered for (K8S_VERSION).
const kubeVersion = "1.37.2"

var (
	root      = testenv.RepoRoot()
	chartDir  = filepath.Join(root, "charts", "parley")
	configDir = filepath.Join(root, "config")
)

// helmBinary finds bin/helm-<version>: in $PARLEY_BIN (set by `make test`) or
// in bin/ under the repository root.
func helmBinary(t testing.TB) string {
	t.Helper()
	name := "helm-" + helmVersion
	var tried []string
	for _, dir := range []string{os.Getenv("PARLEY_BIN"), filepath.Join(root, "bin")} {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
		tried = append(tried, p)
	}
	t.Fatalf("helm %s not found (tried %s): run `make helm` (make test builds it), which runs `go install helm.sh/helm/v3/cmd/helm@%s` into bin/",
		helmVersion, strings.Join(tried, ", "), helmVersion)
	return ""
}

// runHelm runs helm with a private configuration (no user repositories or
// kubeconfig leak in) and returns its combined output.
func runHelm(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Dir = root
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"HELM_CONFIG_HOME=" + filepath.Join(home, "config"),
		"HELM_CACHE_HOME=" + filepath.Join(home, "cache"),
		"HELM_DATA_HOME=" + filepath.Join(home, "data"),
		"KUBECONFIG=" + filepath.Join(home, "no-kubeconfig"),
	}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helm: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("helm %s timed out; output:\n%s", strings.Join(args, " "), out.String())
		return "", ctx.Err()
	}
}

// renderChart runs `helm template` for release "parley" in namespace ns and
// returns the objects, failing the test if helm fails.
func renderChart(t testing.TB, ns string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := templateChart(t, ns, args...)
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return decodeObjects(t, []byte(out))
}

func templateChart(t testing.TB, ns string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"template", "parley", chartDir, "--namespace", ns, "--kube-version", kubeVersion}, args...)
	return runHelm(t, nil, full...)
}

// decodeObjects splits a multi-document YAML stream into objects.
func decodeObjects(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode manifests: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	return objs
}

// kustomizeBuild builds a kustomization directory with the kustomize library
// (what `kubectl apply -k` runs).
func kustomizeBuild(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, y)
}

// find returns the objects of a kind (and name, when not empty).
func find(objs []*unstructured.Unstructured, kind, name string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			out = append(out, o)
		}
	}
	return out
}

// one returns the single object of a kind (and name), failing otherwise.
func one(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	got := find(objs, kind, name)
	if len(got) != 1 {
		t.Fatalf("want exactly one %s %q, got %d (objects: %s)", kind, name, len(got), describe(objs))
	}
	return got[0]
}

func describe(objs []*unstructured.Unstructured) string {
	var s []string
	for _, o := range objs {
		n := o.GetName()
		if o.GetNamespace() != "" {
			n = o.GetNamespace() + "/" + n
		}
		s = append(s, o.GetKind()+" "+n)
	}
	return strings.Join(s, ", ")
}

// startAPIServer starts a real kube-apiserver and etcd (envtest). With
// crdDirs, those CRDs are installed first; without, the API server has none,
// so a Helm release can own the ones it installs.
func startAPIServer(t testing.TB, crdDirs ...string) (*envtest.Environment, *rest.Config) {
	t.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory: testenv.Assets(t),
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: len(crdDirs) > 0,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	return env, cfg
}

// crdFiles lists config/crd/bases, failing clearly while it does not exist yet.
func crdFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(configDir, "crd", "bases", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: run `make manifests`")
	}
	return files
}

// readCRD reads a CRD file.
func readCRD(t testing.TB, path string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096).Decode(crd); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return crd
}

// makeVariable reads `NAME ?= value` or `NAME := value` from the Makefile.
func makeVariable(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*[?:]?=\s*(.*)$`)
	m := re.FindSubmatch(data)
	if m == nil {
		t.Fatalf("Makefile has no variable %s", name)
	}
	return strings.TrimSpace(string(m[1]))
}

func mustNested[T any](t testing.TB, obj map[string]any, path ...string) T {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(obj, path...)
	if err != nil || !ok {
		t.Fatalf("field %s missing (%v)", strings.Join(path, "."), err)
	}
	typed, ok := v.(T)
	if !ok {
		t.Fatalf("field %s is %T, want %T", strings.Join(path, "."), v, *new(T))
	}
	return typed
}
