package backends

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/status"
)

func backend(name, typ string, def bool, created time.Time) v1alpha1.ChatBackend {
	b := v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
	if def {
		b.Annotations = map[string]string{v1alpha1.AnnotationDefaultBackend: "true"}
	}
	if typ == v1alpha1.BackendTypeRabbitMQ {
		b.Spec.RabbitMQ = &v1alpha1.RabbitMQBackend{}
	} else {
		b.Spec.PostgreSQL = &v1alpha1.PostgreSQLBackend{}
	}
	return b
}

func reason(err error) string {
	var re *status.ReasonError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

func TestSelect(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rmq, pg := v1alpha1.BackendTypeRabbitMQ, v1alpha1.BackendTypePostgreSQL
	all := []v1alpha1.ChatBackend{
		backend("old-default", rmq, true, t0),
		backend("new-default", rmq, true, t0.Add(time.Hour)),
		backend("plain", rmq, false, t0.Add(2*time.Hour)),
		backend("tie-b", pg, true, t0),
		backend("tie-a", pg, true, t0),
	}
	for _, tc := range []struct {
		name, typ, want, reason string
	}{
		{"plain", rmq, "plain", ""},
		{"", rmq, "new-default", ""}, // the newest default wins
		{"", pg, "tie-a", ""},        // a tie goes to the first name
		{"missing", rmq, "", ReasonBackendNotFound},
		{"plain", pg, "", ReasonWrongBackendType},
	} {
		got, err := Select(all, tc.typ, tc.name, "spec.x.backend")
		switch {
		case tc.reason != "":
			if reason(err) != tc.reason || !strings.Contains(err.Error(), "spec.x.backend") {
				t.Errorf("Select(%q, %s): %v, want reason %s naming the field", tc.name, tc.typ, err, tc.reason)
			}
		case err != nil || got.Name != tc.want:
			t.Errorf("Select(%q, %s) = %v, %v; want %s", tc.name, tc.typ, got, err, tc.want)
		}
	}
	if _, err := Select(all[2:3], rmq, "", "spec.broker.backend"); reason(err) != ReasonBackendNotFound ||
		!strings.Contains(err.Error(), v1alpha1.AnnotationDefaultBackend) {
		t.Errorf("no default: %v", err)
	}
	deleting := backend("going", rmq, true, t0.Add(5*time.Hour))
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	if d := Default(append(all, deleting), rmq); d == nil || d.Name != "new-default" {
		t.Errorf("a default being deleted was chosen: %v", d)
	}
}

func TestAdmits(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}}
	b := backend("shared", v1alpha1.BackendTypeRabbitMQ, false, time.Now())
	for _, tc := range []struct {
		name  string
		allow v1alpha1.AllowedNamespaces
		ok    bool
	}{
		{"all", v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromAll}, true},
		{"matching selector", v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}, true},
		{"other selector", v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}}, false},
		{"empty selector admits none", v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector,
			Selector: &metav1.LabelSelector{}}, false},
		{"no rule", v1alpha1.AllowedNamespaces{}, false},
	} {
		b.Spec.AllowedNamespaces = tc.allow
		err := Admits(&b, ns)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && (reason(err) != ReasonNamespaceNotAllowed || !strings.Contains(err.Error(), "team-a")) {
			t.Errorf("%s: %v, want reason %s naming the namespace", tc.name, err, ReasonNamespaceNotAllowed)
		}
	}
}
