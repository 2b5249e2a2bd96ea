package controllers

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
)

// TestForeignSecretsUnderGeneratedNamesAreRefused: Secrets named
// <name>-jwt, <name>-api-key and <name>-db that someone else created (no
// controller, or another one) used to be taken over: the operator wrote into
// them and the chat servers mounted what was there. Now each is refused with
// a condition naming the Secret and the opt-in, is left unchanged, is not
// mounted, and nothing is provisioned with its password; annotated
// chat.parley.io/secret-for=<name>, it is used.
func TestForeignSecretsUnderGeneratedNamesAreRefused(t *testing.T) {
	foreign := func(name string, data map[string]string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS}, Data: map[string][]byte{}}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		return s
	}
	other := foreign(naming.JWTSecretName("team"), map[string]string{naming.JWTCurrentKey: "a key the attacker knows, long enough to pass"})
	other.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "someone", UID: "x", Controller: ptr(true)}}
	objs := append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain),
		other,
		foreign(naming.APIKeySecretName("team"), map[string]string{naming.APIKeyKey: "planted"}),
		foreign(naming.DatabaseSecretName("team"), map[string]string{"password": "planted"}))
	h := newHarness(t, objs...)
	p, err := h.runSteps(t)
	if err == nil {
		t.Fatal("the pass succeeded with three foreign Secrets")
	}
	for _, name := range []string{naming.JWTSecretName("team"), naming.APIKeySecretName("team")} {
		if !strings.Contains(err.Error(), "Secret "+name+" exists and was not created by the operator") || !strings.Contains(err.Error(), AnnotationSecretFor+"=team") {
			t.Errorf("the pass's error (Degraded) does not refuse %s and name the opt-in: %v", name, err)
		}
	}
	if !strings.Contains(err.Error(), "its controller is ConfigMap someone") {
		t.Errorf("the refusal does not say who controls the Secret: %v", err)
	}
	c := conditionOf(p, v1alpha1.ConditionDatabaseReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonSecretNotOwned || !strings.Contains(c.Message, naming.DatabaseSecretName("team")) {
		t.Errorf("DatabaseReady = %+v; want False, %s, naming the Secret", c, ReasonSecretNotOwned)
	}
	if len(h.calls.ensures) != 0 {
		t.Errorf("the database was provisioned with the planted password: %q", h.calls.ensures)
	}
	for _, o := range objs[len(objs)-3:] {
		want := o.(*corev1.Secret)
		got := h.secret(t, want.Name)
		if len(got.Data) != len(want.Data) || metav1.GetControllerOf(got) != metav1.GetControllerOf(want) && metav1.IsControlledBy(got, p.cc) {
			t.Errorf("Secret %s was changed: %v", want.Name, got.Data)
		}
	}
	// The children: the Deployment is not created with the foreign Secrets mounted.
	h.r.optional = newOptionalKinds(nil, 0)
	h.r.Options.DefaultImage = "example.org/parley:test"
	if err := h.r.reconcileChildren(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if len(p.missingSecrets) < 2 || !strings.Contains(strings.Join(p.missingSecrets, ","), "refused") {
		t.Errorf("missing Secrets %v: want the foreign ones held back", p.missingSecrets)
	}
	if p.deployment != nil {
		t.Error("a Deployment mounting the foreign Secrets")
	}

	// Handed over explicitly: used.
	for _, o := range objs[len(objs)-3:] {
		s := h.secret(t, o.GetName())
		s.Annotations = map[string]string{AnnotationSecretFor: "team"}
		if err := h.c.Update(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	p, err = h.runSteps(t)
	if err != nil {
		t.Fatalf("with the opt-in: %v", err)
	}
	if len(h.calls.ensures) != 1 || h.calls.ensures[0] != "planted" {
		t.Errorf("with the opt-in the user's password is applied: %q", h.calls.ensures)
	}
	if c := conditionOf(p, v1alpha1.ConditionDatabaseReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("DatabaseReady with the opt-in: %+v", c)
	}
	if meta.IsStatusConditionTrue(p.cc.Status.Conditions, v1alpha1.ConditionDegraded) {
		t.Error("Degraded with the opt-in")
	}
}
