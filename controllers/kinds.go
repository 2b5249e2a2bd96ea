package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// DefaultKindRecheckInterval is how often the operator asks discovery whether
// an optional kind (ServiceMonitor, PrometheusRule) has appeared or gone.
const DefaultKindRecheckInterval = 30 * time.Second

// optionalKinds tracks kinds from other projects' CRDs (the Prometheus
// Operator's ServiceMonitor and PrometheusRule) that the ChatCluster
// controller creates and owns only where they exist.
//
// A CRD may be installed after the operator started (a cluster gets the
// Prometheus Operator later): a periodic discovery re-check notices, starts
// the owner watch on the kind once, and sends every ChatCluster through a
// pass so the new children appear without waiting for the resync period. A
// re-check was chosen over a watch on CustomResourceDefinitions because it
// needs no permission beyond discovery (reading every CRD in the cluster is
// a privilege the operator otherwise does without) and no informer holding
// every CRD's schema in memory; the cost is up to one interval of delay and
// one discovery request per absent kind per interval (none once all exist).
type optionalKinds struct {
	mapper   meta.RESTMapper
	interval time.Duration

	mu      sync.Mutex
	present map[schema.GroupVersionKind]bool
	watched map[schema.GroupVersionKind]bool

	// Set by the controller's setup before the manager starts.
	ctrl  controller.Controller
	cache cache.Cache
	owner handler.EventHandler
	// appeared sends every ChatCluster through a pass when a kind appears.
	appeared chan event.GenericEvent
	list     func(ctx context.Context) ([]v1alpha1.ChatCluster, error)
}

func newOptionalKinds(mapper meta.RESTMapper, interval time.Duration, gvks ...schema.GroupVersionKind) *optionalKinds {
	if interval <= 0 {
		interval = DefaultKindRecheckInterval
	}
	k := &optionalKinds{
		mapper: mapper, interval: interval,
		present:  map[schema.GroupVersionKind]bool{},
		watched:  map[schema.GroupVersionKind]bool{},
		appeared: make(chan event.GenericEvent),
	}
	for _, gvk := range gvks {
		k.present[gvk] = false
	}
	return k
}

// available reports whether the kind existed at the last check.
func (k *optionalKinds) available(gvk schema.GroupVersionKind) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.present[gvk]
}

// absent reports whether gvk is one of the tracked kinds and did not exist at
// the last check: then no object of it can exist either.
func (k *optionalKinds) absent(gvk schema.GroupVersionKind) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	present, tracked := k.present[gvk]
	return tracked && !present
}

// check asks discovery about every kind and returns those that appeared
// since the last check. A failed discovery keeps the last answer.
func (k *optionalKinds) check(ctx context.Context) (appeared []schema.GroupVersionKind) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for gvk, was := range k.present {
		_, err := k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		switch {
		case err == nil:
			k.present[gvk] = true
			if !was {
				appeared = append(appeared, gvk)
			}
		case meta.IsNoMatchError(err):
			k.present[gvk] = false
		default:
			log.FromContext(ctx).Error(err, "discover kind", "kind", gvk.String())
		}
	}
	return appeared
}

// watchable returns an unstructured object of each kind present and not yet
// watched, and marks them watched (the builder's Owns at setup, or watch).
func (k *optionalKinds) watchable() []*unstructured.Unstructured {
	k.mu.Lock()
	defer k.mu.Unlock()
	var objs []*unstructured.Unstructured
	for gvk, ok := range k.present {
		if ok && !k.watched[gvk] {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk)
			objs = append(objs, u)
			k.watched[gvk] = true
		}
	}
	return objs
}

// Start re-checks discovery every interval until the manager stops; it is
// a manager Runnable, started after the controller (whose Watch then starts
// the new source at once).
func (k *optionalKinds) Start(ctx context.Context) error {
	t := time.NewTicker(k.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if len(k.check(ctx)) == 0 {
			continue
		}
		for _, u := range k.watchable() {
			if err := k.ctrl.Watch(source.Kind[client.Object](k.cache, u, k.owner)); err != nil {
				log.FromContext(ctx).Error(err, "watch kind", "kind", u.GroupVersionKind().String())
			}
		}
		clusters, err := k.list(ctx)
		if err != nil {
			log.FromContext(ctx).Error(err, "list ChatClusters after a kind appeared")
			continue
		}
		for i := range clusters {
			select {
			case k.appeared <- event.GenericEvent{Object: &clusters[i]}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// NeedLeaderElection: only the leader's controller runs, so only it needs to
// learn of new kinds (a standby checks again when it becomes the leader).
func (k *optionalKinds) NeedLeaderElection() bool { return true }

// listChatClusters lists every ChatCluster the operator watches (from the cache).
func listChatClusters(c client.Reader) func(ctx context.Context) ([]v1alpha1.ChatCluster, error) {
	return func(ctx context.Context) ([]v1alpha1.ChatCluster, error) {
		var l v1alpha1.ChatClusterList
		if err := c.List(ctx, &l); err != nil {
			return nil, err
		}
		return l.Items, nil
	}
}
