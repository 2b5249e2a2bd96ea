package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/status"
)

// The provisioning steps write the Secrets they generate and the finalizer.
// +kubebuilder:rbac:groups="",resources=secrets,verbs=create;update;patch
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatclusters,verbs=update;patch

// Provisioning configures the steps that manage state outside Kubernetes
// (RabbitMQ topology, PostgreSQL role and database) and the generated keys.
// The zero value is the production setup; tests swap the clients and the clock.
type Provisioning struct {
	// Broker declares and deletes RabbitMQ topology in a shared vhost, for
	// the deprecated spec.broker.secretRef (default: a real amqp client).
	Broker amqpprov.Provisioner
	// Tenants creates and deletes a cluster's own vhost, user and topology
	// in a ChatBackend's RabbitMQ (default: a real amqp client).
	Tenants amqpprov.TenantProvisioner
	// Database ensures and drops PostgreSQL roles and databases (default: a real client).
	Database pgprov.Provisioner
	// Now is the clock key rotation runs on (default time.Now).
	Now func() time.Time
	// CallTimeout bounds one call to RabbitMQ or PostgreSQL (default 20s).
	CallTimeout time.Duration
	// ConnectTimeout bounds connecting to RabbitMQ or PostgreSQL, dial and
	// handshake, within a call (default 5s): a server that accepts and never
	// answers holds a worker this long, not the whole CallTimeout.
	ConnectTimeout time.Duration
	// BackendConcurrency bounds the calls in flight to one backend (a
	// ChatBackend, or the host:port of a deprecated admin URI), so one slow
	// backend holds at most that many workers (default 2).
	BackendConcurrency int
	// UnreachableBackoff is the wait after a backend could not be reached,
	// doubled after each further failure up to MaxUnreachableBackoff (default
	// 5s). Meanwhile the clusters on it skip their calls; their condition
	// says when the next attempt is.
	UnreachableBackoff time.Duration
	// CheckInterval is how long a successful declare or ensure is trusted
	// before the next pass checks the external state again, repairing drift
	// such as an exchange deleted by hand (default: Options.ResyncPeriod, or
	// 10 minutes). Passes in between (a Deployment rolling, a status change)
	// do not reconnect to RabbitMQ or PostgreSQL; a change of the spec or of
	// a referenced Secret always does.
	CheckInterval time.Duration
	// CleanupRetryFor is how long the operator keeps trying to delete
	// external state when a ChatCluster is deleted, or the section that
	// asked for it is removed, counted from the first failed attempt
	// (default 24h): a broker restarting or a database failing over for an
	// hour must not leave a vhost or a database full of history behind. After
	// it the operator lets go and an event names what was left behind. The
	// attempts and the first failure are kept in status.externalState.
	CleanupRetryFor time.Duration
	// CleanupBackoff is the wait after the first failed cleanup, doubled
	// after each further one up to CleanupMaxBackoff (default 5s).
	CleanupBackoff time.Duration
	// CleanupMaxBackoff caps the wait between cleanup attempts (default 5m).
	CleanupMaxBackoff time.Duration
}

// provisioningState is what the provisioning steps remember between passes
// (in memory: an operator restart just checks everything again). What must
// survive a restart, the cleanup attempts, is in status.externalState.
type provisioningState struct {
	synced    syncCache
	gate      backendGate
	conflicts conflictState
}

// Defaults of the Provisioning settings left zero (and of the manager's flags).
const (
	DefaultCallTimeout       = 20 * time.Second
	DefaultCheckInterval     = 10 * time.Minute
	DefaultCleanupRetryFor   = 24 * time.Hour
	DefaultCleanupBackoff    = 5 * time.Second
	DefaultCleanupMaxBackoff = 5 * time.Minute
)

// MaxCleanupRetryFor bounds CleanupRetryFor: a deletion is never held for
// longer than this without a human deciding (the abandon annotation).
const MaxCleanupRetryFor = 30 * 24 * time.Hour

// ValidateFlags checks settings given explicitly, as the manager's flags
// give them (where 0 is not "the default"): a cleanup retry period up to
// MaxCleanupRetryFor; positive timeouts and backoffs, each cap at least what
// it caps; a check interval not negative (0: the resync period). Errors name
// the flags.
func (p Provisioning) ValidateFlags() error {
	var errs []error
	if p.CleanupRetryFor <= 0 || p.CleanupRetryFor > MaxCleanupRetryFor {
		errs = append(errs, fmt.Errorf("--cleanup-retry-for=%s: must be positive and at most %s", p.CleanupRetryFor, MaxCleanupRetryFor))
	}
	if p.CleanupBackoff <= 0 {
		errs = append(errs, fmt.Errorf("--cleanup-backoff=%s: must be positive", p.CleanupBackoff))
	}
	if p.CleanupMaxBackoff < p.CleanupBackoff {
		errs = append(errs, fmt.Errorf("--cleanup-max-backoff=%s: must be at least --cleanup-backoff (%s)", p.CleanupMaxBackoff, p.CleanupBackoff))
	}
	if p.CallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--external-call-timeout=%s: must be positive", p.CallTimeout))
	}
	if p.ConnectTimeout <= 0 || p.ConnectTimeout > p.CallTimeout {
		errs = append(errs, fmt.Errorf("--external-connect-timeout=%s: must be positive and at most --external-call-timeout", p.ConnectTimeout))
	}
	if p.BackendConcurrency < 1 {
		errs = append(errs, fmt.Errorf("--backend-concurrency=%d: must be at least 1", p.BackendConcurrency))
	}
	if p.UnreachableBackoff <= 0 || p.UnreachableBackoff > MaxUnreachableBackoff {
		errs = append(errs, fmt.Errorf("--unreachable-backoff=%s: must be positive and at most %s", p.UnreachableBackoff, MaxUnreachableBackoff))
	}
	if p.CheckInterval < 0 {
		errs = append(errs, fmt.Errorf("--external-check-interval=%s: must not be negative (0: the resync period)", p.CheckInterval))
	}
	return errors.Join(errs...)
}

func (r *ChatClusterReconciler) broker() amqpprov.Provisioner {
	if r.Provisioning.Broker == nil {
		return &amqpprov.Client{ConnectTimeout: r.connectTimeout()}
	}
	return r.Provisioning.Broker
}

func (r *ChatClusterReconciler) tenants() amqpprov.TenantProvisioner {
	if r.Provisioning.Tenants == nil {
		return &amqpprov.Client{ConnectTimeout: r.connectTimeout()}
	}
	return r.Provisioning.Tenants
}

func (r *ChatClusterReconciler) database() pgprov.Provisioner {
	if r.Provisioning.Database == nil {
		return &pgprov.Client{ConnectTimeout: r.connectTimeout()}
	}
	return r.Provisioning.Database
}

func (r *ChatClusterReconciler) connectTimeout() time.Duration {
	if t := r.Provisioning.ConnectTimeout; t > 0 {
		return t
	}
	return DefaultConnectTimeout
}

func (r *ChatClusterReconciler) now() time.Time {
	if r.Provisioning.Now != nil {
		return r.Provisioning.Now()
	}
	return time.Now()
}

func (r *ChatClusterReconciler) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	t := r.Provisioning.CallTimeout
	if t <= 0 {
		t = DefaultCallTimeout
	}
	return context.WithTimeout(ctx, t)
}

func (r *ChatClusterReconciler) checkInterval() time.Duration {
	switch {
	case r.Provisioning.CheckInterval > 0:
		return r.Provisioning.CheckInterval
	case r.Options.ResyncPeriod > 0:
		return r.Options.ResyncPeriod
	}
	return DefaultCheckInterval
}

// Condition reasons the provisioning steps add to those of the provisioners
// (amqp: Unreachable, AccessRefused, DeclarationConflict, InvalidURI;
// postgres: Unreachable, CredentialsRefused, PermissionDenied, Conflict,
// InvalidURI, Invalid).
const (
	// ReasonBackendChanged: the spec names another ChatBackend than the one holding the cluster's state.
	ReasonBackendChanged = "BackendChanged"
	// ReasonSecretNotFound: a referenced Secret, or its key, does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonCleanupFailed: deleting external state of a deleted ChatCluster failed (retrying).
	ReasonCleanupFailed = "CleanupFailed"
	// ReasonInvalidKey: a user-supplied key is unusable.
	ReasonInvalidKey = "InvalidKey"
)

// Events the provisioning steps record.
const (
	EventTopologyDeclared  = "TopologyDeclared"
	EventTopologyRepaired  = "TopologyRepaired"
	EventTenantCreated     = "BrokerTenantCreated"
	EventTenantRepaired    = "BrokerTenantRepaired"
	EventDeprecated        = "DeprecatedField"
	EventDatabaseCreated   = "DatabaseCreated"
	EventPasswordApplied   = "PasswordApplied"
	EventKeyGenerated      = "KeyGenerated"
	EventKeyRotated        = "KeyRotated"
	EventKeyDropped        = "PreviousKeyDropped"
	EventRotationIgnored   = "RotationIgnored"
	EventExternalDeleted   = "ExternalStateDeleted"
	EventCleanupFailed     = "CleanupFailed"
	EventLeftBehind        = "ExternalStateLeftBehind"
	EventExternalAbandoned = "ExternalStateAbandoned"
)

// passError is what a provisioning step returns for err, which its condition
// already reports: a missing Secret is something to wait for (its creation,
// or the next check, brings another pass), not a failed pass; anything else
// fails the pass, so it is retried with backoff and Degraded says why.
func passError(err error) error {
	var re *status.ReasonError
	if errors.As(err, &re) && re.Reason == ReasonSecretNotFound {
		return nil
	}
	return err
}

// stepFailure returns how a provisioning step fails with err: the step's
// condition (built by ready) says why, its remembered success is forgotten so
// the next pass calls out again, and passError decides whether the pass
// fails.
func (r *ChatClusterReconciler) stepFailure(p *pass, step string, ready func(generation int64, err error, message string) metav1.Condition) func(error) error {
	return func(err error) error {
		var busy *errBackendBusy
		if errors.As(err, &busy) {
			// Not tried: the condition stays as it is, and so does a
			// failure it reports (Degraded does not flap meanwhile).
			p.requeue(busy.wait)
			typ := ready(p.cc.Generation, nil, "").Type
			if c := meta.FindStatusCondition(p.cc.Status.Conditions, typ); c != nil && c.Status == metav1.ConditionFalse {
				p.waiting = append(p.waiting, fmt.Errorf("%s: %s", typ, c.Message))
			}
			return nil
		}
		p.setCondition(ready(p.cc.Generation, err, ""))
		r.provisioned.synced.invalidate(p.cc, step)
		var down *errBackendDown
		if errors.As(err, &down) {
			// The backend's backoff, not the workqueue's, decides when to
			// try again: the condition says when, and the pass does not fail.
			p.requeue(max(down.wait(r.now()), staleRetry))
			p.waiting = append(p.waiting, err)
			return nil
		}
		return passError(err)
	}
}

// getSecret reads a Secret from the cache or, when the cache does not hold it
// (a Secret without Parley's label, or one just created), from the API server.
func (r *ChatClusterReconciler) getSecret(ctx context.Context, namespace, name string) (*corev1.Secret, bool, error) {
	s := &corev1.Secret{}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	err := r.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, s)
	}
	switch {
	case err == nil:
		return s, true, nil
	case apierrors.IsNotFound(err):
		return nil, false, nil
	default:
		return nil, false, fmt.Errorf("read Secret %s: %w", name, err)
	}
}

// secretValue reads one key of a Secret the ChatCluster references.
func (r *ChatClusterReconciler) secretValue(ctx context.Context, namespace string, ref v1alpha1.SecretKeyReference) (string, error) {
	s, found, err := r.getSecret(ctx, namespace, ref.Name)
	if err != nil {
		return "", err
	}
	if !found {
		return "", status.WithReason(ReasonSecretNotFound, fmt.Errorf("Secret %s does not exist", ref.Name))
	}
	v, ok := s.Data[ref.Key]
	if !ok || len(v) == 0 {
		return "", status.WithReason(ReasonSecretNotFound, fmt.Errorf("Secret %s has no key %q", ref.Name, ref.Key))
	}
	return string(v), nil
}

// writeSecret creates or updates a Secret the operator generates for a
// cluster. mutate sets the desired data and annotations on the live Secret
// (or a new one). A Secret the operator creates is controlled by the
// ChatCluster (and goes with it); one that existed before, made by a user to
// choose a value, keeps its owners. Nothing is written when nothing changed.
func (r *ChatClusterReconciler) writeSecret(ctx context.Context, p *pass, name string, mutate func(*corev1.Secret)) error {
	s, found, err := r.generatedSecret(ctx, p, name)
	if err != nil {
		return err
	}
	if !found {
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.cc.Namespace},
			Type:       corev1.SecretTypeOpaque,
		}
	}
	before := s.DeepCopy()
	labels := s.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	for k, v := range naming.Labels(p.cc.Name) {
		labels[k] = v
	}
	s.Labels = labels
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	mutate(s)
	if len(s.Annotations) == 0 {
		s.Annotations = nil
	}
	if !found {
		if err := controllerutil.SetControllerReference(p.cc, s, r.Scheme); err != nil {
			return fmt.Errorf("Secret %s: %w", name, err)
		}
		if err := r.Create(ctx, s); err != nil {
			return fmt.Errorf("create Secret %s: %w", name, err)
		}
		r.childEvent(p.cc, s, controllerutil.OperationResultCreated)
		return nil
	}
	if equality.Semantic.DeepEqual(before, s) {
		return nil
	}
	if err := r.Update(ctx, s); err != nil {
		return fmt.Errorf("update Secret %s: %w", name, err)
	}
	r.childEvent(p.cc, s, controllerutil.OperationResultUpdated)
	return nil
}

// digest fingerprints a step's inputs (URIs with their passwords included)
// without keeping them in memory in the clear.
func digest(parts ...string) string {
	h := sha256.New()
	for _, s := range parts {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dataDigest fingerprints a Secret's data, independent of map order.
func dataDigest(data map[string][]byte) string {
	keys := slices.Sorted(maps.Keys(data))
	parts := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		parts = append(parts, k, string(data[k]))
	}
	return digest(parts...)
}

// syncCache remembers, per ChatCluster and step, the inputs of the last
// successful call to an external system and the condition it produced, so a
// pass with the same inputs within the check interval reports it again
// instead of reconnecting.
type syncCache struct {
	mu sync.Mutex
	m  map[syncKey]syncEntry
}

type syncKey struct {
	cluster types.NamespacedName
	step    string
}

type syncEntry struct {
	uid    types.UID // a ChatCluster re-created under the same name starts afresh
	inputs string
	at     time.Time
	cond   metav1.Condition
}

func keyOf(cc *v1alpha1.ChatCluster, step string) syncKey {
	return syncKey{types.NamespacedName{Namespace: cc.Namespace, Name: cc.Name}, step}
}

// fresh returns the remembered condition when inputs match and it is younger than interval.
func (c *syncCache) fresh(cc *v1alpha1.ChatCluster, step, inputs string, now time.Time, interval time.Duration) (metav1.Condition, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[keyOf(cc, step)]
	if !ok || e.uid != cc.UID || e.inputs != inputs || now.Sub(e.at) >= interval || now.Before(e.at) {
		return metav1.Condition{}, false
	}
	return e.cond, true
}

// seen reports whether the step succeeded before for this cluster (in this process).
func (c *syncCache) seen(cc *v1alpha1.ChatCluster, step string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[keyOf(cc, step)]
	return ok && e.uid == cc.UID
}

func (c *syncCache) record(cc *v1alpha1.ChatCluster, step, inputs string, now time.Time, cond metav1.Condition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[syncKey]syncEntry{}
	}
	c.m[keyOf(cc, step)] = syncEntry{uid: cc.UID, inputs: inputs, at: now, cond: cond}
}

// invalidate makes the next pass call the external system again (after a failure).
func (c *syncCache) invalidate(cc *v1alpha1.ChatCluster, step string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[keyOf(cc, step)]; ok {
		e.inputs = ""
		c.m[keyOf(cc, step)] = e
	}
}

// drop forgets one step of a cluster (its section was removed from the spec).
func (c *syncCache) drop(cc *v1alpha1.ChatCluster, step string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, keyOf(cc, step))
}

// forget drops what is remembered about a cluster (deleted).
func (c *syncCache) forget(cluster types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if k.cluster == cluster {
			delete(c.m, k)
		}
	}
}
