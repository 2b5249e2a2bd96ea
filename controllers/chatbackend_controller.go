package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/backends"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/status"
)

// +kubebuilder:rbac:groups=chat.parley.io,resources=chatbackends,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatbackends/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatbackends/finalizers,verbs=update

// FinalizerBackendInUse keeps a ChatBackend while ChatClusters use it: their
// vhosts, users, roles and databases live there, and deleting them needs it.
// It is the PersistentVolumeClaim-protection pattern.
const FinalizerBackendInUse = "chat.parley.io/backend-in-use"

// Reasons of the ChatBackend's Ready condition besides the resolver's and the provisioners'.
const (
	ReasonReachable = "Reachable"
	ReasonDeleting  = "InUse"
)

// backendIndex indexes ChatClusters by the ChatBackends their status says they use.
const backendIndex = "chat.parley.io/backends"

// DefaultProbeInterval is how often a backend's reachability is checked.
const DefaultProbeInterval = time.Minute

// ChatBackendReconciler reports each ChatBackend's status: reachable with
// its admin credentials, the server's version, whether it is the default of
// its type, and how many ChatClusters use it; and it holds a backend's
// deletion while ChatClusters still use it.
type ChatBackendReconciler struct {
	client.Client
	// APIReader reads the backend's Secrets and referenced objects around the cache.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Options   Options
	// Tenants and Database probe the backends (default: the real clients).
	Tenants  amqpprov.TenantProvisioner
	Database pgprov.Provisioner
	// ProbeInterval between reachability checks (default DefaultProbeInterval).
	ProbeInterval time.Duration
	// CallTimeout bounds one probe (default DefaultCallTimeout).
	CallTimeout time.Duration

	mu     sync.Mutex
	probed map[types.UID]probeResult
}

type probeResult struct {
	generation int64
	inputs     string
	at         time.Time
	version    string
	err        error
}

// Reconcile refreshes one ChatBackend's status.
func (r *ChatBackendReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &v1alpha1.ChatBackend{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var clusters v1alpha1.ChatClusterList
	// Through the index: a ChatCluster's status change brings a pass here,
	// which must not read every ChatCluster of the cluster.
	if err := r.List(ctx, &clusters, client.MatchingFields{backendIndex: b.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("list ChatClusters: %w", err)
	}
	users := backends.UsedBy(clusters.Items, b.Name)
	if err := r.protect(ctx, b, len(users)); err != nil {
		return ctrl.Result{}, err
	}
	var all v1alpha1.ChatBackendList
	if err := r.List(ctx, &all); err != nil {
		return ctrl.Result{}, fmt.Errorf("list ChatBackends: %w", err)
	}

	original := b.DeepCopy()
	st := &b.Status
	st.ObservedGeneration = b.Generation
	st.Type = b.Type()
	st.ChatClusters = int32(len(users))
	d := backends.Default(all.Items, b.Type())
	st.Default = d != nil && d.Name == b.Name
	res := r.probe(ctx, b)
	if res.err == nil {
		st.Version = res.version
	}
	cond := metav1.Condition{Type: v1alpha1.ConditionBackendReady, ObservedGeneration: b.Generation}
	switch {
	case res.err != nil:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, reasonOf(res.err), res.err.Error()
	case !b.DeletionTimestamp.IsZero():
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonDeleting
		cond.Message = fmt.Sprintf("being deleted; held until no ChatCluster uses it (%d: %v)", len(users), first(users, 5))
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonReachable
		cond.Message = fmt.Sprintf("%s %s answers with the admin credentials", b.Type(), res.version)
	}
	if b.IsDefault() && !st.Default && d != nil {
		cond.Message += fmt.Sprintf("; annotated default, but %q is the newer default and wins", d.Name)
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	if !equality.Semantic.DeepEqual(original.Status, b.Status) {
		if err := r.Status().Patch(ctx, b, client.MergeFrom(original)); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("patch ChatBackend status: %w", err)
		}
	}
	return ctrl.Result{RequeueAfter: r.probeInterval()}, nil
}

// protect keeps the in-use finalizer while ChatClusters use the backend.
func (r *ChatBackendReconciler) protect(ctx context.Context, b *v1alpha1.ChatBackend, users int) error {
	want := users > 0
	if want == controllerutil.ContainsFinalizer(b, FinalizerBackendInUse) {
		return nil
	}
	if want && !b.DeletionTimestamp.IsZero() {
		return nil // cannot add a finalizer to an object being deleted; it had none, so it goes
	}
	original := b.DeepCopy()
	if want {
		controllerutil.AddFinalizer(b, FinalizerBackendInUse)
	} else {
		controllerutil.RemoveFinalizer(b, FinalizerBackendInUse)
	}
	if err := r.Patch(ctx, b, client.MergeFromWithOptions(original, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("update ChatBackend finalizers: %w", err))
	}
	return nil
}

// probe checks the backend at most once per ProbeInterval (and at once when
// its spec or credentials change): status updates of ChatClusters bring many
// passes that only recount.
func (r *ChatBackendReconciler) probe(ctx context.Context, b *v1alpha1.ChatBackend) probeResult {
	resolver := backends.Resolver{Reader: r.APIReader, ClusterDomain: r.Options.ClusterDomain}
	var inputs string
	var run func(context.Context) (string, error)
	if b.Spec.RabbitMQ != nil {
		conn, err := resolver.RabbitMQ(ctx, b)
		if err != nil {
			return probeResult{err: err}
		}
		inputs = digest(conn.URI, conn.ManagementURI, string(conn.CAPEM))
		run = func(ctx context.Context) (string, error) {
			info, err := r.tenants().Probe(ctx, amqpprov.Backend{URI: conn.URI, ManagementURI: conn.ManagementURI, CAPEM: conn.CAPEM})
			return info.Version, err
		}
	} else {
		conn, err := resolver.PostgreSQL(ctx, b)
		if err != nil {
			return probeResult{err: err}
		}
		inputs = digest(conn.URI, string(conn.CAPEM))
		run = func(ctx context.Context) (string, error) {
			info, err := r.database().Probe(ctx, pgprov.Admin{URI: conn.URI, CAPEM: conn.CAPEM})
			return info.Version, err
		}
	}
	now := time.Now()
	r.mu.Lock()
	last, ok := r.probed[b.UID]
	r.mu.Unlock()
	if ok && last.generation == b.Generation && last.inputs == inputs && now.Sub(last.at) < r.probeInterval() {
		return last
	}
	timeout := r.CallTimeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	version, err := run(callCtx)
	res := probeResult{generation: b.Generation, inputs: inputs, at: now, version: version, err: err}
	r.mu.Lock()
	if r.probed == nil {
		r.probed = map[types.UID]probeResult{}
	}
	r.probed[b.UID] = res
	r.mu.Unlock()
	return res
}

func (r *ChatBackendReconciler) tenants() amqpprov.TenantProvisioner {
	if r.Tenants == nil {
		return &amqpprov.Client{}
	}
	return r.Tenants
}

func (r *ChatBackendReconciler) database() pgprov.Provisioner {
	if r.Database == nil {
		return &pgprov.Client{}
	}
	return r.Database
}

func (r *ChatBackendReconciler) probeInterval() time.Duration {
	if r.ProbeInterval > 0 {
		return r.ProbeInterval
	}
	return DefaultProbeInterval
}

// reasonOf is an error's condition reason: the resolver's or the
// provisioners' reason, or a generic one.
func reasonOf(err error) string {
	var re *status.ReasonError
	if errors.As(err, &re) {
		return re.Reason
	}
	if r := amqpprov.ReasonOf(err); r != amqpprov.ReasonError {
		return string(r)
	}
	return string(pgprov.ReasonOf(err))
}

// allBackends enqueues every ChatBackend (there are few).
func (r *ChatBackendReconciler) allBackends(ctx context.Context, _ client.Object) []reconcile.Request {
	var all v1alpha1.ChatBackendList
	if err := r.List(ctx, &all); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(all.Items))
	for _, b := range all.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: b.Name}})
	}
	return reqs
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}

// SetupWithManager registers the reconciler; a ChatCluster's change of
// backends re-counts the backends it names, and a change of one backend's
// default annotation re-evaluates the others' Default column.
func (r *ChatBackendReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("chatbackend-controller")
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.ChatCluster{}, backendIndex, func(o client.Object) []string {
		b := o.(*v1alpha1.ChatCluster).Status.Backends
		var names []string
		for _, n := range []string{b.Broker, b.Database} {
			if n != "" {
				names = append(names, n)
			}
		}
		return names
	}); err != nil {
		return fmt.Errorf("index ChatClusters by ChatBackend: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("chatbackend").
		For(&v1alpha1.ChatBackend{}).
		// Who is the default depends on the others' annotations.
		Watches(&v1alpha1.ChatBackend{}, handler.EnqueueRequestsFromMapFunc(r.allBackends),
			builder.WithPredicates(predicate.AnnotationChangedPredicate{})).
		Watches(&v1alpha1.ChatCluster{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			cc := o.(*v1alpha1.ChatCluster)
			var reqs []reconcile.Request
			for _, n := range []string{cc.Status.Backends.Broker, cc.Status.Backends.Database} {
				if n != "" {
					reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: n}})
				}
			}
			return reqs
		})).
		Complete(r)
}
