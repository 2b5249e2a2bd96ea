package controllers

import (
	"context"
	"errors"
	"sync"
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
	cleanupRetryingDesc = prometheus.NewDesc("parley_operator_cleanup_retrying",
		"External state (piece: broker, database) whose deletion failed and is being retried, from status.externalState.",
		[]string{"piece"}, nil)
	cleanupOldestDesc = prometheus.NewDesc("parley_operator_cleanup_oldest_failure_timestamp_seconds",
		"Time of the oldest first failure among the cleanups being retried (absent when none is).", []string{"piece"}, nil)
)

// Counters of the cleanup of external state, counted as it happens (they
// restart from zero with the process; the gauges above come from status).
var (
	cleanupFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_operator_cleanup_failures_total",
		Help: "Failed attempts to delete a ChatCluster's external state (piece: broker, database).",
	}, []string{"piece"})
	leftBehind = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_operator_cleanup_left_behind_total",
		Help: "External state the operator let go of without deleting it: cause gave_up (--cleanup-retry-for ran out) or abandoned (the annotation).",
	}, []string{"piece", "cause"})
)

// conditionTypes always get a series per status, so a dashboard shows zeros
// rather than gaps.
var conditionTypes = []string{
	v1alpha1.ConditionReady, v1alpha1.ConditionProgressing, v1alpha1.ConditionDegraded,
	v1alpha1.ConditionPaused, v1alpha1.ConditionBrokerReady, v1alpha1.ConditionDatabaseReady,
}

type clusterCollector struct {
	mu     sync.Mutex
	reader client.Reader
}

// clusters is the one collector of the cluster gauges; the latest manager
// set up in the process (tests start several, one after another) is the one
// it reads from.
var clusters = &clusterCollector{}

func (c *clusterCollector) setReader(r client.Reader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reader = r
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clustersDesc
	ch <- pausedDesc
	ch <- cleanupRetryingDesc
	ch <- cleanupOldestDesc
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.mu.Lock()
	reader := c.reader
	c.mu.Unlock()
	var list v1alpha1.ChatClusterList
	if err := reader.List(ctx, &list); err != nil {
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
	retrying := map[string]int{}
	oldest := map[string]time.Time{}
	for i := range list.Items {
		cc := &list.Items[i]
		if isPaused(cc) {
			paused++
		}
		for _, pc := range pieces {
			rec := *pc.record(&cc.Status.ExternalState)
			if rec == nil || rec.CleanupAttempts == 0 || rec.FirstCleanupFailure == nil {
				continue
			}
			retrying[pc.section]++
			if o, ok := oldest[pc.section]; !ok || rec.FirstCleanupFailure.Time.Before(o) {
				oldest[pc.section] = rec.FirstCleanupFailure.Time
			}
		}
		for _, cond := range cc.Status.Conditions {
			counts[[2]string{cond.Type, string(cond.Status)}]++
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(clustersDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, float64(paused))
	for _, pc := range pieces {
		ch <- prometheus.MustNewConstMetric(cleanupRetryingDesc, prometheus.GaugeValue, float64(retrying[pc.section]), pc.section)
		if o, ok := oldest[pc.section]; ok {
			ch <- prometheus.MustNewConstMetric(cleanupOldestDesc, prometheus.GaugeValue, float64(o.UnixNano())/1e9, pc.section)
		}
	}
}

// registerMetrics adds the collectors to controller-runtime's registry
// (served on the manager's metrics address) once per process; the cluster
// gauges read through the latest manager's client.
func registerMetrics(reader client.Reader) error {
	clusters.setReader(reader)
	for _, c := range []prometheus.Collector{clusters, cleanupFailures, leftBehind} {
		err := metrics.Registry.Register(c)
		var already prometheus.AlreadyRegisteredError
		if err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}
