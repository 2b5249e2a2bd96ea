package resource

import (
	"bytes"
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

func TestConfigHashDigestsTheMeaningNotTheSpelling(t *testing.T) {
	rendered, err := RenderConfigJSON(cluster(withBrokerAndDatabase))
	if err != nil {
		t.Fatal(err)
	}
	base, err := configMeaning(rendered)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(rendered, &doc); err != nil {
		t.Fatal(err)
	}
	compact, _ := json.Marshal(doc)
	// The web client is on by default: leaving the key out means the same.
	delete(doc, "web")
	withoutDefault, _ := json.Marshal(doc)
	for name, spelling := range map[string][]byte{"compact": compact, "a default left out": withoutDefault} {
		got, err := configMeaning(spelling)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, base) {
			t.Errorf("%s: the same config has another meaning:\n%s\n%s", name, got, base)
		}
	}
	doc["web"] = map[string]any{"enabled": false}
	off, _ := json.Marshal(doc)
	if got, _ := configMeaning(off); bytes.Equal(got, base) {
		t.Error("turning the web client off did not change the config's meaning")
	}
	if _, err := configMeaning([]byte(`{"unknownKey": 1}`)); err == nil {
		t.Error("a config the server would refuse was hashed")
	}
}

// An operator whose config hash was the digest of the indented rendering
// (0.1.0) wrote pod templates with that value. The first reconcile by this
// build must leave those templates byte for byte as they are while the
// config means the same, and roll them when it does not.
func TestChangingTheHashFormulaRollsNoPod(t *testing.T) {
	c := cluster(withBrokerAndDatabase)
	c.SecretsHash = "secrets-v1"
	legacy, err := legacyConfigHash(c)
	if err != nil {
		t.Fatal(err)
	}
	current, err := configHash(c)
	if err != nil {
		t.Fatal(err)
	}
	if legacy == current {
		t.Fatal("the formulas agree: the test proves nothing")
	}
	// The live Deployment as the previous operator left it.
	live := desiredDeployment(t, c)
	live.Spec.Template.Annotations[AnnotationConfigHash] = legacy
	tmplHash, err := hashJSON(live.Spec.Template)
	if err != nil {
		t.Fatal(err)
	}
	live.Annotations = map[string]string{AnnotationTemplateHash: tmplHash}
	before := templateJSON(t, live)

	if err := (&DeploymentBuilder{c}).Update(live); err != nil {
		t.Fatal(err)
	}
	if after := templateJSON(t, live); !bytes.Equal(before, after) {
		t.Errorf("the pod template changed (the pods would roll):\n%s\n%s", before, after)
	}

	changed := cluster(withBrokerAndDatabase, func(cc *v1alpha1.ChatCluster) { cc.Spec.Limits.MaxMessageBytes = 1024 })
	changed.SecretsHash = c.SecretsHash
	if err := (&DeploymentBuilder{changed}).Update(live); err != nil {
		t.Fatal(err)
	}
	want, _ := configHash(changed)
	if got := live.Spec.Template.Annotations[AnnotationConfigHash]; got != want {
		t.Errorf("after a real config change the template carries %q, want the new hash %q", got, want)
	}
}

func templateJSON(t *testing.T, d *appsv1.Deployment) []byte {
	t.Helper()
	b, err := json.Marshal(d.Spec.Template)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
