package resource

import (
	"bytes"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/chatserver/version"
)

// TestOperatorOnlyInputsRollNoPod builds every sample's children the way one
// operator release does, then again with everything that differs between two
// releases of the operator but that the chat server never reads: the
// operator's version and commit, its flags, whether the ServiceMonitor kind is
// installed, the ChatCluster's own metadata and status (chart labels,
// last-applied annotations, generation). Every child, the Deployment's pod
// template and both hashes above all, must come out byte for byte the same.
func TestOperatorOnlyInputsRollNoPod(t *testing.T) {
	for _, s := range loadSamples(t) {
		t.Run(s.name, func(t *testing.T) {
			before, err := renderChildren(goldenCluster(s.cc.DeepCopy()))
			if err != nil {
				t.Fatal(err)
			}
			for name, change := range map[string]func(*Cluster){
				"another operator version": func(*Cluster) {
					v, c := version.Version, version.Commit
					version.Version, version.Commit = "v9.9.9", "0123456789abcdef"
					t.Cleanup(func() { version.Version, version.Commit = v, c })
				},
				"another cluster domain flag": func(c *Cluster) { c.ClusterDomain = "corp.internal" },
				"ChatCluster metadata and status": func(c *Cluster) {
					cc := c.ChatCluster
					cc.Generation, cc.ResourceVersion, cc.UID = 42, "987654", types.UID("a-new-uid")
					cc.Labels = map[string]string{"helm.sh/chart": "parley-9.9.9", "app.kubernetes.io/version": "9.9.9"}
					cc.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}", "deployment.kubernetes.io/revision": "7"}
					cc.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "parley-operator-v9", Operation: metav1.ManagedFieldsOperationUpdate}}
					cc.Status.ObservedGeneration = 41
					cc.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready"}}
				},
			} {
				c := goldenCluster(s.cc.DeepCopy())
				change(&c)
				after, err := renderChildren(c)
				if err != nil {
					t.Fatal(err)
				}
				sameChildren(t, name, before, after)
			}

			// Without the ServiceMonitor kind that child goes, nothing else changes.
			c := goldenCluster(s.cc.DeepCopy())
			c.ServiceMonitorAvailable = false
			after, err := renderChildren(c)
			if err != nil {
				t.Fatal(err)
			}
			delete(before, "servicemonitor.yaml")
			sameChildren(t, "no ServiceMonitor kind", before, after)

			// The control: a new chat server image is a real change, and rolls.
			c = goldenCluster(s.cc.DeepCopy())
			c.DefaultImage += "-next"
			next, err := renderChildren(c)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(before["deployment.yaml"], next["deployment.yaml"]) {
				t.Error("a new chat server image left the pod template as it was")
			}
		})
	}
}

func sameChildren(t *testing.T, change string, before, after map[string][]byte) {
	t.Helper()
	for name, want := range before {
		got, ok := after[name]
		switch {
		case !ok:
			t.Errorf("%s: %s is no longer built", change, name)
		case !bytes.Equal(got, want):
			t.Errorf("%s changed %s:\n%s", change, name, lineDiff(string(want), string(got)))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s: %s is new", change, name)
		}
	}
}

// A release that ships a new chat server image rolls clusters that follow
// the operator's default, and leaves those that hold theirs as they are,
// while their spec still applies.
func TestDefaultImagePolicy(t *testing.T) {
	hold := func(cc *v1alpha1.ChatCluster) { cc.Spec.DefaultImagePolicy = v1alpha1.DefaultImagePolicyHold }
	upgrade := func(c Cluster) Cluster { c.DefaultImage = "example.org/parley:2.0"; return c }
	image := func(d *appsv1.Deployment) string { return d.Spec.Template.Spec.Containers[0].Image }
	// live is the Deployment the previous release (default image 1.0) wrote.
	live := func(c Cluster) *appsv1.Deployment {
		d := &appsv1.Deployment{}
		if err := (&DeploymentBuilder{c}).Update(d); err != nil {
			t.Fatal(err)
		}
		return d
	}

	follow := cluster(withBrokerAndDatabase)
	d := live(follow)
	if err := (&DeploymentBuilder{upgrade(follow)}).Update(d); err != nil {
		t.Fatal(err)
	}
	if image(d) != "example.org/parley:2.0" {
		t.Errorf("Follow: the chat servers run %s after the upgrade, want the new default", image(d))
	}

	held := cluster(withBrokerAndDatabase, hold)
	d = live(held)
	before := templateJSON(t, d)
	if err := (&DeploymentBuilder{upgrade(held)}).Update(d); err != nil {
		t.Fatal(err)
	}
	if after := templateJSON(t, d); !bytes.Equal(before, after) {
		t.Errorf("Hold: the upgrade changed the pod template:\n%s", lineDiff(string(before), string(after)))
	}

	// The spec still applies to a held cluster, on the held image.
	changed := upgrade(cluster(withBrokerAndDatabase, hold, func(cc *v1alpha1.ChatCluster) { cc.Spec.Limits.MaxMessageBytes = 1024 }))
	if err := (&DeploymentBuilder{changed}).Update(d); err != nil {
		t.Fatal(err)
	}
	want, _ := configHash(changed)
	if image(d) != "example.org/parley:1.0" || d.Spec.Template.Annotations[AnnotationConfigHash] != want {
		t.Errorf("Hold: after a config change the pods run %s with config hash %s, want the held image with %s",
			image(d), d.Spec.Template.Annotations[AnnotationConfigHash], want)
	}

	// A new cluster gets the default; spec.image always wins.
	if d := live(upgrade(held)); image(d) != "example.org/parley:2.0" {
		t.Errorf("Hold: a new cluster runs %s, want the operator's default", image(d))
	}
	pinned := upgrade(cluster(withBrokerAndDatabase, hold, func(cc *v1alpha1.ChatCluster) { cc.Spec.Image = "example.org/parley:3.0" }))
	d = live(held)
	if err := (&DeploymentBuilder{pinned}).Update(d); err != nil {
		t.Fatal(err)
	}
	if image(d) != "example.org/parley:3.0" {
		t.Errorf("Hold with spec.image: the pods run %s, want spec.image", image(d))
	}
}

// `kubectl rollout restart` marks the pod template; an upgrade that rewrites
// the template without changing what the pods run must keep the mark, or
// every pod restarts a second time.
func TestRewritingTheTemplateKeepsARolloutRestart(t *testing.T) {
	c := cluster(withBrokerAndDatabase)
	d := &appsv1.Deployment{}
	if err := (&DeploymentBuilder{c}).Update(d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Annotations[AnnotationRestartedAt] = "2026-12-01T10:00:00Z"
	// The previous operator's template digest differed (another encoding
	// of the same template): the template is written again.
	d.Annotations[AnnotationTemplateHash] = "from-another-release"
	before := templateJSON(t, d)
	if err := (&DeploymentBuilder{c}).Update(d); err != nil {
		t.Fatal(err)
	}
	if d.Annotations[AnnotationTemplateHash] == "from-another-release" {
		t.Fatal("the template was not rewritten: the test proves nothing")
	}
	if after := templateJSON(t, d); !bytes.Equal(before, after) {
		t.Errorf("rewriting the same template changed it (the pods would roll):\n%s", lineDiff(string(before), string(after)))
	}
}
