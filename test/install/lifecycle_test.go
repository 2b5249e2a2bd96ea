package install

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
)

var chatClusterGVR = schema.GroupVersionResource{Group: "chat.parley.io", Version: "v1alpha1", Resource: "chatclusters"}

// TestHelmReleaseLifecycle installs, upgrades and uninstalls the chart with
// the real helm against a real API server: the CRD is installed with the
// release and kept after it; the optional ChatCluster is created once and
// survives upgrades and uninstalls; the ChatCluster NOTES.txt tells users to
// create is valid.
func TestHelmReleaseLifecycle(t *testing.T) {
	env, cfg := startAPIServer(t) // no CRDs: the release installs them
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	helmEnv := []string{"KUBECONFIG=" + kubeconfig}
	helm := func(args ...string) string {
		t.Helper()
		out, err := runHelm(t, helmEnv, args...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)
	ext := apiextensionsclient.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	const ns, crdName = "parley-system", "chatclusters.chat.parley.io"

	// 1. Install: CRD, operator, RBAC. NOTES explain how to create a ChatCluster.
	notes := helm("install", "parley", chartDir, "--namespace", ns, "--create-namespace")
	crd, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crdName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the release did not install the CRD: %v", err)
	}
	if crd.Annotations["helm.sh/resource-policy"] != "keep" || crd.Annotations["meta.helm.sh/release-name"] != "parley" {
		t.Errorf("CRD annotations %v: want the keep policy, owned by release parley", crd.Annotations)
	}
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "parley", metav1.GetOptions{}); err != nil {
		t.Errorf("operator Deployment: %v", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "parley-manager", metav1.GetOptions{}); err != nil {
		t.Errorf("manager ClusterRole: %v", err)
	}
	waitEstablished(ctx, t, ext, crdName)

	// The ChatCluster in NOTES.txt passes the CRD's validation.
	example := regexp.MustCompile(`(?s)kubectl apply -f - <<'YAML'\n(.*?)\n\s*YAML\n`).FindStringSubmatch(notes)
	if example == nil {
		t.Fatalf("NOTES.txt shows no ChatCluster to apply:\n%s", notes)
	}
	objs := decodeObjects(t, []byte(dedent(example[1])))
	if len(objs) != 1 || objs[0].GetKind() != "ChatCluster" {
		t.Fatalf("NOTES.txt example is not one ChatCluster: %s", describe(objs))
	}
	dryRunApply(t, cfg, objs)

	// 2. Uninstall: everything goes except the CRD.
	helm("uninstall", "parley", "--namespace", ns)
	if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crdName, metav1.GetOptions{}); err != nil {
		t.Fatalf("uninstall deleted the CRD (and with it every ChatCluster): %v", err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "parley", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("uninstall left the operator Deployment: %v", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "parley-manager", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("uninstall left the manager ClusterRole: %v", err)
	}

	// 3. Reinstall with a ChatCluster (the kept CRD is adopted again).
	helm("install", "parley", chartDir, "--namespace", ns,
		"--set", "chatCluster.create=true", "--set", "chatCluster.name=first-chat")
	cc, err := dyn.Resource(chatClusterGVR).Namespace(ns).Get(ctx, "first-chat", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("chatCluster.create=true created no ChatCluster: %v", err)
	}
	uid := cc.GetUID()

	// 4. Upgrade: the ChatCluster is left alone.
	helm("upgrade", "parley", chartDir, "--namespace", ns, "--reuse-values", "--set", "replicaCount=3")
	dep, err := cs.AppsV1().Deployments(ns).Get(ctx, "parley", metav1.GetOptions{})
	if err != nil || *dep.Spec.Replicas != 3 {
		t.Errorf("upgrade did not apply replicaCount=3: %v", err)
	}
	cc, err = dyn.Resource(chatClusterGVR).Namespace(ns).Get(ctx, "first-chat", metav1.GetOptions{})
	if err != nil || cc.GetUID() != uid {
		t.Errorf("upgrade replaced or deleted the ChatCluster (err %v)", err)
	}

	// 5. Uninstall: the ChatCluster and its data stay.
	helm("uninstall", "parley", "--namespace", ns)
	if cc, err = dyn.Resource(chatClusterGVR).Namespace(ns).Get(ctx, "first-chat", metav1.GetOptions{}); err != nil || cc.GetUID() != uid {
		t.Errorf("uninstall deleted the ChatCluster: %v", err)
	}
}

func waitEstablished(ctx context.Context, t *testing.T, ext apiextensionsclient.Interface, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crd, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("CRD %s not established: %v", name, err)
	}
}

// dedent removes the common leading indentation of a block.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " "))
		if indent < 0 || n < indent {
			indent = n
		}
	}
	for i, l := range lines {
		if len(l) >= indent {
			lines[i] = l[indent:]
		}
	}
	return strings.Join(lines, "\n")
}
