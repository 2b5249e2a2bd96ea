// Package controllers holds the ChatCluster reconciler, split by concern:
// provisioning steps (reconcile_keys.go, reconcile_broker.go,
// reconcile_database.go), the Kubernetes children (reconcile_children.go),
// the status (reconcile_status.go), events and metrics.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/resource"
)

// The manager's permissions, least privilege: read ChatClusters and write
// their status; create and update the children (delete only the optional
// ones); read Secrets (the provisioning steps add what they write).
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=configmaps;services;serviceaccounts,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses;networkpolicies,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors;prometheusrules,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Options are the operator-wide settings from the manager's flags.
type Options struct {
	// DefaultImage is the chat server image for clusters that do not name one.
	DefaultImage string
	// ClusterDomain is the cluster's DNS domain, for the endpoint URL.
	ClusterDomain string
	// ResyncPeriod is how often a cluster is reconciled without a change
	// (picks up changes to referenced Secrets outside the cache's label selector).
	ResyncPeriod time.Duration
	// MaxConcurrentReconciles bounds parallel reconciles.
	MaxConcurrentReconciles int
	// KindRecheckInterval is how often discovery is asked whether the
	// ServiceMonitor or PrometheusRule kind appeared (0: DefaultKindRecheckInterval).
	KindRecheckInterval time.Duration
}

// ChatClusterReconciler turns a ChatCluster into running chat servers.
type ChatClusterReconciler struct {
	client.Client
	// APIReader reads around the cache: referenced Secrets the cache does not
	// hold because they lack Parley's label.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder
	Options   Options
	// Provisioning configures the steps that manage external state and keys
	// (provisioning.go); the zero value is the production setup.
	Provisioning Provisioning

	provisioned provisioningState

	// optional are the Prometheus Operator's kinds, created where they exist (kinds.go).
	optional *optionalKinds
}

// pass is what one reconcile learns as it goes, from the provisioning steps
// to the children to the status.
type pass struct {
	cc *v1alpha1.ChatCluster
	// original is the ChatCluster as read, the base of the status patch.
	original *v1alpha1.ChatCluster
	paused   bool

	deployment     *appsv1.Deployment
	missingSecrets []string
	// podSecurity is why the Deployment's new pod template was refused.
	podSecurity *resource.PodSecurityError
	errs        []error
	// waiting are failures a backoff of ours retries (requeueAfter): they
	// make the cluster Degraded without failing the pass.
	waiting []error
	// conditions set by the provisioning steps (BrokerReady, DatabaseReady).
	conditions   []metav1.Condition
	requeueAfter time.Duration
	// secrets names the Secrets the provisioning steps generated and that exist.
	secrets v1alpha1.GeneratedSecrets
	// broker and database are the ChatBackends the cluster uses, resolved by
	// the backends step (nil: the spec does not use a backend for it).
	broker, database *backendUse
}

func (p *pass) fail(err error) { p.errs = append(p.errs, err) }

// setCondition records a condition a step owns (BrokerReady, DatabaseReady);
// the status patch writes it with the others.
func (p *pass) setCondition(c metav1.Condition) {
	c.ObservedGeneration = p.cc.Generation
	p.conditions = append(p.conditions, c)
}

// requeue asks for another pass within d (the soonest request wins).
func (p *pass) requeue(d time.Duration) {
	if d > 0 && (p.requeueAfter == 0 || d < p.requeueAfter) {
		p.requeueAfter = d
	}
}

func (p *pass) err() error { return errors.Join(p.errs...) }

// step is one provisioning concern run before the children are built.
type step struct {
	name string
	run  func(ctx context.Context, p *pass) error
	// records: the step stores what the external steps need first (the finalizer).
	records bool
	// external: the step creates state outside Kubernetes; it waits for a
	// pass where the recording step succeeded.
	external bool
}

// provisioningSteps run before the children, in this order: the backends
// the cluster uses are settled (reconcile_backends.go); the finalizer
// and status.externalState are stored before any external state that needs
// them exists (finalizer.go), so when that first step fails the broker and
// database steps wait for the next pass; the Secrets the pods mount (keys,
// database credentials) and the broker topology they connect to exist before
// the Deployment refers to them. The broker and database steps report
// through p.setCondition.
func (r *ChatClusterReconciler) provisioningSteps() []step {
	return []step{
		{name: "backends", run: r.reconcileBackends},
		{name: "external state", run: r.reconcileExternalState, records: true},
		{name: "keys", run: r.reconcileKeys},
		{name: "broker", run: r.reconcileBroker, external: true},
		{name: "database", run: r.reconcileDatabase, external: true},
	}
}

// Reconcile brings one ChatCluster's children and status in line with its spec.
func (r *ChatClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cc := &v1alpha1.ChatCluster{}
	if err := r.Get(ctx, req.NamespacedName, cc); err != nil {
		if apierrors.IsNotFound(err) {
			r.provisioned.synced.forget(req.NamespacedName)
			r.provisioned.conflicts.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cc.DeletionTimestamp.IsZero() {
		// The children go with the ChatCluster through their owner
		// references; only external state needs the finalizer (finalizer.go).
		return r.finalize(ctx, cc)
	}

	p := &pass{cc: cc, original: cc.DeepCopy(), paused: isPaused(cc)}
	if p.paused {
		if err := r.observeDeployment(ctx, p); err != nil {
			p.fail(err)
		}
	} else {
		recorded := true // the finalizer and status.externalState are stored
		for _, s := range r.provisioningSteps() {
			if s.external && !recorded {
				continue
			}
			err := s.run(ctx, p)
			if errors.Is(err, errStale) {
				return ctrl.Result{RequeueAfter: staleRetry}, nil
			}
			if err != nil {
				p.fail(fmt.Errorf("%s: %w", s.name, err))
				recorded = recorded && !s.records
			}
		}
		if err := r.reconcileChildren(ctx, p); err != nil {
			p.fail(err)
		}
	}
	if err := r.reconcileStatus(ctx, p); errors.Is(err, errStale) {
		return ctrl.Result{RequeueAfter: staleRetry}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}
	if err := p.err(); err != nil {
		return ctrl.Result{}, err
	}
	p.requeue(r.Options.ResyncPeriod)
	return ctrl.Result{RequeueAfter: p.requeueAfter}, nil
}

func isPaused(cc *v1alpha1.ChatCluster) bool {
	return cc.Annotations[v1alpha1.AnnotationPaused] == "true"
}

// staleRetry is how soon a pass that worked from a stale ChatCluster runs again.
const staleRetry = 100 * time.Millisecond

// Index of ChatClusters by the Secrets they reference, to map a changed Secret to its clusters.
const secretIndex = "chat.parley.io/secret-names"

// SetupWithManager registers the reconciler, its watches, its index and its metrics.
func (r *ChatClusterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Scheme == nil {
		r.Scheme = mgr.GetScheme()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("chatcluster-controller")
	}
	ctx := context.Background()
	r.optional = newOptionalKinds(mgr.GetRESTMapper(), r.Options.KindRecheckInterval, resource.ServiceMonitorGVK, resource.PrometheusRuleGVK)
	r.optional.check(ctx)
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.ChatCluster{}, secretIndex, func(o client.Object) []string {
		return resource.ReferencedSecretNames(resource.Cluster{ChatCluster: o.(*v1alpha1.ChatCluster)})
	}); err != nil {
		return fmt.Errorf("index ChatClusters by Secret: %w", err)
	}
	if err := registerMetrics(mgr.GetClient()); err != nil {
		return err
	}

	b := ctrl.NewControllerManagedBy(mgr).
		Named("chatcluster").
		// Status writes (ours) change neither generation nor annotations: they do not trigger a pass.
		For(&v1alpha1.ChatCluster{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Service{}).
		Owns(&appsv1.Deployment{}).
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.Ingress{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clustersForSecret)).
		// A backend's spec or default annotation, or a namespace's labels
		// (allowedNamespaces), decide what a cluster may use.
		Watches(&v1alpha1.ChatBackend{}, handler.EnqueueRequestsFromMapFunc(r.clustersForBackend),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.clustersInNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// A pass for every ChatCluster when an optional kind appears.
		WatchesRawSource(source.Channel(r.optional.appeared, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.Options.MaxConcurrentReconciles)})
	// The kinds that exist now are owned like the built-in children; the
	// others are watched when they appear (optionalKinds.Start).
	for _, u := range r.optional.watchable() {
		b = b.Owns(u)
	}
	c, err := b.Build(r)
	if err != nil {
		return err
	}
	r.optional.ctrl, r.optional.cache = c, mgr.GetCache()
	r.optional.owner = handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.ChatCluster{}, handler.OnlyControllerOwner())
	r.optional.list = listChatClusters(mgr.GetClient())
	return mgr.Add(r.optional)
}

// clustersForSecret maps a Secret to the ChatClusters in its namespace that reference it.
func (r *ChatClusterReconciler) clustersForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.ChatClusterList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{secretIndex: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "list ChatClusters referencing a Secret", "secret", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, cc := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: cc.Namespace, Name: cc.Name}})
	}
	return reqs
}

// clustersForBackend maps a ChatBackend to the ChatClusters that use it or
// may (those naming it, and those taking a default).
func (r *ChatClusterReconciler) clustersForBackend(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.ChatClusterList
	if err := r.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "list ChatClusters for a ChatBackend", "backend", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if mayUseBackend(&list.Items[i], o.GetName()) {
			cc := list.Items[i]
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: cc.Namespace, Name: cc.Name}})
		}
	}
	return reqs
}

// mayUseBackend reports whether backend name concerns cc: cc uses it, names
// it, or waits for a default it may have become.
func mayUseBackend(cc *v1alpha1.ChatCluster, name string) bool {
	concerns := func(used, named string) bool {
		return used == name || named == name || (used == "" && named == "")
	}
	return (usesBrokerBackend(cc) && concerns(cc.Status.Backends.Broker, cc.Spec.Broker.Backend)) ||
		(usesDatabaseBackend(cc) && concerns(cc.Status.Backends.Database, cc.Spec.Database.Backend))
}

// clustersInNamespace maps a Namespace whose labels changed to its ChatClusters.
func (r *ChatClusterReconciler) clustersInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.ChatClusterList
	if err := r.List(ctx, &list, client.InNamespace(o.GetName())); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, cc := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: cc.Namespace, Name: cc.Name}})
	}
	return reqs
}

// observeDeployment reads the Deployment without changing it (paused clusters).
func (r *ChatClusterReconciler) observeDeployment(ctx context.Context, p *pass) error {
	d := &appsv1.Deployment{}
	err := r.Get(ctx, types.NamespacedName{Namespace: p.cc.Namespace, Name: p.cc.Name}, d)
	switch {
	case err == nil:
		if metav1.IsControlledBy(d, p.cc) {
			p.deployment = d
		}
		return nil
	case meta.IsNoMatchError(err), client.IgnoreNotFound(err) == nil:
		return nil
	default:
		return fmt.Errorf("read Deployment: %w", err)
	}
}
