package controllers

import (
	"context"
	"errors"
	"fmt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/resource"
)

// reconcileChildren applies the builders in order. Each child is read (from
// the cache), mutated by its builder and written only when that changed it.
// The Deployment waits until the Secrets its pods mount exist, and is left
// as it is when the pod template the spec asks for breaks Pod Security.
func (r *ChatClusterReconciler) reconcileChildren(ctx context.Context, p *pass) error {
	c := resource.Cluster{
		ChatCluster:             p.cc,
		DefaultImage:            r.Options.DefaultImage,
		ClusterDomain:           r.Options.ClusterDomain,
		ServiceMonitorAvailable: r.optional.available(resource.ServiceMonitorGVK),
		PrometheusRuleAvailable: r.optional.available(resource.PrometheusRuleGVK),
	}
	refs := resource.SecretReferences(c)
	data, missing, err := r.readSecrets(ctx, p.cc, refs)
	if err != nil {
		return err
	}
	p.missingSecrets = missing
	c.SecretsHash = resource.SecretsHash(refs, data)
	// A backend's CA travels in the generated credentials Secret: the pods
	// mount it when it is there (what the Secret holds, not this pass's view
	// of the backend, decides, so a backend briefly unreadable rolls nothing).
	if usesBrokerBackend(p.cc) {
		c.BrokerCA = len(data[naming.BrokerSecretName(p.cc.Name)][naming.CAKey]) > 0
	}
	if d := p.cc.Spec.Database; d != nil && d.SecretRef == nil {
		c.DatabaseCA = len(data[naming.DatabaseSecretName(p.cc.Name)][naming.CAKey]) > 0
	}

	var errs, conflicts []error
	for _, b := range resource.Builders(c) {
		obj, err := b.Build()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if opt, ok := b.(resource.Optional); ok && !opt.Wanted() {
			if err := r.deleteChild(ctx, p, obj); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if _, ok := obj.(*appsv1.Deployment); ok && len(missing) > 0 {
			// Pods would hang mounting a missing Secret: leave the Deployment
			// as it is (or absent) until the Secrets exist.
			if err := r.observeDeployment(ctx, p); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := r.applyChild(ctx, p, b, obj); err != nil {
			var refused *resource.PodSecurityError
			if errors.As(err, &refused) {
				// Nothing was written: the pods keep running the last
				// accepted template. Not a failure of the pass (retrying
				// cannot help); the spec's next change brings a new pass.
				p.podSecurity = refused
				if err := r.observeDeployment(ctx, p); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if apierrors.IsConflict(err) {
				conflicts = append(conflicts, err)
				continue
			}
			errs = append(errs, err)
			continue
		}
		if d, ok := obj.(*appsv1.Deployment); ok {
			p.deployment = d
		}
	}
	if err := r.childConflicts(p, conflicts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// childConflicts decides what conflicts writing children mean for the pass.
// A conflict says another writer (kubectl, a webhook, the HPA) changed the
// object since it was read; the write was already retried once on a fresh
// read. One that comes back is retried within a second, without failing the
// pass: only conflicts that go on for childConflictGrace are a failure
// (Degraded says which child), since something then keeps fighting the
// operator over it.
func (r *ChatClusterReconciler) childConflicts(p *pass, conflicts []error) error {
	key := types.NamespacedName{Namespace: p.cc.Namespace, Name: p.cc.Name}
	c := &r.provisioned.conflicts
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(conflicts) == 0 {
		delete(c.since, key)
		return nil
	}
	now := r.now()
	if c.since == nil {
		c.since = map[types.NamespacedName]time.Time{}
	}
	first, ok := c.since[key]
	if !ok {
		first = now
		c.since[key] = now
	}
	if now.Sub(first) < childConflictGrace {
		p.requeue(conflictRetry)
		return nil
	}
	return fmt.Errorf("%w (conflicting writes since %s)", errors.Join(conflicts...), first.UTC().Format(time.RFC3339))
}

// conflictRetry is how soon a pass whose child write met a conflict runs again.
const conflictRetry = time.Second

// conflictState remembers, per ChatCluster, since when writes of its
// children keep meeting conflicts (in memory: a restart starts the grace anew).
type conflictState struct {
	mu    sync.Mutex
	since map[types.NamespacedName]time.Time
}

func (c *conflictState) forget(key types.NamespacedName) {
	c.mu.Lock()
	delete(c.since, key)
	c.mu.Unlock()
}

// applyChild creates or updates one child, with the ChatCluster as its controller.
func (r *ChatClusterReconciler) applyChild(ctx context.Context, p *pass, b resource.ResourceBuilder, obj client.Object) error {
	mutate := func() error {
		if err := b.Update(obj); err != nil {
			return err
		}
		return controllerutil.SetControllerReference(p.cc, obj, r.Scheme)
	}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, mutate)
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		// The cache did not have it, or had an older version: it lags
		// behind, another writer just changed the object, or it lost the
		// label the cache selects by. Read it from the API server and update it.
		op, err = r.updateUncached(ctx, obj, mutate)
	}
	if err != nil {
		err = fmt.Errorf("%s %s: %w", kindOf(r, obj), obj.GetName(), err)
		return err
	}
	r.childEvent(p.cc, obj, op)
	return nil
}

func (r *ChatClusterReconciler) updateUncached(ctx context.Context, obj client.Object, mutate func() error) (controllerutil.OperationResult, error) {
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return controllerutil.OperationResultNone, err
	}
	before := obj.DeepCopyObject()
	if err := mutate(); err != nil {
		return controllerutil.OperationResultNone, err
	}
	if equality.Semantic.DeepEqual(before, obj) {
		return controllerutil.OperationResultNone, nil
	}
	if err := r.Update(ctx, obj); err != nil {
		return controllerutil.OperationResultNone, err
	}
	return controllerutil.OperationResultUpdated, nil
}

// deleteChild removes an optional child the spec no longer asks for, if this
// ChatCluster controls it.
func (r *ChatClusterReconciler) deleteChild(ctx context.Context, p *pass, obj client.Object) error {
	if u, ok := obj.(*unstructured.Unstructured); ok && r.optional.absent(u.GroupVersionKind()) {
		// The kind's CRD is not installed, so there is nothing to delete.
		// Asking anyway costs every pass a live read whose REST mapping
		// miss goes to discovery under the client's lock, serialising all
		// workers: with 1,000 clusters that made every reconcile wait
		// ~800 ms (test/scale, 2026-12-04).
		return nil
	}
	err := r.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	switch {
	case meta.IsNoMatchError(err), apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("read %s %s: %w", kindOf(r, obj), obj.GetName(), err)
	case !metav1.IsControlledBy(obj, p.cc):
		return nil
	}
	if err := r.Delete(ctx, obj, client.Preconditions{UID: ptr(obj.GetUID())}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete %s %s: %w", kindOf(r, obj), obj.GetName(), err)
	}
	r.childEvent(p.cc, obj, opDeleted)
	return nil
}

// readSecrets reads the referenced Secrets with getSecret (from the cache
// when they carry Parley's label, else straight from the API server). It
// returns their data by name and the names of the required ones that do not
// exist, or that are generated names held by a Secret the operator may not use.
func (r *ChatClusterReconciler) readSecrets(ctx context.Context, cc *v1alpha1.ChatCluster, refs []resource.SecretReference) (map[string]map[string][]byte, []string, error) {
	data := map[string]map[string][]byte{}
	var missing []string
	generated := generatedSecretNames(cc)
	for _, ref := range refs {
		if _, seen := data[ref.Name]; seen {
			continue
		}
		s, found, err := r.getSecret(ctx, cc.Namespace, ref.Name)
		switch {
		case err != nil:
			return nil, nil, err
		case found && generated[ref.Name] && secretOwnership(cc, s) != nil:
			// Never mounted: the pods would run with what someone else put
			// there. The step that writes it says why in a condition.
			missing = append(missing, ref.Name+" (one the operator did not create: refused)")
			data[ref.Name] = nil
		case found:
			data[ref.Name] = s.Data
		case !ref.Optional:
			missing = append(missing, ref.Name)
		}
	}
	return data, missing, nil
}

func kindOf(r *ChatClusterReconciler, obj client.Object) string {
	if k := obj.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	gvk, _, err := r.Scheme.ObjectKinds(obj)
	if err != nil || len(gvk) == 0 {
		return fmt.Sprintf("%T", obj)
	}
	return gvk[0].Kind
}

func ptr[T any](v T) *T { return &v }

// childConflictGrace is how long conflicts writing a child may go on before
// they make the cluster Degraded.
const childConflictGrace = 30 * time.Second
