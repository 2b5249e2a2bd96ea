package install

import (
	"path/filepath"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestKustomizeAndChartInstallTheSameOperator compares config/default with
// the chart's defaults: same image, flags, hardening, probes, resources,
// ports, leader-election rules and disruption budget.
func TestKustomizeAndChartInstallTheSameOperator(t *testing.T) {
	kz := kustomizeBuild(t, filepath.Join(configDir, "default"))
	ch := renderChart(t, "parley-system")

	for _, o := range kz {
		if o.GetKind() == "Namespace" || o.GetKind() == "CustomResourceDefinition" || o.GetKind() == "ClusterRole" || o.GetKind() == "ClusterRoleBinding" {
			continue
		}
		if o.GetNamespace() != "parley-system" {
			t.Errorf("%s %s in namespace %q, want parley-system", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
	ns := typed[corev1.Namespace](t, one(t, kz, "Namespace", "parley-system"))
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace labels %v: the operator passes the restricted Pod Security Standard, enforce it", ns.Labels)
	}
	if got, want := len(find(kz, "CustomResourceDefinition", "")), len(crdFiles(t)); got != want {
		t.Errorf("config/default installs %d CRDs, config/crd/bases has %d", got, want)
	}

	kd := typed[appsv1.Deployment](t, one(t, kz, "Deployment", "parley-controller-manager"))
	cd := typed[appsv1.Deployment](t, one(t, ch, "Deployment", "parley"))
	checkHardened(t, kd.Spec.Template.Spec)
	kc, cc := kd.Spec.Template.Spec.Containers[0], cd.Spec.Template.Spec.Containers[0]
	if kc.Image != cc.Image {
		t.Errorf("images differ: kustomize %s, chart %s", kc.Image, cc.Image)
	}
	kargs, cargs := argMap(t, kc.Args), argMap(t, cc.Args)
	if kargs["chat-server-image"] != kc.Image {
		t.Errorf("kustomize --chat-server-image=%s, want the operator image %s (one image)", kargs["chat-server-image"], kc.Image)
	}
	if !reflect.DeepEqual(kargs, cargs) {
		t.Errorf("operator flags differ:\nkustomize %v\n    chart %v", kargs, cargs)
	}
	checkFlagsExist(t, kc.Args)
	for name, pair := range map[string][2]any{
		"command":                {kc.Command, cc.Command},
		"container security":     {kc.SecurityContext, cc.SecurityContext},
		"pod security":           {kd.Spec.Template.Spec.SecurityContext, cd.Spec.Template.Spec.SecurityContext},
		"liveness probe":         {kc.LivenessProbe, cc.LivenessProbe},
		"readiness probe":        {kc.ReadinessProbe, cc.ReadinessProbe},
		"resources":              {kc.Resources, cc.Resources},
		"ports":                  {kc.Ports, cc.Ports},
		"env":                    {kc.Env, cc.Env},
		"volume mounts":          {kc.VolumeMounts, cc.VolumeMounts},
		"volumes":                {kd.Spec.Template.Spec.Volumes, cd.Spec.Template.Spec.Volumes},
		"replicas":               {kd.Spec.Replicas, cd.Spec.Replicas},
		"termination grace":      {kd.Spec.Template.Spec.TerminationGracePeriodSeconds, cd.Spec.Template.Spec.TerminationGracePeriodSeconds},
		"automount SA token":     {kd.Spec.Template.Spec.AutomountServiceAccountToken, cd.Spec.Template.Spec.AutomountServiceAccountToken},
		"topology spread (skew)": {kd.Spec.Template.Spec.TopologySpreadConstraints[0].MaxSkew, cd.Spec.Template.Spec.TopologySpreadConstraints[0].MaxSkew},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s differ:\nkustomize %+v\n    chart %+v", name, pair[0], pair[1])
		}
	}
	if kd.Spec.Template.Spec.ServiceAccountName != "parley-controller-manager" {
		t.Errorf("kustomize serviceAccountName %q", kd.Spec.Template.Spec.ServiceAccountName)
	}
	one(t, kz, "ServiceAccount", "parley-controller-manager")

	kle := typed[rbacv1.Role](t, one(t, kz, "Role", "parley-leader-election-role"))
	cle := typed[rbacv1.Role](t, one(t, ch, "Role", "parley-leader-election"))
	if !reflect.DeepEqual(grants(kle.Rules), grants(cle.Rules)) {
		t.Errorf("leader election rules differ:\nkustomize %+v\n    chart %+v", kle.Rules, cle.Rules)
	}
	klb := typed[rbacv1.RoleBinding](t, one(t, kz, "RoleBinding", "parley-leader-election-rolebinding"))
	if klb.RoleRef.Name != kle.Name || klb.Subjects[0].Name != "parley-controller-manager" || klb.Subjects[0].Namespace != "parley-system" {
		t.Errorf("leader election binding: %+v", klb)
	}
	for _, pair := range [][2]string{{"parley-chatcluster-editor-role", "parley-chatcluster-editor"}, {"parley-chatcluster-viewer-role", "parley-chatcluster-viewer"}} {
		k := typed[rbacv1.ClusterRole](t, one(t, kz, "ClusterRole", pair[0]))
		c := typed[rbacv1.ClusterRole](t, one(t, ch, "ClusterRole", pair[1]))
		if !reflect.DeepEqual(grants(k.Rules), grants(c.Rules)) {
			t.Errorf("%s rules differ from the chart's %s", pair[0], pair[1])
		}
	}

	kp := typed[policyv1.PodDisruptionBudget](t, one(t, kz, "PodDisruptionBudget", "parley-controller-manager"))
	cp := typed[policyv1.PodDisruptionBudget](t, one(t, ch, "PodDisruptionBudget", "parley"))
	if !reflect.DeepEqual(kp.Spec.MaxUnavailable, cp.Spec.MaxUnavailable) || !reflect.DeepEqual(kp.Spec.Selector.MatchLabels, kd.Spec.Selector.MatchLabels) {
		t.Errorf("PDB: kustomize %+v, chart %+v", kp.Spec, cp.Spec)
	}
	ks := typed[corev1.Service](t, one(t, kz, "Service", "parley-controller-manager-metrics"))
	if !reflect.DeepEqual(ks.Spec.Selector, kd.Spec.Selector.MatchLabels) || ks.Spec.Ports[0].Port != 8443 {
		t.Errorf("metrics Service: %+v", ks.Spec)
	}
}

// TestKustomizeOverlaysTargetTheOperator checks the optional pieces select the
// pods and Service config/default creates.
func TestKustomizeOverlaysTargetTheOperator(t *testing.T) {
	kz := kustomizeBuild(t, filepath.Join(configDir, "default"))
	dep := typed[appsv1.Deployment](t, one(t, kz, "Deployment", "parley-controller-manager"))
	svc := typed[corev1.Service](t, one(t, kz, "Service", "parley-controller-manager-metrics"))

	np := kustomizeBuild(t, filepath.Join(configDir, "network-policy"))
	sel := mustNested[map[string]any](t, one(t, np, "NetworkPolicy", "controller-manager").Object, "spec", "podSelector", "matchLabels")
	for k, v := range sel {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("NetworkPolicy selects %s=%v, the operator pods have %q", k, v, dep.Spec.Template.Labels[k])
		}
	}
	sm := kustomizeBuild(t, filepath.Join(configDir, "prometheus"))
	sel = mustNested[map[string]any](t, one(t, sm, "ServiceMonitor", "controller-manager-metrics").Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%v, the metrics Service has %q", k, v, svc.Labels[k])
		}
	}
}
