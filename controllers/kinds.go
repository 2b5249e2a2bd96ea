package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// kindProbe answers whether an optional kind (the Prometheus Operator's
// ServiceMonitor) exists in the cluster, asking discovery at most once per
// ttl so a cluster without it does not pay a discovery request per reconcile.
type kindProbe struct {
	mapper meta.RESTMapper
	gvk    schema.GroupVersionKind
	ttl    time.Duration

	mu      sync.Mutex
	checked time.Time
	present bool
}

func newKindProbe(mapper meta.RESTMapper, gvk schema.GroupVersionKind, ttl time.Duration) *kindProbe {
	return &kindProbe{mapper: mapper, gvk: gvk, ttl: ttl}
}

func (k *kindProbe) available(ctx context.Context) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.checked.IsZero() && time.Since(k.checked) < k.ttl {
		return k.present
	}
	_, err := k.mapper.RESTMapping(k.gvk.GroupKind(), k.gvk.Version)
	switch {
	case err == nil:
		k.present = true
	case meta.IsNoMatchError(err):
		k.present = false
	default:
		// Discovery failed: keep the last answer and ask again next time.
		log.FromContext(ctx).Error(err, "discover kind", "kind", k.gvk.String())
		return k.present
	}
	k.checked = time.Now()
	return k.present
}
