package controllers_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/testenv"
)

// TestServiceMonitorCRDInstalledAfterStart starts the operator on a cluster
// without the Prometheus Operator's CRDs, installs the ServiceMonitor and
// PrometheusRule CRDs while a ChatCluster (with spec.monitoring.prometheusRule
// on) already runs, and expects its ServiceMonitor and PrometheusRule to
// appear (without waiting for the resync period, set to an hour here) and to
// be watched: one deleted by hand comes back at once.
func TestServiceMonitorCRDInstalledAfterStart(t *testing.T) {
	env, cfg := testenv.StartControlPlane(t)
	scheme := controllers.NewScheme()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(operatorUser(t, env, c), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(nil),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// TestOperator runs a "chatcluster" controller in this process too.
		Controller: config.Controller{SkipNameValidation: ptr(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.ChatClusterReconciler{Options: controllers.Options{
		DefaultImage: testImage, ResyncPeriod: time.Hour, MaxConcurrentReconciles: 2,
		KindRecheckInterval: 500 * time.Millisecond,
	}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	s := &suite{env: env, c: c, requests: &requestLog{}}
	ns := s.namespace(t)
	late := s.keyedCluster(t, ns, "late")
	late.Spec.Monitoring.PrometheusRule.Enabled = ptr(true)
	late.Spec.Monitoring.PrometheusRule.Labels = map[string]string{"release": "prometheus"}
	s.create(t, late)
	s.deployment(t, ns, "late") // the pass that found no ServiceMonitor kind is over

	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join("testdata", "servicemonitor-crd.yaml"), filepath.Join("testdata", "prometheusrule-crd.yaml")},
		ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install the Prometheus Operator's CRDs: %v", err)
	}
	installed := time.Now()
	sm := &unstructured.Unstructured{}
	sm.SetGroupVersionKind(resource.ServiceMonitorGVK)
	eventually(t, "the ServiceMonitor after its CRD was installed", func() error { return s.get(t, ns, "late", sm) })
	t.Logf("ServiceMonitor created %s after its CRD was installed", time.Since(installed).Round(time.Millisecond))
	cc := s.cluster(t, ns, "late")
	if err := ownedBy(sm, cc); err != nil {
		t.Error(err)
	}
	rule := &unstructured.Unstructured{}
	rule.SetGroupVersionKind(resource.PrometheusRuleGVK)
	eventually(t, "the PrometheusRule after its CRD was installed", func() error { return s.get(t, ns, "late", rule) })
	if err := ownedBy(rule, cc); err != nil {
		t.Error(err)
	}
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	if len(groups) != 1 || groups[0].(map[string]any)["name"] != "parley-chatcluster-"+ns+"-late" || rule.GetLabels()["release"] != "prometheus" {
		t.Errorf("PrometheusRule labels %v groups %v", rule.GetLabels(), groups)
	}

	// Owned and watched: a ServiceMonitor deleted by hand is put back by
	// the pass its deletion triggers (the resync is an hour away).
	uid := sm.GetUID()
	if err := c.Delete(context.Background(), sm); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted ServiceMonitor recreated", func() error {
		again := &unstructured.Unstructured{}
		again.SetGroupVersionKind(resource.ServiceMonitorGVK)
		if err := s.get(t, ns, "late", again); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("not recreated yet")
			}
			return err
		}
		if again.GetUID() == uid {
			return fmt.Errorf("still the deleted one")
		}
		return nil
	})
}
