package controllers

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// The operator's own metrics, beside controller-runtime's. They are
// computed from the cache at scrape time, so they cannot drift from what the
// ChatClusters say.
var (
	clustersDesc = prometheus.NewDesc("parley_operator_chatclusters",
		"Managed ChatClusters by condition type and status.", []string{"condition", "status"}, nil)
	pausedDesc = prometheus.NewDesc("parley_operator_chatclusters_paused",
		"Managed ChatClusters with the paused annotation.", nil, nil)
)

// conditionTypes always get a series per status, so a dashboard shows zeros
// rather than gaps.
var conditionTypes = []string{
	v1alpha1.ConditionReady, v1alpha1.ConditionProgressing, v1alpha1.ConditionDegraded,
	v1alpha1.ConditionPaused, v1alpha1.ConditionBrokerReady, v1alpha1.ConditionDatabaseReady,
}

type clusterCollector struct{ reader client.Reader }

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clustersDesc
	ch <- pausedDesc
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.ChatClusterList
	if err := c.reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(clustersDesc, err)
		return
	}
	counts := map[[2]string]int{}
	for _, t := range conditionTypes {
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			counts[[2]string{t, string(s)}] = 0
		}
	}
	paused := 0
	for i := range list.Items {
		cc := &list.Items[i]
		if isPaused(cc) {
			paused++
		}
		for _, cond := range cc.Status.Conditions {
			counts[[2]string{cond.Type, string(cond.Status)}]++
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(clustersDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, float64(paused))
}

// registerMetrics adds the collector to controller-runtime's registry (served
// on the manager's metrics address). A second manager in the same process
// (tests) keeps the first registration.
func registerMetrics(reader client.Reader) error {
	err := metrics.Registry.Register(&clusterCollector{reader: reader})
	var already prometheus.AlreadyRegisteredError
	if err != nil && !errors.As(err, &already) {
		return err
	}
	return nil
}
