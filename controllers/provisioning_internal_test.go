package controllers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/keys"
	"github.com/parley-chat/parley/internal/naming"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
)

// Unit tests of the provisioning steps' logic, with the external systems
// behind amqp.Funcs and postgres.Funcs and a fake API client. The same
// behaviour against the real RabbitMQ, PostgreSQL and API server is in
// provisioning_test.go.

const testNS = "chat"

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// calls records what the fake provisioners were asked.
type calls struct {
	mu       sync.Mutex
	declares []string // URIs
	deletes  int
	ensures  []string // passwords
	drops    int
	// hadFinalizer records, at each declare, whether the stored cluster had
	// the finalizer; hadRecord, whether its status.externalState named the broker.
	hadFinalizer, hadRecord []bool
}

type harness struct {
	r      *ChatClusterReconciler
	c      client.Client
	clock  *fakeClock
	rec    *events.FakeRecorder
	calls  *calls
	broker struct{ declareErr, deleteErr error }
	db     struct {
		ensureErr, dropErr error
		// duringEnsure, when set, runs inside Ensure (what else happens
		// while the role is being changed).
		duringEnsure func()
	}
}

func newHarness(t *testing.T, objs ...client.Object) *harness {
	t.Helper()
	scheme := NewScheme()
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.ChatCluster{}).Build()
	h := &harness{c: c, clock: &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}, rec: events.NewFakeRecorder(100), calls: &calls{}}
	h.r = &ChatClusterReconciler{
		Client: c, APIReader: c, Scheme: scheme, Recorder: h.rec,
		Provisioning: Provisioning{
			Now:           h.clock.Now,
			CheckInterval: time.Minute,
			// Attempts at 0s, 1s and 3s: the third is the last.
			CleanupRetryFor: 3 * time.Second,
			CleanupBackoff:  time.Second,
			// The per-backend backoff after an unreachable backend (gate.go,
			// gate_internal_test.go) stays below the cleanup backoff here.
			UnreachableBackoff: time.Millisecond,
			Broker: amqpprov.Funcs{
				DeclareFunc: func(ctx context.Context, uri string, top amqpprov.Topology) (amqpprov.Declared, error) {
					h.calls.mu.Lock()
					defer h.calls.mu.Unlock()
					h.calls.declares = append(h.calls.declares, uri)
					stored := &v1alpha1.ChatCluster{}
					if err := c.Get(ctx, types.NamespacedName{Namespace: testNS, Name: "team"}, stored); err == nil {
						h.calls.hadFinalizer = append(h.calls.hadFinalizer, controllerutil.ContainsFinalizer(stored, FinalizerExternalState))
						h.calls.hadRecord = append(h.calls.hadRecord, stored.Status.ExternalState.Broker != nil)
					}
					if h.broker.declareErr != nil {
						return amqpprov.Declared{}, h.broker.declareErr
					}
					return amqpprov.Declared{Created: top.Objects()}, nil
				},
				DeleteFunc: func(context.Context, string, amqpprov.Topology) error {
					h.calls.mu.Lock()
					defer h.calls.mu.Unlock()
					h.calls.deletes++
					return h.broker.deleteErr
				},
			},
			Database: pgprov.Funcs{
				EnsureFunc: func(_ context.Context, _ pgprov.Admin, db pgprov.Database, password string) (pgprov.Result, error) {
					h.calls.mu.Lock()
					defer h.calls.mu.Unlock()
					h.calls.ensures = append(h.calls.ensures, password)
					if h.db.duringEnsure != nil {
						h.db.duringEnsure()
					}
					if h.db.ensureErr != nil {
						return pgprov.Result{}, h.db.ensureErr
					}
					return pgprov.Result{Credentials: pgprov.Credentials{
						Host: "postgres.db.svc", Port: 5432, Database: db.Name, Username: db.Role, Password: password,
					}, CreatedRole: true, CreatedDatabase: true, PasswordSet: true}, nil
				},
				DropFunc: func(context.Context, pgprov.Admin, pgprov.Database) error {
					h.calls.mu.Lock()
					defer h.calls.mu.Unlock()
					h.calls.drops++
					return h.db.dropErr
				},
				PingFunc: func(context.Context, pgprov.Admin) error { return nil },
				ProbeFunc: func(context.Context, pgprov.Admin) (pgprov.BackendInfo, error) {
					return pgprov.BackendInfo{Version: "15.0"}, nil
				},
			},
		},
	}
	return h
}

func adminSecrets() []client.Object {
	return []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "rabbitmq", Namespace: testNS}, Data: map[string][]byte{"uri": []byte("amqp://u:p@rabbitmq:5672/")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "postgres", Namespace: testNS}, Data: map[string][]byte{"uri": []byte("postgres://u:p@postgres:5432/postgres")}},
	}
}

func teamCluster(brokerPolicy, dbPolicy v1alpha1.DeletionPolicy) *v1alpha1.ChatCluster {
	return &v1alpha1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: testNS, UID: "uid-1", Generation: 1},
		Spec: v1alpha1.ChatClusterSpec{
			Broker:   &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq", Key: "uri"}, DeletionPolicy: brokerPolicy},
			Database: &v1alpha1.DatabaseSpec{AdminSecretRef: &v1alpha1.SecretKeyReference{Name: "postgres", Key: "uri"}, ReclaimPolicy: dbPolicy},
		},
	}
}

// runSteps runs the provisioning steps the way Reconcile does, on a fresh read.
func (h *harness) runSteps(t *testing.T) (*pass, error) {
	t.Helper()
	cc := &v1alpha1.ChatCluster{}
	if err := h.c.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: "team"}, cc); err != nil {
		t.Fatal(err)
	}
	p := &pass{cc: cc, original: cc.DeepCopy()}
	var errs []error
	for _, s := range h.r.provisioningSteps() {
		if err := s.run(context.Background(), p); err != nil {
			errs = append(errs, err)
		}
	}
	return p, errors.Join(errs...)
}

func conditionOf(p *pass, typ string) *metav1.Condition {
	return meta.FindStatusCondition(p.conditions, typ)
}

func (h *harness) secret(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := h.c.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: name}, s); err != nil {
		t.Fatalf("Secret %s: %v", name, err)
	}
	return s
}

func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestTheFinalizerIsStoredBeforeAnyExternalStateIsCreated(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyRetain))...)
	p, err := h.runSteps(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.calls.hadFinalizer) != 1 || !h.calls.hadFinalizer[0] {
		t.Fatalf("declare saw the finalizer stored: %v; want [true]", h.calls.hadFinalizer)
	}
	if len(h.calls.hadRecord) != 1 || !h.calls.hadRecord[0] {
		t.Fatalf("declare saw status.externalState.broker stored: %v; want [true]", h.calls.hadRecord)
	}
	if rec := p.cc.Status.ExternalState; rec.Broker == nil || rec.Broker.SecretRef.Name != "rabbitmq" || rec.Database != nil {
		t.Errorf("status.externalState = %+v; want the broker (Delete) with its Secret, not the database (Retain)", rec)
	}
	if p.original.ResourceVersion != p.cc.ResourceVersion {
		t.Error("the status patch base was not moved to the version with the finalizer")
	}
	for _, typ := range []string{v1alpha1.ConditionBrokerReady, v1alpha1.ConditionDatabaseReady} {
		if c := conditionOf(p, typ); c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 1 {
			t.Errorf("%s = %+v", typ, c)
		}
	}
	if want := (v1alpha1.GeneratedSecrets{JWT: "team-jwt", APIKey: "team-api-key", Database: "team-db"}); p.secrets != want {
		t.Errorf("generated Secrets = %+v, want %+v", p.secrets, want)
	}
}

func TestNoFinalizerWhenEveryPolicyRetains(t *testing.T) {
	cc := teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain)
	cc.Finalizers = []string{FinalizerExternalState} // left from an earlier Delete policy
	h := newHarness(t, append(adminSecrets(), cc)...)
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	stored := &v1alpha1.ChatCluster{}
	if err := h.c.Get(context.Background(), client.ObjectKeyFromObject(cc), stored); err != nil {
		t.Fatal(err)
	}
	if len(stored.Finalizers) != 0 {
		t.Fatalf("finalizers %v: nothing needs cleaning up", stored.Finalizers)
	}
}

func TestExternalSystemsAreCalledOncePerCheckIntervalUnlessInputsChange(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyDelete))...)
	for range 3 {
		if _, err := h.runSteps(t); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.calls.declares) != 1 || len(h.calls.ensures) != 1 {
		t.Fatalf("3 passes: %d declares, %d ensures; want 1 each", len(h.calls.declares), len(h.calls.ensures))
	}
	p, _ := h.runSteps(t)
	if c := conditionOf(p, v1alpha1.ConditionBrokerReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("a pass that skips the call must still report the condition: %+v", c)
	}
	if p.requeueAfter != time.Minute {
		t.Errorf("requeueAfter = %s, want the check interval", p.requeueAfter)
	}

	h.clock.add(time.Minute)
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	if len(h.calls.declares) != 2 || len(h.calls.ensures) != 2 {
		t.Fatalf("after the check interval: %d declares, %d ensures; want 2 each", len(h.calls.declares), len(h.calls.ensures))
	}

	// A new URI in the broker Secret is used at once.
	s := h.secret(t, "rabbitmq")
	s.Data["uri"] = []byte("amqp://u:p@other:5672/")
	if err := h.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	if got := h.calls.declares[len(h.calls.declares)-1]; got != "amqp://u:p@other:5672/" {
		t.Fatalf("declare used %q after the Secret changed", got)
	}
	// The generated password is reused, not regenerated, on later passes.
	if h.calls.ensures[0] != h.calls.ensures[1] || len(h.calls.ensures[0]) != 43 {
		t.Errorf("passwords across passes: %q", h.calls.ensures)
	}
}

func TestBrokerFailureIsReportedAndFailsThePass(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyRetain))...)
	h.broker.declareErr = &amqpprov.Error{Reason: amqpprov.ReasonAccessRefused, Op: "connect to broker", Err: errors.New("403 ACCESS_REFUSED")}
	p, err := h.runSteps(t)
	if err == nil || !strings.Contains(err.Error(), "ACCESS_REFUSED") {
		t.Fatalf("pass error = %v", err)
	}
	c := conditionOf(p, v1alpha1.ConditionBrokerReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != string(amqpprov.ReasonAccessRefused) {
		t.Fatalf("BrokerReady = %+v", c)
	}
	// A failure is never cached: the next pass tries again.
	h.broker.declareErr = nil
	p, err = h.runSteps(t)
	if err != nil || len(h.calls.declares) != 2 {
		t.Fatalf("after recovery: err %v, %d declares", err, len(h.calls.declares))
	}
	if c := conditionOf(p, v1alpha1.ConditionBrokerReady); c.Status != metav1.ConditionTrue {
		t.Fatalf("BrokerReady after recovery = %+v", c)
	}
}

func TestMissingSecretIsAWaitNotAFailure(t *testing.T) {
	h := newHarness(t, teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain))
	p, err := h.runSteps(t)
	if err != nil {
		t.Fatalf("pass error = %v; a missing Secret is waited for", err)
	}
	for _, typ := range []string{v1alpha1.ConditionBrokerReady, v1alpha1.ConditionDatabaseReady} {
		c := conditionOf(p, typ)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonSecretNotFound {
			t.Errorf("%s = %+v", typ, c)
		}
	}
	if len(h.calls.declares)+len(h.calls.ensures) != 0 {
		t.Error("an external system was called without credentials")
	}
}

func TestDatabaseSecretKeepsAUserChosenPassword(t *testing.T) {
	userSecret := &corev1.Secret{
		// The user hands the Secret over explicitly (docs/provisioning.md).
		ObjectMeta: metav1.ObjectMeta{Name: naming.DatabaseSecretName("team"), Namespace: testNS,
			Annotations: map[string]string{AnnotationSecretFor: "team"}},
		Data: map[string][]byte{"password": []byte("chosen by me"), "note": []byte("kept")},
	}
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain), userSecret)...)
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	if len(h.calls.ensures) != 1 || h.calls.ensures[0] != "chosen by me" {
		t.Fatalf("Ensure got passwords %q", h.calls.ensures)
	}
	s := h.secret(t, naming.DatabaseSecretName("team"))
	if string(s.Data["password"]) != "chosen by me" || string(s.Data["note"]) != "kept" || string(s.Data["host"]) != "postgres.db.svc" || len(s.Data["uri"]) == 0 {
		t.Errorf("Secret data = %q", s.Data)
	}
	if metav1.GetControllerOf(s) != nil {
		t.Error("the operator took ownership of the user's Secret")
	}
	if s.Labels[naming.LabelPartOf] != naming.PartOf {
		t.Error("the Secret did not get Parley's label (the cache would not see it)")
	}
}

func TestGeneratedSecretsAreOwnedByTheCluster(t *testing.T) {
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain))...)
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{naming.DatabaseSecretName("team"), naming.JWTSecretName("team"), naming.APIKeySecretName("team")} {
		s := h.secret(t, name)
		if ref := metav1.GetControllerOf(s); ref == nil || ref.Name != "team" || ref.Kind != "ChatCluster" {
			t.Errorf("Secret %s controller = %+v", name, ref)
		}
	}
	if pw := h.secret(t, naming.DatabaseSecretName("team")).Data["password"]; len(pw) != 43 {
		t.Errorf("generated password %q", pw)
	}
	// A second pass writes nothing.
	before := map[string]string{}
	for _, name := range []string{naming.DatabaseSecretName("team"), naming.JWTSecretName("team"), naming.APIKeySecretName("team")} {
		before[name] = h.secret(t, name).ResourceVersion
	}
	h.clock.add(time.Hour) // past the check interval: the database is ensured again
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	for name, rv := range before {
		if got := h.secret(t, name).ResourceVersion; got != rv {
			t.Errorf("Secret %s was rewritten by a pass that changed nothing", name)
		}
	}
}

func TestRotationRequestRotatesOnceAndRequeuesForTheDrop(t *testing.T) {
	cc := teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain)
	cc.Spec.Broker, cc.Spec.Database = nil, nil
	cc.Spec.Auth.KeyRotationOverlap = &metav1.Duration{Duration: 2 * time.Hour}
	h := newHarness(t, cc)
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	first := string(h.secret(t, naming.JWTSecretName("team")).Data[naming.JWTCurrentKey])

	stored := &v1alpha1.ChatCluster{}
	if err := h.c.Get(context.Background(), client.ObjectKeyFromObject(cc), stored); err != nil {
		t.Fatal(err)
	}
	stored.Annotations = map[string]string{keys.RotateJWTKeyAnnotation: "now"}
	if err := h.c.Update(context.Background(), stored); err != nil {
		t.Fatal(err)
	}
	p, err := h.runSteps(t)
	if err != nil {
		t.Fatal(err)
	}
	s := h.secret(t, naming.JWTSecretName("team"))
	if string(s.Data[naming.JWTPreviousKey]) != first || string(s.Data[naming.JWTCurrentKey]) == first {
		t.Fatalf("after the request: current %q previous %q (first %q)", s.Data[naming.JWTCurrentKey], s.Data[naming.JWTPreviousKey], first)
	}
	if p.requeueAfter != 2*time.Hour {
		t.Errorf("requeueAfter = %s, want the overlap", p.requeueAfter)
	}
	if api := h.secret(t, naming.APIKeySecretName("team")); len(api.Data[keys.APIKeyPreviousKey]) != 0 {
		t.Error("a JWT rotation request rotated the API key")
	}
	second := string(s.Data[naming.JWTCurrentKey])
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	if got := string(h.secret(t, naming.JWTSecretName("team")).Data[naming.JWTCurrentKey]); got != second {
		t.Fatal("the same request rotated twice")
	}
	h.clock.add(2 * time.Hour)
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	if prev := h.secret(t, naming.JWTSecretName("team")).Data[naming.JWTPreviousKey]; len(prev) != 0 {
		t.Fatalf("previous key %q kept after the overlap", prev)
	}
}

func TestUnusableUserKeyFailsThePass(t *testing.T) {
	cc := teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain)
	cc.Spec.Broker, cc.Spec.Database = nil, nil
	cc.Spec.Auth.JWTSecretRef = &v1alpha1.SecretKeyReference{Name: "mine", Key: "k"}
	short := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: testNS}, Data: map[string][]byte{"k": []byte("short")}}
	h := newHarness(t, cc, short)
	_, err := h.runSteps(t)
	if err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("pass error = %v", err)
	}
	if err := h.c.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: naming.JWTSecretName("team")}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a JWT Secret was written from an unusable key (%v)", err)
	}
}

// deleting stores cc as deleted: finalizer set, deletionTimestamp set.
func deleting(t *testing.T, h *harness, cc *v1alpha1.ChatCluster) *v1alpha1.ChatCluster {
	t.Helper()
	ctx := context.Background()
	if err := h.c.Delete(ctx, cc); err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.ChatCluster{}
	if err := h.c.Get(ctx, client.ObjectKeyFromObject(cc), got); err != nil {
		t.Fatal(err)
	}
	if got.DeletionTimestamp.IsZero() {
		t.Fatal("not deleting")
	}
	return got
}

func TestCleanupRetriesWithBackoffThenGivesUpAndNamesWhatIsLeft(t *testing.T) {
	cc := teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyDelete)
	cc.Finalizers = []string{FinalizerExternalState}
	h := newHarness(t, append(adminSecrets(), cc)...)
	h.broker.deleteErr = &amqpprov.Error{Reason: amqpprov.ReasonUnreachable, Op: "connect to broker", Err: errors.New("connection refused")}
	cur := deleting(t, h, cc)
	ctx := context.Background()
	var waits []time.Duration
	for attempt := 1; attempt <= 2; attempt++ {
		res, err := h.r.finalize(ctx, cur)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, res.RequeueAfter)
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(cc), cur); err != nil {
			t.Fatalf("attempt %d: the cluster went before the retries ran out: %v", attempt, err)
		}
		c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionBrokerReady)
		if c == nil || c.Reason != ReasonCleanupFailed || !strings.Contains(c.Message, "parley.chat.team.pub") || !strings.Contains(c.Message, AnnotationAbandonExternalState) {
			t.Fatalf("attempt %d: BrokerReady = %+v", attempt, c)
		}
		// A pass before the backoff is over (another event, a restart) does not try early.
		if res, err := h.r.finalize(ctx, cur); err != nil || res.RequeueAfter != waits[attempt-1] || h.calls.deletes != attempt {
			t.Fatalf("attempt %d: a pass within the backoff: %+v, %v, %d deletes", attempt, res, err, h.calls.deletes)
		}
		h.clock.add(res.RequeueAfter)
	}
	if waits[0] != time.Second || waits[1] != 2*time.Second {
		t.Errorf("backoff = %v, want [1s 2s]", waits)
	}
	if h.calls.drops != 1 {
		t.Errorf("the database (which drops fine) was dropped %d times; want once", h.calls.drops)
	}
	if _, err := h.r.finalize(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Get(ctx, client.ObjectKeyFromObject(cc), &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after the last attempt the cluster is still there (%v)", err)
	}
	var leftBehind string
	for _, e := range h.events() {
		if strings.Contains(e, EventLeftBehind) {
			leftBehind = e
		}
	}
	if !strings.Contains(leftBehind, "parley.chat.team.pub") || strings.Contains(leftBehind, "PostgreSQL") {
		t.Errorf("the %s event should name the topology and not the database, which was dropped: %q", EventLeftBehind, leftBehind)
	}
}

func TestAbandonAnnotationLetsGoWithoutCallingAnything(t *testing.T) {
	cc := teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyDelete)
	cc.Finalizers = []string{FinalizerExternalState}
	cc.Annotations = map[string]string{AnnotationAbandonExternalState: "true"}
	h := newHarness(t, append(adminSecrets(), cc)...)
	cur := deleting(t, h, cc)
	if _, err := h.r.finalize(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	if h.calls.deletes+h.calls.drops != 0 {
		t.Error("an external system was called despite the annotation")
	}
	if err := h.c.Get(context.Background(), client.ObjectKeyFromObject(cc), &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the cluster is still there (%v)", err)
	}
	if evs := strings.Join(h.events(), "\n"); !strings.Contains(evs, EventExternalAbandoned) || !strings.Contains(evs, "PostgreSQL database") {
		t.Errorf("events:\n%s", evs)
	}
}

func TestCleanupSuccessReleasesTheCluster(t *testing.T) {
	cc := teamCluster(v1alpha1.DeletionPolicyDelete, v1alpha1.DeletionPolicyRetain)
	cc.Finalizers = []string{FinalizerExternalState}
	h := newHarness(t, append(adminSecrets(), cc)...)
	cur := deleting(t, h, cc)
	if _, err := h.r.finalize(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	if h.calls.deletes != 1 || h.calls.drops != 0 {
		t.Errorf("deletes %d, drops %d; want the topology deleted and the retained database left alone", h.calls.deletes, h.calls.drops)
	}
	if err := h.c.Get(context.Background(), client.ObjectKeyFromObject(cc), &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the cluster is still there (%v)", err)
	}
}

// The user changes their chosen password while the operator is applying the
// previous one: the operator must not write the previous one back over
// theirs (nor count it as in sync), and its next pass applies theirs.
func TestAPasswordChangedDuringEnsureIsNotOverwritten(t *testing.T) {
	mine := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "team-db", Namespace: testNS,
		Annotations: map[string]string{AnnotationSecretFor: "team"}}, Data: map[string][]byte{DatabasePasswordKey: []byte("first")}}
	h := newHarness(t, append(adminSecrets(), teamCluster(v1alpha1.DeletionPolicyRetain, v1alpha1.DeletionPolicyRetain), mine)...)
	changed := false
	h.db.duringEnsure = func() {
		if changed {
			return
		}
		changed = true
		s := &corev1.Secret{}
		if err := h.c.Get(context.Background(), client.ObjectKeyFromObject(mine), s); err != nil {
			t.Error(err)
			return
		}
		s.Data[DatabasePasswordKey] = []byte("second")
		if err := h.c.Update(context.Background(), s); err != nil {
			t.Error(err)
		}
	}
	p, err := h.runSteps(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(h.secret(t, "team-db").Data[DatabasePasswordKey]); got != "second" {
		t.Fatalf("the Secret's password is %q after the pass: the user's change was overwritten", got)
	}
	if p.requeueAfter <= 0 || p.requeueAfter > time.Second {
		t.Errorf("requeue after %v: the user's password should be applied at once", p.requeueAfter)
	}
	if _, err := h.runSteps(t); err != nil {
		t.Fatal(err)
	}
	if want := []string{"first", "second"}; strings.Join(h.calls.ensures, ",") != strings.Join(want, ",") {
		t.Fatalf("Ensure was called with %q, want %q", h.calls.ensures, want)
	}
	sec := h.secret(t, "team-db")
	if string(sec.Data[DatabasePasswordKey]) != "second" || !strings.Contains(string(sec.Data[naming.DatabaseURIKey]), "second") {
		t.Fatalf("after the next pass the Secret holds password %q, uri %q", sec.Data[DatabasePasswordKey], sec.Data[naming.DatabaseURIKey])
	}
}
