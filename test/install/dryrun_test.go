package install

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/resource"
)

// serviceMonitorCRDDir returns a directory holding the Prometheus Operator's
// ServiceMonitor CRD, generated from its API types by hack/servicemonitor-crd.sh.
func serviceMonitorCRDDir(t testing.TB) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "hack", "servicemonitor-crd.sh"))
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/servicemonitor-crd.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// dryRunApply server-side applies every object with dryRun=All and strict
// field validation, so the real API server checks schemas, CRD validation
// (OpenAPI and CEL), defaulting and RBAC escalation rules, without persisting.
// The namespaces the objects live in are created for real first.
func dryRunApply(t *testing.T, cfg *rest.Config, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery.NewDiscoveryClientForConfigOrDie(cfg)))

	var namespaces []string
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" && !slices.Contains(namespaces, ns) {
			namespaces = append(namespaces, ns)
		}
	}
	for _, ns := range namespaces {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}

	applied := 0
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s %s: the API server does not serve %s: %v", gvk.Kind, o.GetName(), gvk, err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if o.GetNamespace() == "" {
				t.Errorf("%s %s is namespaced but has no namespace", gvk.Kind, o.GetName())
				continue
			}
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		} else if o.GetNamespace() != "" {
			t.Errorf("%s %s is cluster-scoped but names namespace %s", gvk.Kind, o.GetName(), o.GetNamespace())
		}
		data, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
			DryRun:          []string{metav1.DryRunAll},
			FieldManager:    "parley-install-test",
			Force:           ptr.To(true),
			FieldValidation: "Strict",
		})
		if err != nil {
			t.Errorf("server-side dry-run apply of %s %s/%s refused: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
			continue
		}
		applied++
	}
	if applied != len(objs) {
		t.Errorf("dry-run applied %d of %d objects", applied, len(objs))
	}
}

func TestServerSideDryRun(t *testing.T) {
	_, cfg := startAPIServer(t, filepath.Join(configDir, "crd", "bases"), serviceMonitorCRDDir(t))

	t.Run("chart defaults", func(t *testing.T) {
		dryRunApply(t, cfg, renderChart(t, "parley-system"))
	})
	t.Run("chart full values", func(t *testing.T) {
		objs := renderChart(t, "chat-operators", "--values", filepath.Join(root, "test/install/testdata/values-full.yaml"), "--set", "crds.install=true")
		if len(find(objs, "ChatCluster", "")) != 1 {
			t.Fatal("the full values must render the optional ChatCluster")
		}
		dryRunApply(t, cfg, objs)
	})
	t.Run("operator-rendered PrometheusRule", func(t *testing.T) {
		// What the operator writes for a ChatCluster with
		// spec.monitoring.prometheusRule on, against the real CRD's schema.
		cc := &v1alpha1.ChatCluster{ObjectMeta: metav1.ObjectMeta{Name: "team-chat", Namespace: "parley-samples"}}
		cc.Spec.Monitoring.PrometheusRule = v1alpha1.PrometheusRuleSpec{Enabled: ptr.To(true), Labels: map[string]string{"release": "prometheus"}}
		b := &resource.PrometheusRuleBuilder{Cluster: resource.Cluster{ChatCluster: cc, PrometheusRuleAvailable: true}}
		obj, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Update(obj); err != nil {
			t.Fatal(err)
		}
		dryRunApply(t, cfg, []*unstructured.Unstructured{obj.(*unstructured.Unstructured)})
	})
	t.Run("kustomize default", func(t *testing.T) {
		dryRunApply(t, cfg, kustomizeBuild(t, filepath.Join(configDir, "default")))
	})
	for _, dir := range []string{"network-policy", "prometheus", "samples"} {
		t.Run("kustomize "+dir, func(t *testing.T) {
			objs := kustomizeBuild(t, filepath.Join(configDir, dir))
			for _, o := range objs {
				if o.GetNamespace() == "system" || (o.GetNamespace() == "" && o.GetKind() != "ChatCluster" && o.GetKind() != "ChatBackend") {
					// Overlay pieces are written for config/default's namespace.
					o.SetNamespace("parley-system")
				}
				if o.GetKind() == "ChatCluster" && o.GetNamespace() == "" {
					o.SetNamespace("parley-samples")
				}
			}
			dryRunApply(t, cfg, objs)
		})
	}
}
