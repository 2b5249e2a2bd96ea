package install

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestToolVersionsMatchTheMakefile(t *testing.T) {
	if got := makeVariable(t, "HELM_VERSION"); got != helmVersion {
		t.Errorf("Makefile HELM_VERSION = %s, the tests use %s", got, helmVersion)
	}
	if got := makeVariable(t, "K8S_VERSION"); got != kubeVersion {
		t.Errorf("Makefile K8S_VERSION = %s, the tests render the chart for %s", got, kubeVersion)
	}
}

func TestHelmLintPassesWithDefaultAndFullValues(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--values", filepath.Join(root, "test/install/testdata/values-full.yaml")},
	} {
		out, err := runHelm(t, nil, append([]string{"lint", "--strict", chartDir, "--kube-version", kubeVersion}, args...)...)
		if err != nil {
			t.Errorf("helm lint --strict %v: %v\n%s", args, err, out)
		}
	}
}

// typed converts an unstructured object into its Go type, refusing unknown fields.
func typed[T any](t testing.TB, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// argMap parses --name=value arguments.
func argMap(t testing.TB, args []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("argument %q is not --name=value", a)
			continue
		}
		if _, dup := m[name]; dup {
			t.Errorf("argument --%s given twice", name)
		}
		m[name] = value
	}
	return m
}

// checkHardened asserts the pod runs as the issue demands: non-root, read-only
// root filesystem, no capabilities, no privilege escalation, RuntimeDefault seccomp.
func checkHardened(t testing.TB, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || ptr.Deref(psc.RunAsUser, 0) == 0 {
		t.Errorf("pod securityContext must run as a non-root uid: %+v", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile must be RuntimeDefault: %+v", psc)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container has no securityContext")
	case !ptr.Deref(sc.ReadOnlyRootFilesystem, false):
		t.Error("container root filesystem must be read-only")
	case ptr.Deref(sc.AllowPrivilegeEscalation, true):
		t.Error("container must not allow privilege escalation")
	case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("container must drop ALL capabilities and add none: %+v", sc.Capabilities)
	case ptr.Deref(sc.Privileged, false):
		t.Error("container must not be privileged")
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("container seccompProfile must be RuntimeDefault")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe must GET /healthz: %+v", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe must GET /readyz: %+v", c.ReadinessProbe)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("container needs cpu/memory requests and a memory limit: %+v", c.Resources)
	}
	if !reflect.DeepEqual(c.Command, []string{"/manager"}) {
		t.Errorf("command = %v, want [/manager] (the image holds /manager and /chatserver)", c.Command)
	}
}

func TestHelmTemplateDefaults(t *testing.T) {
	const ns = "parley-system"
	objs := renderChart(t, ns)

	for _, o := range objs {
		if o.GetNamespace() != "" && o.GetNamespace() != ns {
			t.Errorf("%s %s is in namespace %s, want the release namespace %s", o.GetKind(), o.GetName(), o.GetNamespace(), ns)
		}
	}
	for _, kind := range []string{"NetworkPolicy", "ServiceMonitor", "ConfigMap", "ChatCluster"} {
		if got := find(objs, kind, ""); len(got) > 0 {
			t.Errorf("%s rendered by default; it must be opt-in", kind)
		}
	}

	dep := typed[appsv1.Deployment](t, one(t, objs, "Deployment", "parley"))
	if ptr.Deref(dep.Spec.Replicas, 0) != 2 {
		t.Errorf("replicas = %d, want 2 (leader election with a standby)", ptr.Deref(dep.Spec.Replicas, 0))
	}
	pod := dep.Spec.Template.Spec
	checkHardened(t, pod)
	if pod.ServiceAccountName != "parley" {
		t.Errorf("serviceAccountName = %q, want parley", pod.ServiceAccountName)
	}
	c := pod.Containers[0]
	if c.Image != "ghcr.io/parley-chat/parley:"+chartAppVersion(t) {
		t.Errorf("image = %q, want the chart's appVersion tag", c.Image)
	}
	args := argMap(t, c.Args)
	want := map[string]string{
		"leader-elect":              "true",
		"metrics-bind-address":      ":8443",
		"metrics-secure":            "true",
		"health-probe-bind-address": ":8081",
		"chat-server-image":         c.Image,
		"kube-api-qps":              "20",
		"kube-api-burst":            "30",
		"max-concurrent-reconciles": "8",
		"resync-period":             "10m",
		"cleanup-retry-for":         "24h",
		"cleanup-backoff":           "5s",
		"cleanup-max-backoff":       "5m",
		"external-call-timeout":     "20s",
		"external-connect-timeout":  "5s",
		"backend-concurrency":       "2",
		"unreachable-backoff":       "5s",
		"zap-log-level":             "info",
	}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("operator args:\n got %v\nwant %v", args, want)
	}
	checkFlagsExist(t, c.Args)
	// The manager puts its leader election Lease in $POD_NAMESPACE, where the
	// chart's leader election Role is.
	if len(c.Env) == 0 || c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom == nil ||
		c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("the container must get POD_NAMESPACE from metadata.namespace: %+v", c.Env)
	}

	sa := one(t, objs, "ServiceAccount", "parley")
	crb := typed[rbacv1.ClusterRoleBinding](t, one(t, objs, "ClusterRoleBinding", "parley-manager"))
	if crb.RoleRef.Name != "parley-manager" || len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa.GetName() || crb.Subjects[0].Namespace != ns {
		t.Errorf("manager ClusterRoleBinding must bind parley-manager to %s/%s: %+v", ns, sa.GetName(), crb)
	}
	le := typed[rbacv1.RoleBinding](t, one(t, objs, "RoleBinding", "parley-leader-election"))
	if le.Namespace != ns || le.RoleRef.Kind != "Role" || le.RoleRef.Name != "parley-leader-election" {
		t.Errorf("leader election binding: %+v", le)
	}
	if got := find(objs, "Role", "parley-manager"); len(got) > 0 {
		t.Error("namespaced manager Roles rendered without watchNamespaces")
	}

	svc := typed[corev1.Service](t, one(t, objs, "Service", "parley-metrics"))
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != intstr.FromString("metrics") || !reflect.DeepEqual(svc.Spec.Selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("metrics Service must select the operator pods and target the metrics port: %+v", svc.Spec)
	}
	if svc.Spec.Ports[0].Port != 8443 {
		t.Errorf("metrics Service port %d, want 8443 (HTTPS)", svc.Spec.Ports[0].Port)
	}
	// Who may scrape: a ClusterRole for GET /metrics, bound to no one by default.
	reader := typed[rbacv1.ClusterRole](t, one(t, objs, "ClusterRole", "parley-metrics-reader"))
	if len(reader.Rules) != 1 || !slices.Equal(reader.Rules[0].NonResourceURLs, []string{"/metrics"}) || !slices.Equal(reader.Rules[0].Verbs, []string{"get"}) {
		t.Errorf("metrics-reader ClusterRole: %+v", reader.Rules)
	}
	if got := find(objs, "ClusterRoleBinding", "parley-metrics-reader"); len(got) > 0 {
		t.Error("metrics-reader bound without metrics.readerSubjects")
	}
	pdb := typed[policyv1.PodDisruptionBudget](t, one(t, objs, "PodDisruptionBudget", "parley"))
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PDB must allow one voluntary disruption: %+v", pdb.Spec)
	}
	if !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels) {
		t.Errorf("PDB selector %v does not match the Deployment's %v", pdb.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels)
	}

	crds := find(objs, "CustomResourceDefinition", "")
	if len(crds) != len(crdFiles(t)) {
		t.Errorf("chart renders %d CRDs, config/crd/bases has %d", len(crds), len(crdFiles(t)))
	}
	for _, crd := range crds {
		if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep (uninstall would delete every ChatCluster)", crd.GetName())
		}
	}
}

func TestHelmTemplateFullValues(t *testing.T) {
	const ns = "chat-operators"
	objs := renderChart(t, ns, "--values", filepath.Join(root, "test/install/testdata/values-full.yaml"))

	if got := find(objs, "CustomResourceDefinition", ""); len(got) > 0 {
		t.Errorf("crds.install=false still renders %d CRDs", len(got))
	}
	dep := typed[appsv1.Deployment](t, one(t, objs, "Deployment", "chat-operator"))
	pod := dep.Spec.Template.Spec
	checkHardened(t, pod)
	c := pod.Containers[0]
	const image = "registry.example.org/platform/parley@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if c.Image != image || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image = %q (%s), want the digest reference, Always", c.Image, c.ImagePullPolicy)
	}
	if ptr.Deref(dep.Spec.Replicas, 0) != 3 || pod.ServiceAccountName != "chat-operator-sa" || len(pod.ImagePullSecrets) != 1 {
		t.Errorf("replicas/serviceAccount/imagePullSecrets not applied: %d %q %v", ptr.Deref(dep.Spec.Replicas, 0), pod.ServiceAccountName, pod.ImagePullSecrets)
	}
	if dep.Labels["team"] != "platform" || pod.Containers[0].Env[len(c.Env)-1].Name != "GOMEMLIMIT" {
		t.Errorf("commonLabels or env not applied: %v %v", dep.Labels, c.Env)
	}
	args := argMap(t, c.Args)
	for k, v := range map[string]string{
		"watch-namespaces":        "team-a,team-b",
		"chat-server-image":       "registry.example.org/platform/parley-chatserver:1.2.3",
		"metrics-bind-address":    ":9090",
		"kube-api-qps":            "50",
		"kube-api-burst":          "100",
		"zap-log-level":           "debug",
		"cluster-domain":          "k8s.example.org",
		"resync-period":           "5m",
		"cleanup-retry-for":       "2h",
		"cleanup-backoff":         "2s",
		"cleanup-max-backoff":     "1m",
		"external-call-timeout":   "45s",
		"external-check-interval": "3m",
	} {
		if args[k] != v {
			t.Errorf("--%s = %q, want %q", k, args[k], v)
		}
	}
	checkFlagsExist(t, c.Args)
	if len(c.Ports) == 0 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9090 {
		t.Errorf("metrics container port: %+v", c.Ports)
	}
	// The serving certificate from metrics.certSecret, where --metrics-cert-path looks.
	certDir := args["metrics-cert-path"]
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == "parley-metrics-tls" && m.MountPath == certDir {
				mounted = true
			}
		}
	}
	if certDir == "" || !mounted {
		t.Errorf("metrics.certSecret is not mounted at --metrics-cert-path=%q: %+v", certDir, c.VolumeMounts)
	}
	rb := typed[rbacv1.ClusterRoleBinding](t, one(t, objs, "ClusterRoleBinding", "chat-operator-metrics-reader"))
	if rb.RoleRef.Name != "chat-operator-metrics-reader" || len(rb.Subjects) != 1 || rb.Subjects[0].Name != "prometheus-k8s" {
		t.Errorf("metrics.readerSubjects binding: %+v", rb)
	}

	// watchNamespaces: a Role and RoleBinding in each watched namespace, no
	// cluster-wide grant of namespaced resources.
	roles := find(objs, "Role", "chat-operator-manager")
	var roleNS []string
	for _, r := range roles {
		roleNS = append(roleNS, r.GetNamespace())
	}
	slices.Sort(roleNS)
	if !reflect.DeepEqual(roleNS, []string{"team-a", "team-b"}) {
		t.Errorf("manager Roles in %v, want one each in team-a and team-b", roleNS)
	}
	for _, rb := range find(objs, "RoleBinding", "chat-operator-manager") {
		b := typed[rbacv1.RoleBinding](t, rb)
		if b.RoleRef.Kind != "Role" || len(b.Subjects) != 1 || b.Subjects[0].Name != "chat-operator-sa" || b.Subjects[0].Namespace != ns {
			t.Errorf("RoleBinding %s/%s: %+v", b.Namespace, b.Name, b)
		}
	}
	if got := find(objs, "ClusterRole", "chat-operator-manager"); len(got) > 0 {
		t.Error("watchNamespaces set but the cluster-wide manager ClusterRole is still rendered")
	}
	for _, cr := range find(objs, "ClusterRole", "chat-operator-manager-cluster") {
		for _, r := range typed[rbacv1.ClusterRole](t, cr).Rules {
			for _, res := range r.Resources {
				if res == "secrets" || res == "chatclusters" || res == "deployments" {
					t.Errorf("cluster-scoped ClusterRole grants namespaced %s", res)
				}
			}
		}
	}

	np := typed[networkingv1.NetworkPolicy](t, one(t, objs, "NetworkPolicy", "chat-operator"))
	if !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels) {
		t.Errorf("NetworkPolicy selects %v, want the operator pods %v", np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels)
	}
	var egressPorts []int
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			egressPorts = append(egressPorts, p.Port.IntValue())
		}
	}
	for _, p := range []int{53, 443, 6443, 5672, 5671, 5432, 8443} {
		if !slices.Contains(egressPorts, p) {
			t.Errorf("NetworkPolicy egress lacks port %d (has %v)", p, egressPorts)
		}
	}
	if len(np.Spec.Ingress) != 2 || len(np.Spec.Ingress[1].From) != 1 || np.Spec.Ingress[1].From[0].NamespaceSelector == nil {
		t.Errorf("metrics ingress must be limited to metricsFrom: %+v", np.Spec.Ingress)
	}

	sm := one(t, objs, "ServiceMonitor", "chat-operator")
	if sm.GetLabels()["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels %v lack release=prometheus", sm.GetLabels())
	}
	eps := mustNested[[]any](t, sm.Object, "spec", "endpoints")
	if ep := eps[0].(map[string]any); ep["port"] != "metrics" || ep["interval"] != "15s" || ep["scrapeTimeout"] != "5s" ||
		ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" || ep["tlsConfig"] == nil {
		t.Errorf("ServiceMonitor endpoint must scrape HTTPS with the ServiceAccount token: %v", ep)
	}

	if pr := one(t, objs, "PrometheusRule", "chat-operator"); pr.GetLabels()["release"] != "prometheus" || pr.GetNamespace() != ns {
		t.Errorf("PrometheusRule %s/%s labels %v", pr.GetNamespace(), pr.GetName(), pr.GetLabels())
	}

	cm := typed[corev1.ConfigMap](t, one(t, objs, "ConfigMap", "chat-operator-dashboard"))
	if cm.Namespace != "monitoring" || cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap in %q with labels %v", cm.Namespace, cm.Labels)
	}
	var dash map[string]any
	if err := json.Unmarshal([]byte(cm.Data["parley.json"]), &dash); err != nil || dash["uid"] != "parley-overview" {
		t.Errorf("dashboard ConfigMap does not hold the dashboard JSON: %v", err)
	}

	cc := one(t, objs, "ChatCluster", "team-chat")
	if cc.GetNamespace() != "team-a" || cc.GetAnnotations()["helm.sh/hook"] != "post-install" || cc.GetLabels()["example.org/owner"] != "team-a" {
		t.Errorf("ChatCluster: namespace %q annotations %v labels %v", cc.GetNamespace(), cc.GetAnnotations(), cc.GetLabels())
	}
	if p := cc.GetAnnotations()["helm.sh/hook-delete-policy"]; p == "" || strings.Contains(p, "before-hook-creation") {
		t.Errorf("ChatCluster hook delete policy %q would let Helm delete it", p)
	}

	pdb := typed[policyv1.PodDisruptionBudget](t, one(t, objs, "PodDisruptionBudget", "chat-operator"))
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PDB: %+v, want minAvailable 2 only", pdb.Spec)
	}
}

func TestHelmSchemaRefusesBadValues(t *testing.T) {
	for file, want := range map[string]string{
		"typo-top-level.yaml":     "additional properties 'watchNamespace' not allowed",
		"typo-nested.yaml":        "additional properties 'enable' not allowed",
		"wrong-type.yaml":         "/replicaCount",
		"bad-namespace.yaml":      "/watchNamespaces/0",
		"bad-port.yaml":           "/metrics/port",
		"bad-log-level.yaml":      "/operator/logLevel",
		"bad-digest.yaml":         "/image/digest",
		"bad-duration.yaml":       "/metrics/serviceMonitor/interval",
		"no-leader-election.yaml": "needs operator.leaderElection.enabled=true",
		"bad-cluster-domain.yaml": "/operator/clusterDomain",
		"runs-as-root.yaml":       "/podSecurityContext/runAsNonRoot",
		"privileged.yaml":         "/securityContext/privileged",
	} {
		t.Run(strings.TrimSuffix(file, ".yaml"), func(t *testing.T) {
			out, err := templateChart(t, "parley-system", "--values", filepath.Join(root, "test/install/testdata/invalid", file))
			if err == nil {
				t.Fatalf("helm template accepted %s", file)
			}
			if !strings.Contains(out, want) {
				t.Errorf("helm refused %s without naming the problem (%q):\n%s", file, want, out)
			}
		})
	}
	// Every invalid values file is in the table above.
	files, _ := filepath.Glob(filepath.Join(root, "test/install/testdata/invalid/*.yaml"))
	if len(files) != 12 {
		t.Errorf("testdata/invalid has %d files, the table covers 12", len(files))
	}
}

func chartAppVersion(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}
