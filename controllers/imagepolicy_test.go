package controllers_test

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

func init() {
	register("HeldImageSurvivesANewDefaultAndStatusOffersIt", testHeldImage)
}

// previousImage stands for the default image of the operator release before
// this one: the Deployment is edited to it, as that release left it.
const previousImage = "example.org/parley:previous"

func testHeldImage(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "held")
	cc.Spec.DefaultImagePolicy = v1alpha1.DefaultImagePolicyHold
	s.create(t, cc)
	if got := image(s.deployment(t, ns, "held")); got != testImage {
		t.Fatalf("a new held cluster runs %s, want the operator's default %s", got, testImage)
	}

	// The chat servers run the previous release's default; this operator's
	// default is testImage. Hold keeps them where they are, and says what
	// an upgrade would bring.
	d := s.deployment(t, ns, "held")
	s.update(t, d, func() { d.Spec.Template.Spec.Containers[0].Image = previousImage })
	eventually(t, "status offers the default image", func() error {
		cc := s.cluster(t, ns, "held")
		if cc.Status.Image != previousImage || cc.Status.AvailableImage != testImage {
			return fmt.Errorf("status.image %q, status.availableImage %q", cc.Status.Image, cc.Status.AvailableImage)
		}
		return nil
	})
	// A spec change still applies, on the held image.
	cc = s.cluster(t, ns, "held")
	s.update(t, cc, func() { cc.Spec.Limits.MaxMessageBytes = 4096 })
	eventually(t, "the spec change is processed", func() error {
		cc := s.cluster(t, ns, "held")
		if cc.Status.ObservedGeneration != cc.Generation {
			return fmt.Errorf("generation %d not processed", cc.Generation)
		}
		return nil
	})
	if got := image(s.deployment(t, ns, "held")); got != previousImage {
		t.Errorf("after a spec change the held cluster runs %s, want %s", got, previousImage)
	}

	// Following the default again upgrades it.
	cc = s.cluster(t, ns, "held")
	s.update(t, cc, func() { cc.Spec.DefaultImagePolicy = v1alpha1.DefaultImagePolicyFollow })
	eventually(t, "the cluster follows the default", func() error {
		cc := s.cluster(t, ns, "held")
		if got := image(s.deployment(t, ns, "held")); got != testImage || cc.Status.AvailableImage != "" {
			return fmt.Errorf("the pods run %s, status.availableImage %q", got, cc.Status.AvailableImage)
		}
		return nil
	})
}

func image(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "chatserver" {
			return c.Image
		}
	}
	return ""
}
