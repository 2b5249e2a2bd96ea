package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/testenv"
)

// aggregatedEdit builds what kube-controller-manager's aggregation
// controller makes of the built-in "edit" ClusterRole (envtest runs no
// controller manager): the union of the rules of every ClusterRole its
// aggregationRule selects, Parley's chatcluster-editor-role included.
func (s *suite) aggregatedEdit(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "chatcluster_editor_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	parley := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, parley); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Create(ctx, parley); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	edit := &rbacv1.ClusterRole{}
	if err := s.c.Get(ctx, types.NamespacedName{Name: "edit"}, edit); err != nil {
		t.Fatal(err)
	}
	if edit.AggregationRule == nil {
		t.Fatal("the built-in edit role has no aggregationRule")
	}
	union := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: testenv.UniqueName(t, "edit")}}
	for _, sel := range edit.AggregationRule.ClusterRoleSelectors {
		ls, err := metav1.LabelSelectorAsSelector(&sel)
		if err != nil {
			t.Fatal(err)
		}
		var roles rbacv1.ClusterRoleList
		if err := s.c.List(ctx, &roles, client.MatchingLabelsSelector{Selector: ls}); err != nil {
			t.Fatal(err)
		}
		for _, r := range roles.Items {
			union.Rules = append(union.Rules, r.Rules...)
		}
	}
	s.create(t, union)
	return union.Name
}

// testEditorCannotReadAdminCredentials: a tenant's namespace editor (the
// built-in edit role, impersonated through the API server) manages its
// ChatClusters and reads its own Secrets, but cannot read the backend admin
// credentials nor make a ChatBackend that would point at them.
func testEditorCannotReadAdmin(t *testing.T, s *suite) {
	ctx := context.Background()
	platform := s.namespace(t)
	rmq := s.rabbitBackend(t, platform, nil)
	ns := s.namespace(t)
	role := s.aggregatedEdit(t)
	user := "dev-" + ns
	s.create(t, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "developers"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})
	cfg := rest.CopyConfig(s.env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	dev, err := client.New(cfg, client.Options{Scheme: s.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// What an editor may do: the role works, so the refusals below mean something.
	s.secret(t, ns, "own", false, map[string]string{"k": "v"})
	if err := dev.Get(ctx, types.NamespacedName{Namespace: ns, Name: "own"}, &corev1.Secret{}); err != nil {
		t.Fatalf("the editor cannot read a Secret of its own namespace (is the role aggregated?): %v", err)
	}
	cc := newCluster(ns, "chat")
	cc.Spec.Broker = &v1alpha1.BrokerSpec{Backend: rmq.Name}
	if err := dev.Create(ctx, cc); err != nil {
		t.Fatalf("the editor cannot create a ChatCluster: %v", err)
	}
	// What it may not.
	if err := dev.Get(ctx, types.NamespacedName{Namespace: platform, Name: rmq.Name + "-admin"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the editor reading the backend's admin Secret: want Forbidden, got %v", err)
	}
	if err := dev.List(ctx, &corev1.SecretList{}); !apierrors.IsForbidden(err) {
		t.Errorf("the editor listing Secrets of all namespaces: want Forbidden, got %v", err)
	}
	evil := &v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: testenv.UniqueName(t, "evil")}, Spec: v1alpha1.ChatBackendSpec{
		RabbitMQ:          &v1alpha1.RabbitMQBackend{ConnectionSecret: &v1alpha1.ObjectReference{Namespace: platform, Name: rmq.Name + "-admin"}},
		AllowedNamespaces: allowed(nil),
	}}
	if err := dev.Create(ctx, evil); !apierrors.IsForbidden(err) {
		t.Errorf("the editor creating a ChatBackend: want Forbidden, got %v", err)
		_ = s.c.Delete(ctx, evil)
	}
	if err := dev.Update(ctx, rmq); !apierrors.IsForbidden(err) {
		t.Errorf("the editor changing a ChatBackend: want Forbidden, got %v", err)
	}
	// The cluster works with credentials of its own, which the editor may read.
	s.condition(t, ns, "chat", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	sec := &corev1.Secret{}
	if err := dev.Get(ctx, types.NamespacedName{Namespace: ns, Name: naming.BrokerSecretName("chat")}, sec); err != nil {
		t.Errorf("the editor cannot read its cluster's own broker credentials: %v", err)
	}
	if strings.Contains(string(sec.Data[naming.BrokerURIKey]), "guest") {
		t.Errorf("the cluster's credentials are the admin's")
	}
}
