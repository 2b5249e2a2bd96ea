package resource

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"encoding/json"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
)

// update rewrites the golden files from what the builders produce now:
//
//	go test ./internal/resource -run TestGolden -update
var update = flag.Bool("update", false, "rewrite internal/resource/testdata/golden from the builders' output")

const (
	samplesDir = "../../config/samples"
	crdFile    = "../../config/crd/bases/chat.parley.io_chatclusters.yaml"
	goldenDir  = "testdata/golden"
	// goldenImage stands for the operator's default chat server image; the
	// golden files show where it lands, not which release it is.
	goldenImage = "registry.example.org/parley/parley:golden"
	// goldenNamespace is the namespace the samples are rendered in.
	goldenNamespace = "chat"
)

const goldenHeader = `# Golden file: what the operator renders for this sample (internal/resource/golden_test.go).
# Rewrite with: go test ./internal/resource -run TestGolden -update
# A change to a Deployment's spec.template or to the config's meaning restarts every chat pod
# of every ChatCluster like this one at the operator upgrade: it needs a line in docs/upgrading.md.
`

// TestGoldenChildrenOfTheSamples renders every child of every sample
// ChatCluster (as the API server stores it: the CRD's defaults applied) and
// compares it with the reviewed file. A difference is either a bug or a
// deliberate change to review: the Deployment's spec.template decides
// whether the pods roll at the upgrade.
func TestGoldenChildrenOfTheSamples(t *testing.T) {
	samples := loadSamples(t)
	if len(samples) == 0 {
		t.Fatal("no ChatCluster in " + samplesDir)
	}
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			children, err := renderChildren(goldenCluster(s.cc))
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(goldenDir, s.name)
			if *update {
				writeGolden(t, dir, children)
				return
			}
			compareGolden(t, dir, children)
		})
	}
}

// TestGoldenPodTemplatesAreInTheUpgradeNotes makes a pod-restarting change
// impossible to merge silently: the digest of each sample's pod template
// must be written in docs/upgrading.md, so changing the template means
// adding the line that tells users their pods will restart.
func TestGoldenPodTemplatesAreInTheUpgradeNotes(t *testing.T) {
	notes, err := os.ReadFile("../../docs/upgrading.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range loadSamples(t) {
		digest, err := podTemplateDigest(goldenCluster(s.cc))
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("`%s`: `%s`", s.name, digest)
		if !bytes.Contains(notes, []byte(line)) {
			t.Errorf("docs/upgrading.md does not list %s: the pod template of sample %s changed, so every pod "+
				"like it restarts at the upgrade; say so in docs/upgrading.md (see \"Changes that restart pods\") with that digest",
				line, s.name)
		}
	}
}

// podTemplateDigest digests what decides whether a Deployment rolls: its
// pod template, config hash included.
func podTemplateDigest(c Cluster) (string, error) {
	d, err := (&DeploymentBuilder{c}).Desired()
	if err != nil {
		return "", err
	}
	return hashJSON(d.Spec.Template)
}

type sample struct {
	name string // the sample file's name without .yaml
	cc   *v1alpha1.ChatCluster
}

// loadSamples reads the ChatClusters of config/samples with the CRD's
// defaults applied, the way the API server would store them.
func loadSamples(t *testing.T) []sample {
	t.Helper()
	schema := chatClusterSchema(t)
	files, err := filepath.Glob(filepath.Join(samplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []sample
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for doc := range strings.SplitSeq(string(data), "\n---") {
			u := map[string]any{}
			if err := yaml.Unmarshal([]byte(doc), &u); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if u["kind"] != "ChatCluster" {
				continue
			}
			if err := applyDefaults(u, schema); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			cc := &v1alpha1.ChatCluster{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, cc); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			cc.Namespace = goldenNamespace
			out = append(out, sample{name: strings.TrimSuffix(filepath.Base(f), ".yaml"), cc: cc})
		}
	}
	return out
}

func chatClusterSchema(t *testing.T) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	data, err := os.ReadFile(crdFile)
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(data, crd); err != nil {
		t.Fatal(err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name == v1alpha1.GroupVersion.Version {
			return v.Schema.OpenAPIV3Schema
		}
	}
	t.Fatalf("%s has no version %s", crdFile, v1alpha1.GroupVersion.Version)
	return nil
}

// applyDefaults fills in the schema's defaults the way the API server's
// structural defaulting does: a missing property with a default gets it
// (and the default itself is then defaulted), recursively through objects,
// array items and map values.
func applyDefaults(x any, s *apiextensionsv1.JSONSchemaProps) error {
	if s == nil {
		return nil
	}
	switch v := x.(type) {
	case map[string]any:
		for name, prop := range s.Properties {
			if _, ok := v[name]; !ok && prop.Default != nil {
				var d any
				if err := json.Unmarshal(prop.Default.Raw, &d); err != nil {
					return fmt.Errorf("default of %s: %w", name, err)
				}
				v[name] = d
			}
			if err := applyDefaults(v[name], &prop); err != nil {
				return err
			}
		}
		if ap := s.AdditionalProperties; ap != nil && ap.Schema != nil {
			for name, val := range v {
				if _, known := s.Properties[name]; !known {
					if err := applyDefaults(val, ap.Schema); err != nil {
						return err
					}
				}
			}
		}
	case []any:
		if s.Items != nil && s.Items.Schema != nil {
			for _, item := range v {
				if err := applyDefaults(item, s.Items.Schema); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// goldenCluster is what the reconciler would hand the builders for the
// sample: fixed Secrets (the URIs the broker and database Secrets would
// hold) and the Prometheus Operator's kinds installed, so every child shows
// (a PrometheusRule only where the sample turns it on).
func goldenCluster(cc *v1alpha1.ChatCluster) Cluster {
	c := Cluster{ChatCluster: cc, DefaultImage: goldenImage, ClusterDomain: DefaultClusterDomain, ServiceMonitorAvailable: true, PrometheusRuleAvailable: true}
	data := map[string]map[string][]byte{}
	for _, r := range SecretReferences(c) {
		if data[r.Name] == nil {
			data[r.Name] = map[string][]byte{}
		}
		data[r.Name][r.Key] = []byte("value of " + r.Name + "/" + r.Key)
	}
	c.SecretsHash = SecretsHash(SecretReferences(c), data)
	return c
}

// renderChildren builds every wanted child of c, as YAML by file name
// (<kind>.yaml, lower case).
func renderChildren(c Cluster) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, b := range Builders(c) {
		if opt, ok := b.(Optional); ok && !opt.Wanted() {
			continue
		}
		obj, err := b.Build()
		if err != nil {
			return nil, err
		}
		if err := b.Update(obj); err != nil {
			return nil, err
		}
		kind := obj.GetObjectKind().GroupVersionKind()
		if _, ok := obj.(*unstructured.Unstructured); !ok {
			gvks, _, err := clientgoscheme.Scheme.ObjectKinds(obj)
			if err != nil {
				return nil, err
			}
			kind = gvks[0]
			obj.GetObjectKind().SetGroupVersionKind(kind)
		}
		data, err := yaml.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind.Kind, err)
		}
		out[strings.ToLower(kind.Kind)+".yaml"] = append([]byte(goldenHeader), data...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no child for %s", naming.ChildResourceName(c.ChatCluster.Name, ""))
	}
	return out, nil
}

func writeGolden(t *testing.T, dir string, children map[string][]byte) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range children {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func compareGolden(t *testing.T, dir string, children map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("%v (write the golden files with -update)", err)
	}
	var onDisk []string
	for _, e := range entries {
		onDisk = append(onDisk, e.Name())
	}
	for name, got := range children {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: no golden file: the builders now create this child (review it, then -update)", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (review, then -update):\n%s", name, filepath.Join(dir, name), lineDiff(string(want), string(got)))
		}
	}
	for _, name := range onDisk {
		if _, ok := children[name]; !ok {
			t.Errorf("%s: the builders no longer create this child (review, then -update)", name)
		}
	}
	slices.Sort(onDisk)
}

// lineDiff lists the lines only in want (-) and only in got (+), in order:
// enough to see what changed without a diff library.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			i++
			j++
		case j < len(g) && !slices.Contains(w[i:], g[j]):
			fmt.Fprintf(&b, "+ %s\n", g[j])
			j++
		case i < len(w):
			fmt.Fprintf(&b, "- %s\n", w[i])
			i++
		default:
			fmt.Fprintf(&b, "+ %s\n", g[j])
			j++
		}
	}
	return b.String()
}
