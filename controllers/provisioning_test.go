package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	amqp091 "github.com/rabbitmq/amqp091-go"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/keys"
	"github.com/parley-chat/parley/internal/naming"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/testenv"
)

// Scenarios of the provisioning steps (issue 6), run by TestOperator against
// the real RabbitMQ and PostgreSQL on this machine.
func init() {
	register("ProvisionsTopologyDatabaseAndKeysThenDeletesThem", testProvisionAndDelete)
	register("RetainKeepsTopologyAndDatabaseWithoutAFinalizer", testRetain)
	register("BrokerFailuresAreReportedThenRecover", testBrokerFailures)
	register("DatabaseFailuresAreReportedThenRecover", testDatabaseFailures)
	register("ExchangeDeletedOutOfBandComesBack", testDrift)
	register("UserChosenDatabasePasswordIsHonoured", testUserPassword)
	register("RotationKeepsTheOldKeyValidForTheOverlap", testRotation)
	register("DeletionGivesUpAndNamesWhatWasLeft", testCleanupGivesUp)
	register("AbandonAnnotationLetsGoAtOnce", testAbandon)
	register("RemovingTheBrokerDeletesItsTopologyAndCondition", testRemoveBroker)
}

// clock is the provisioning steps' clock in these tests: real time plus an
// offset a scenario may move forward (key rotation overlaps).
var clock offsetClock

type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// provisioningForTests checks external state every second (so drift is
// repaired within the test's patience) and gives up a cleanup after a few
// seconds of quick attempts.
func provisioningForTests() controllers.Provisioning {
	return controllers.Provisioning{
		Now:               clock.Now,
		CallTimeout:       10 * time.Second,
		CheckInterval:     time.Second,
		CleanupRetryFor:   3 * time.Second,
		CleanupBackoff:    300 * time.Millisecond,
		CleanupMaxBackoff: time.Second,
		// A blackholed backend is given up on after a second and tried
		// again soon; at most 2 of the 4 workers call one backend at once.
		ConnectTimeout:     time.Second,
		BackendConcurrency: 2,
		UnreachableBackoff: 500 * time.Millisecond,
	}
}

// Helpers.

func amqpChannel(t *testing.T) func() *amqp091.Channel {
	t.Helper()
	conn, err := amqp091.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatalf("connect to RabbitMQ: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() *amqp091.Channel {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
}

// exchangeExists checks with a passive declare, as the chat server does.
func exchangeExists(channel func() *amqp091.Channel, name, kind string) (bool, error) {
	ch := channel()
	defer ch.Close()
	return declared(ch.ExchangeDeclarePassive(name, kind, true, false, false, false, nil))
}

func queueExists(channel func() *amqp091.Channel, name string) (bool, error) {
	ch := channel()
	defer ch.Close()
	_, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	return declared(err)
}

// declared reads the answer to a passive declare: none means the object
// exists, 404 NOT_FOUND that it does not, anything else is an error.
func declared(err error) (bool, error) {
	var ae *amqp091.Error
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ae) && ae.Code == amqp091.NotFound:
		return false, nil
	}
	return false, err
}

// topologyIs waits until every object of top exists (want) or none does.
func topologyIs(t *testing.T, top amqpprov.Topology, want bool) {
	t.Helper()
	channel := amqpChannel(t)
	eventually(t, fmt.Sprintf("topology exists=%v", want), func() error {
		for _, e := range []struct{ name, kind string }{
			{top.Exchange, "topic"}, {top.ControlExchange, "fanout"}, {top.DeadLetterExchange, "fanout"},
		} {
			ok, err := exchangeExists(channel, e.name, e.kind)
			if err != nil {
				return err
			}
			if ok != want {
				return fmt.Errorf("exchange %s exists=%v", e.name, ok)
			}
		}
		ok, err := queueExists(channel, top.DeadLetterQueue)
		if err != nil {
			return err
		}
		if ok != want {
			return fmt.Errorf("queue %s exists=%v", top.DeadLetterQueue, ok)
		}
		return nil
	})
}

// forgetTopology deletes a topology the scenario leaves behind on purpose.
func forgetTopology(t *testing.T, top amqpprov.Topology) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := (&amqpprov.Client{}).Delete(ctx, testenv.AMQPURL(), top); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// forgetDatabase drops a database and role the scenario leaves behind on purpose.
func forgetDatabase(t *testing.T, db pgprov.Database) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testenv.PostgresURL())
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		for _, stmt := range []string{
			"DROP DATABASE IF EXISTS " + pgx.Identifier{db.Name}.Sanitize() + " WITH (FORCE)",
			"DROP ROLE IF EXISTS " + pgx.Identifier{db.Role}.Sanitize(),
		} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Errorf("cleanup: %s: %v", stmt, err)
			}
		}
	})
}

// databaseExists reports whether the role and the database exist.
func databaseExists(t *testing.T, db pgprov.Database) (roleOK, dbOK bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)`,
		db.Role, db.Name).Scan(&roleOK, &dbOK); err != nil {
		t.Fatal(err)
	}
	return roleOK, dbOK
}

func storedPassword(t *testing.T, role string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v *string
	if err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v == nil {
		return ""
	}
	return *v
}

// provisioned creates the Secrets a cluster with a broker and a generated
// database needs (both labelled, so a change is seen at once) and returns
// the spec parts pointing at them.
func (s *suite) provisioned(t *testing.T, ns string, cc *v1alpha1.ChatCluster) {
	t.Helper()
	s.secret(t, ns, "rabbitmq-admin", true, map[string]string{"uri": testenv.AMQPURL()})
	s.secret(t, ns, "postgres-admin", true, map[string]string{"uri": testenv.PostgresURL()})
	cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq-admin", Key: "uri"}}
	cc.Spec.Database = &v1alpha1.DatabaseSpec{AdminSecretRef: &v1alpha1.SecretKeyReference{Name: "postgres-admin", Key: "uri"}}
}

// createProvisioned creates cc, whose spec provisioned filled in, and returns
// its topology and database, both deleted when the test ends.
func (s *suite) createProvisioned(t *testing.T, cc *v1alpha1.ChatCluster) (amqpprov.Topology, pgprov.Database) {
	t.Helper()
	s.create(t, cc)
	top := amqpprov.TopologyFor(cc.Namespace, cc.Name)
	db := pgprov.DatabaseFor(cc.Namespace, cc.Name)
	forgetTopology(t, top)
	forgetDatabase(t, db)
	return top, db
}

// brokered creates the ChatCluster name in ns with spec.broker naming the
// Secret rabbitmq-admin, which holds uri (labelled or not for Parley's
// cache), and returns its topology, deleted when the test ends.
func (s *suite) brokered(t *testing.T, ns, name, uri string, labelled bool) amqpprov.Topology {
	t.Helper()
	s.secret(t, ns, "rabbitmq-admin", labelled, map[string]string{"uri": uri})
	cc := newCluster(ns, name)
	cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq-admin", Key: "uri"}}
	s.create(t, cc)
	top := amqpprov.TopologyFor(ns, name)
	forgetTopology(t, top)
	return top
}

func (s *suite) setSecret(t *testing.T, ns, name, key, value string) {
	t.Helper()
	sec := &corev1.Secret{}
	if err := s.get(t, ns, name, sec); err != nil {
		t.Fatal(err)
	}
	s.update(t, sec, func() {
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[key] = []byte(value)
	})
}

// reason waits until condition typ is False with the given reason, and returns it.
func (s *suite) reason(t *testing.T, ns, name, typ, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, typ+" "+reason, func() error {
		cc := &v1alpha1.ChatCluster{}
		if err := s.get(t, ns, name, cc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cc.Status.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != reason || c.ObservedGeneration != cc.Generation {
			return fmt.Errorf("%s = %+v", typ, c)
		}
		got = *c
		return nil
	})
	return got
}

// event waits for an event of the given reason whose note contains every part.
func (s *suite) event(t *testing.T, ns, reason string, parts ...string) eventsv1.Event {
	t.Helper()
	var found eventsv1.Event
	eventually(t, "a "+reason+" event", func() error {
		var list eventsv1.EventList
		if err := s.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason != reason {
				continue
			}
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(e.Note, p)
			}
			if ok {
				found = e
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})
	return found
}

func (s *suite) gone(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, "ChatCluster "+name+" gone", func() error {
		if err := s.get(t, ns, name, &v1alpha1.ChatCluster{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

func (s *suite) delete(t *testing.T, obj client.Object) {
	t.Helper()
	if err := s.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func closedPortURI(t *testing.T, scheme, path string) string {
	t.Helper()
	return scheme + "://parley:secret@" + testenv.ClosedAddr(t) + path
}

// Scenarios.

func testProvisionAndDelete(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := newCluster(ns, "prov")
	s.provisioned(t, ns, cc)
	cc.Spec.Database.ReclaimPolicy = v1alpha1.DeletionPolicyDelete
	top, db := s.createProvisioned(t, cc)

	broker := s.condition(t, ns, "prov", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	if !strings.Contains(broker.Message, top.Exchange) {
		t.Errorf("BrokerReady message %q does not name the exchange", broker.Message)
	}
	s.condition(t, ns, "prov", v1alpha1.ConditionDatabaseReady, metav1.ConditionTrue)
	topologyIs(t, top, true)
	// The admin Secrets in the tenant's namespace still work, and the
	// cluster says they are deprecated and what to move to.
	dep := s.condition(t, ns, "prov", v1alpha1.ConditionDeprecated, metav1.ConditionTrue)
	for _, want := range []string{"spec.broker.secretRef", "spec.database.adminSecretRef", "ChatBackend"} {
		if !strings.Contains(dep.Message, want) {
			t.Errorf("Deprecated message %q does not say %q", dep.Message, want)
		}
	}
	s.event(t, ns, controllers.EventDeprecated, "spec.broker.secretRef")
	eventually(t, "status.secrets", func() error {
		got := s.cluster(t, ns, "prov").Status.Secrets
		want := v1alpha1.GeneratedSecrets{JWT: "prov-jwt", APIKey: "prov-api-key", Database: "prov-db"}
		if got != want {
			return fmt.Errorf("status.secrets = %+v, want %+v", got, want)
		}
		return nil
	})
	cc = s.cluster(t, ns, "prov")
	if !controllerutil.ContainsFinalizer(cc, controllers.FinalizerExternalState) {
		t.Errorf("finalizers %v: want %s while there is state to delete", cc.Finalizers, controllers.FinalizerExternalState)
	}

	// The database Secret: every key, and credentials that work.
	sec := &corev1.Secret{}
	if err := s.get(t, ns, naming.DatabaseSecretName("prov"), sec); err != nil {
		t.Fatal(err)
	}
	if err := ownedBy(sec, cc); err != nil {
		t.Error(err)
	}
	for _, k := range []string{"host", "port", "database", "username", "password", naming.DatabaseURIKey} {
		if len(sec.Data[k]) == 0 {
			t.Errorf("Secret %s has no %q", sec.Name, k)
		}
	}
	if string(sec.Data["database"]) != db.Name || string(sec.Data["username"]) != db.Role {
		t.Errorf("Secret names database %q, user %q; want %q, %q", sec.Data["database"], sec.Data["username"], db.Name, db.Role)
	}
	if !pgprov.PasswordMatches(storedPassword(t, db.Role), string(sec.Data["password"])) {
		t.Error("the role's password is not the one in the Secret")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, string(sec.Data[naming.DatabaseURIKey]))
	if err != nil {
		t.Fatalf("connect with the generated Secret's uri: %v", err)
	}
	var user, current string
	if err := conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&user, &current); err != nil || user != db.Role || current != db.Name {
		t.Errorf("connected as %q to %q (%v); want %q to %q", user, current, err, db.Role, db.Name)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE history (id bigint)"); err != nil {
		t.Errorf("the role cannot create tables in its database: %v", err)
	}
	_, err = conn.Exec(ctx, "CREATE ROLE "+pgx.Identifier{db.Role + "_escalated"}.Sanitize())
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("CREATE ROLE with the generated credentials: %v; want permission denied (42501)", err)
	}
	conn.Close(ctx)

	// The keys.
	jwtSecret, apiSecret := &corev1.Secret{}, &corev1.Secret{}
	for name, sec := range map[string]*corev1.Secret{naming.JWTSecretName("prov"): jwtSecret, naming.APIKeySecretName("prov"): apiSecret} {
		if err := s.get(t, ns, name, sec); err != nil {
			t.Fatal(err)
		}
		if err := ownedBy(sec, cc); err != nil {
			t.Error(err)
		}
	}
	if k := jwtSecret.Data[naming.JWTCurrentKey]; keys.Validate(string(k)) != nil {
		t.Errorf("generated JWT key %q is too weak", k)
	}
	if k := apiSecret.Data[naming.APIKeyKey]; keys.Validate(string(k)) != nil {
		t.Errorf("generated API key %q is too weak", k)
	}
	if string(jwtSecret.Data[naming.JWTCurrentKey]) == string(apiSecret.Data[naming.APIKeyKey]) {
		t.Error("the JWT key and the API key are the same")
	}
	s.event(t, ns, controllers.EventTopologyDeclared, top.Exchange)
	s.event(t, ns, controllers.EventDatabaseCreated, db.Name)

	// Delete with policy Delete: the topology, the database and the role go.
	s.delete(t, cc)
	s.gone(t, ns, "prov")
	topologyIs(t, top, false)
	if roleOK, dbOK := databaseExists(t, db); roleOK || dbOK {
		t.Errorf("after deletion: role exists %v, database exists %v", roleOK, dbOK)
	}
	s.event(t, ns, controllers.EventExternalDeleted, top.Exchange, db.Name)
}

func testRetain(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := newCluster(ns, "kept")
	s.provisioned(t, ns, cc)
	cc.Spec.Broker.DeletionPolicy = v1alpha1.DeletionPolicyRetain
	top, db := s.createProvisioned(t, cc)
	s.condition(t, ns, "kept", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	s.condition(t, ns, "kept", v1alpha1.ConditionDatabaseReady, metav1.ConditionTrue)
	if f := s.cluster(t, ns, "kept").Finalizers; len(f) != 0 {
		t.Errorf("finalizers %v with both policies Retain: nothing needs cleaning up", f)
	}

	// Switching the broker to Delete adds the finalizer; back to Retain removes it.
	cc = s.cluster(t, ns, "kept")
	s.update(t, cc, func() { cc.Spec.Broker.DeletionPolicy = v1alpha1.DeletionPolicyDelete })
	eventually(t, "finalizer added", func() error {
		if !controllerutil.ContainsFinalizer(s.cluster(t, ns, "kept"), controllers.FinalizerExternalState) {
			return errors.New("no finalizer")
		}
		return nil
	})
	s.update(t, cc, func() { cc.Spec.Broker.DeletionPolicy = v1alpha1.DeletionPolicyRetain })
	eventually(t, "finalizer removed", func() error {
		if f := s.cluster(t, ns, "kept").Finalizers; len(f) != 0 {
			return fmt.Errorf("finalizers %v", f)
		}
		return nil
	})

	// Removing spec.broker under Retain keeps the topology; BrokerReady goes.
	s.update(t, cc, func() { cc.Spec.Broker = nil })
	noCondition(t, s, ns, "kept", v1alpha1.ConditionBrokerReady)
	topologyIs(t, top, true)

	s.delete(t, cc)
	s.gone(t, ns, "kept")
	topologyIs(t, top, true)
	if roleOK, dbOK := databaseExists(t, db); !roleOK || !dbOK {
		t.Errorf("Retain: role exists %v, database exists %v; want both kept", roleOK, dbOK)
	}
}

func testBrokerFailures(t *testing.T, s *suite) {
	ns := s.namespace(t)
	top := s.brokered(t, ns, "flaky", closedPortURI(t, "amqp", "/"), true)

	c := s.reason(t, ns, "flaky", v1alpha1.ConditionBrokerReady, string(amqpprov.ReasonUnreachable))
	if strings.Contains(c.Message, "secret@") {
		t.Errorf("the condition leaks the URI's password: %s", c.Message)
	}
	s.condition(t, ns, "flaky", v1alpha1.ConditionDegraded, metav1.ConditionTrue)

	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	s.setSecret(t, ns, "rabbitmq-admin", "uri", u.String())
	c = s.reason(t, ns, "flaky", v1alpha1.ConditionBrokerReady, string(amqpprov.ReasonAccessRefused))
	if strings.Contains(c.Message, "not-the-password") {
		t.Errorf("the condition leaks the password: %s", c.Message)
	}

	s.setSecret(t, ns, "rabbitmq-admin", "uri", testenv.AMQPURL())
	s.condition(t, ns, "flaky", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	s.condition(t, ns, "flaky", v1alpha1.ConditionDegraded, metav1.ConditionFalse)
	topologyIs(t, top, true)
}

func testDatabaseFailures(t *testing.T, s *suite) {
	ns := s.namespace(t)
	s.secret(t, ns, "postgres-admin", true, map[string]string{"uri": closedPortURI(t, "postgres", "/postgres?sslmode=disable")})
	cc := newCluster(ns, "pgfail")
	cc.Spec.Database = &v1alpha1.DatabaseSpec{AdminSecretRef: &v1alpha1.SecretKeyReference{Name: "postgres-admin", Key: "uri"}}
	s.create(t, cc)
	db := pgprov.DatabaseFor(ns, "pgfail")
	forgetDatabase(t, db)

	s.reason(t, ns, "pgfail", v1alpha1.ConditionDatabaseReady, string(pgprov.ReasonUnreachable))
	u, err := url.Parse(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	admin := *u
	admin.User = url.UserPassword("parley_no_such_admin", "not-the-password")
	s.setSecret(t, ns, "postgres-admin", "uri", admin.String())
	c := s.reason(t, ns, "pgfail", v1alpha1.ConditionDatabaseReady, string(pgprov.ReasonCredentialsRefused))
	if strings.Contains(c.Message, "not-the-password") {
		t.Errorf("the condition leaks the password: %s", c.Message)
	}
	// A Secret without the key it names: a wait, not a failure of the pass.
	s.update(t, cc, func() { cc.Spec.Database.AdminSecretRef.Key = "missing" })
	s.reason(t, ns, "pgfail", v1alpha1.ConditionDatabaseReady, controllers.ReasonSecretNotFound)
	s.update(t, cc, func() { cc.Spec.Database.AdminSecretRef.Key = "uri" })

	s.setSecret(t, ns, "postgres-admin", "uri", testenv.PostgresURL())
	s.condition(t, ns, "pgfail", v1alpha1.ConditionDatabaseReady, metav1.ConditionTrue)
	if roleOK, dbOK := databaseExists(t, db); !roleOK || !dbOK {
		t.Errorf("after recovery: role exists %v, database exists %v", roleOK, dbOK)
	}
}

func testDrift(t *testing.T, s *suite) {
	ns := s.namespace(t)
	top := s.brokered(t, ns, "drift", testenv.AMQPURL(), false)
	s.condition(t, ns, "drift", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	topologyIs(t, top, true)

	// Someone deletes the exchange by hand; nothing in Kubernetes changes.
	channel := amqpChannel(t)
	ch := channel()
	if err := ch.ExchangeDelete(top.Exchange, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(top.DeadLetterQueue, false, false, false); err != nil {
		t.Fatal(err)
	}
	ch.Close()
	topologyIs(t, top, true)
	s.event(t, ns, controllers.EventTopologyRepaired, top.Exchange)
}

func testUserPassword(t *testing.T, s *suite) {
	ns := s.namespace(t)
	// The user chose the password (quotes, unicode, URI-reserved characters)
	// before creating the cluster and handed the Secret over with the
	// opt-in annotation; it does not carry Parley's label.
	const chosen = `my "pass'word" ü@:/?#%`
	s.secretFor(t, ns, naming.DatabaseSecretName("mine"), "mine", false, map[string]string{"password": chosen})
	cc := newCluster(ns, "mine")
	s.provisioned(t, ns, cc)
	_, db := s.createProvisioned(t, cc)
	s.condition(t, ns, "mine", v1alpha1.ConditionDatabaseReady, metav1.ConditionTrue)

	sec := &corev1.Secret{}
	eventually(t, "the Secret completed", func() error {
		if err := s.get(t, ns, naming.DatabaseSecretName("mine"), sec); err != nil {
			return err
		}
		if len(sec.Data[naming.DatabaseURIKey]) == 0 {
			return errors.New("no uri yet")
		}
		return nil
	})
	if string(sec.Data["password"]) != chosen {
		t.Fatalf("the user's password was overwritten with %q", sec.Data["password"])
	}
	if metav1.GetControllerOf(sec) != nil {
		t.Error("the operator took ownership of the user's Secret")
	}
	if !pgprov.PasswordMatches(storedPassword(t, db.Role), chosen) {
		t.Fatal("the role's password is not the user's")
	}
	cfg, err := pgx.ParseConfig(string(sec.Data[naming.DatabaseURIKey]))
	if err != nil {
		t.Fatalf("the uri does not parse: %v", err)
	}
	if cfg.Password != chosen || cfg.User != db.Role || cfg.Database != db.Name {
		t.Errorf("uri carries user %q password %q database %q", cfg.User, cfg.Password, cfg.Database)
	}

	// The user changes the password: the role follows.
	const changed = "an-0ther-choice"
	s.setSecret(t, ns, naming.DatabaseSecretName("mine"), "password", changed)
	eventually(t, "the new password applied", func() error {
		if !pgprov.PasswordMatches(storedPassword(t, db.Role), changed) {
			return errors.New("not yet")
		}
		return nil
	})
	eventually(t, "the uri follows", func() error {
		if err := s.get(t, ns, naming.DatabaseSecretName("mine"), sec); err != nil {
			return err
		}
		cfg, err := pgx.ParseConfig(string(sec.Data[naming.DatabaseURIKey]))
		if err != nil {
			return err
		}
		if cfg.Password != changed {
			return errors.New("uri still has the old password")
		}
		return nil
	})
}

// verifierFor builds the chat server's own token verifier over the JWT
// Secret as a pod sees it mounted (one file per key), with the auth config
// the operator renders.
func verifierFor(t *testing.T, sec *corev1.Secret) *auth.Verifier {
	t.Helper()
	dir := t.TempDir()
	for k, v := range sec.Data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v, err := auth.NewVerifier(config.Auth{HMACSecretFiles: []string{
		filepath.Join(dir, naming.JWTCurrentKey), filepath.Join(dir, naming.JWTPreviousKey),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func token(t *testing.T, key []byte, user string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testRotation(t *testing.T, s *suite) {
	ns := s.namespace(t)
	cc := newCluster(ns, "rot")
	cc.Spec.Auth.KeyRotationOverlap = &metav1.Duration{Duration: time.Hour}
	s.create(t, cc)

	secret := func(name string, check func(*corev1.Secret) error) *corev1.Secret {
		t.Helper()
		sec := &corev1.Secret{}
		eventually(t, "Secret "+name, func() error {
			if err := s.get(t, ns, name, sec); err != nil {
				return err
			}
			return check(sec)
		})
		return sec
	}
	has := func(sec *corev1.Secret) error {
		if len(sec.Data[naming.JWTCurrentKey]) == 0 {
			return errors.New("no current key")
		}
		return nil
	}
	jwtName := naming.JWTSecretName("rot")
	first := secret(jwtName, has)
	oldKey := first.Data[naming.JWTCurrentKey]
	oldToken := token(t, oldKey, "alice")
	apiBefore := secret(naming.APIKeySecretName("rot"), func(sec *corev1.Secret) error {
		if len(sec.Data[naming.APIKeyKey]) == 0 {
			return errors.New("no api key")
		}
		return nil
	}).Data[naming.APIKeyKey]

	// Ask for a rotation.
	cc = s.cluster(t, ns, "rot")
	s.update(t, cc, func() {
		if cc.Annotations == nil {
			cc.Annotations = map[string]string{}
		}
		cc.Annotations[keys.RotateJWTKeyAnnotation] = "2030-01-01"
		cc.Annotations[keys.RotateAPIKeyAnnotation] = "2030-01-01"
	})
	rotated := secret(jwtName, func(sec *corev1.Secret) error {
		if string(sec.Data[naming.JWTPreviousKey]) != string(oldKey) {
			return errors.New("not rotated yet")
		}
		return nil
	})
	newKey := rotated.Data[naming.JWTCurrentKey]
	if string(newKey) == string(oldKey) || keys.Validate(string(newKey)) != nil {
		t.Fatalf("rotation produced %q from %q", newKey, oldKey)
	}
	v := verifierFor(t, rotated)
	ctx := context.Background()
	if _, err := v.VerifyConnection(ctx, oldToken); err != nil {
		t.Fatalf("during the overlap a token signed with the old key is refused: %v", err)
	}
	if _, err := v.VerifyConnection(ctx, token(t, newKey, "bob")); err != nil {
		t.Fatalf("a token signed with the new key is refused: %v", err)
	}
	s.event(t, ns, controllers.EventKeyRotated, jwtName)
	api := secret(naming.APIKeySecretName("rot"), func(sec *corev1.Secret) error {
		if string(sec.Data[keys.APIKeyPreviousKey]) != string(apiBefore) {
			return errors.New("API key not rotated yet")
		}
		return nil
	})
	apiAfter := api.Data[naming.APIKeyKey]
	if string(apiAfter) == string(apiBefore) {
		t.Error("the API key did not change")
	}
	// A chat server with the API key files the operator renders, over the
	// Secret as mounted, accepts both keys during the overlap.
	apiServer := apiKeyServer(t, s, ns, "rot", api)
	apiServer.accepts(t, "during the overlap", apiAfter, apiBefore)

	// The same request again does nothing.
	s.update(t, cc, func() { cc.Annotations["test.parley.io/poke"] = "1" })
	time.Sleep(300 * time.Millisecond)
	if again := secret(jwtName, has); string(again.Data[naming.JWTCurrentKey]) != string(newKey) {
		t.Fatal("a request already honoured rotated again")
	}

	// The overlap ends: the old key goes, the new one stays.
	clock.advance(time.Hour + time.Second)
	s.update(t, cc, func() { cc.Annotations["test.parley.io/poke"] = "2" })
	dropped := secret(jwtName, func(sec *corev1.Secret) error {
		if len(sec.Data[naming.JWTPreviousKey]) != 0 {
			return errors.New("previous key still there")
		}
		return nil
	})
	v = verifierFor(t, dropped)
	if _, err := v.VerifyConnection(ctx, oldToken); err == nil {
		t.Fatal("after the overlap a token signed with the old key is still accepted")
	}
	if _, err := v.VerifyConnection(ctx, token(t, newKey, "bob")); err != nil {
		t.Fatalf("after the overlap the new key is refused: %v", err)
	}
	s.event(t, ns, controllers.EventKeyDropped, jwtName)
	// The API key's overlap ended too: the old key is emptied from the
	// Secret, and the server refuses it once the mounted file changes.
	droppedAPI := secret(naming.APIKeySecretName("rot"), func(sec *corev1.Secret) error {
		if len(sec.Data[keys.APIKeyPreviousKey]) != 0 {
			return errors.New("previous API key still there")
		}
		return nil
	})
	if string(droppedAPI.Data[naming.APIKeyKey]) != string(apiAfter) {
		t.Error("dropping the previous API key changed the current one")
	}
	apiServer.mount(t, droppedAPI)
	apiServer.accepts(t, "after the overlap", apiAfter)
	apiServer.refuses(t, "after the overlap", apiBefore)

	// A key the user supplies is copied; changing it keeps the replaced one for the overlap.
	userKey := strings.Repeat("u", 40)
	s.secret(t, ns, "my-jwt", true, map[string]string{"key": userKey})
	s.update(t, cc, func() {
		cc.Spec.Auth.JWTSecretRef = &v1alpha1.SecretKeyReference{Name: "my-jwt", Key: "key"}
	})
	supplied := secret(jwtName, func(sec *corev1.Secret) error {
		if string(sec.Data[naming.JWTCurrentKey]) != userKey {
			return errors.New("user key not copied yet")
		}
		return nil
	})
	if string(supplied.Data[naming.JWTPreviousKey]) != string(newKey) {
		t.Errorf("the generated key replaced by the user's is not kept for the overlap")
	}
}

// keyServer is a chat server whose API key files are those the operator
// renders for a cluster, holding a key Secret's data as a pod's Secret
// volume would.
type keyServer struct {
	dir string
	url string
}

func apiKeyServer(t *testing.T, s *suite, ns, name string, sec *corev1.Secret) *keyServer {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := s.get(t, ns, naming.ConfigMapName(name), cm); err != nil {
		t.Fatal(err)
	}
	rendered, err := config.Parse([]byte(cm.Data["config.json"]))
	if err != nil {
		t.Fatal(err)
	}
	ks := &keyServer{dir: t.TempDir()}
	ks.mount(t, sec)
	cfg := servertest.Config()
	for _, p := range rendered.HTTP.APIKeyPaths() {
		// The mount directory is the pod's; the file names are the Secret's keys.
		cfg.HTTP.APIKeyFiles = append(cfg.HTTP.APIKeyFiles, filepath.Join(ks.dir, filepath.Base(p)))
	}
	if len(cfg.HTTP.APIKeyFiles) != 2 {
		t.Fatalf("rendered API key files %v: want the current and the previous key", rendered.HTTP.APIKeyPaths())
	}
	ks.url = servertest.Start(t, cfg, nil, nil).Admin + "/api/presence"
	return ks
}

// mount writes the Secret's keys as files, each replaced at once.
func (ks *keyServer) mount(t *testing.T, sec *corev1.Secret) {
	t.Helper()
	for k, v := range sec.Data {
		p := filepath.Join(ks.dir, k)
		if err := os.WriteFile(p+".tmp", v, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Fatal(err)
		}
	}
}

func (ks *keyServer) status(t *testing.T, key []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ks.url, strings.NewReader(`{"channel":"room:1"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", string(key))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// accepts and refuses wait for the server to re-read its files (at most once a second).
func (ks *keyServer) accepts(t *testing.T, when string, keys ...[]byte) {
	t.Helper()
	for i, k := range keys {
		eventually(t, fmt.Sprintf("%s: API key %d accepted", when, i), func() error {
			if code := ks.status(t, k); code != http.StatusOK {
				return fmt.Errorf("status %d", code)
			}
			return nil
		})
	}
}

func (ks *keyServer) refuses(t *testing.T, when string, key []byte) {
	t.Helper()
	eventually(t, when+": old API key refused", func() error {
		if code := ks.status(t, key); code != http.StatusUnauthorized {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
}

// deletedAfterBrokerLost provisions the topology of the ChatCluster name in
// ns, then the broker goes away for good and the cluster is deleted: its
// cleanup can only fail. It returns the topology.
func (s *suite) deletedAfterBrokerLost(t *testing.T, ns, name string) amqpprov.Topology {
	t.Helper()
	top := s.brokered(t, ns, name, testenv.AMQPURL(), true)
	s.condition(t, ns, name, v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	s.setSecret(t, ns, "rabbitmq-admin", "uri", closedPortURI(t, "amqp", "/"))
	s.reason(t, ns, name, v1alpha1.ConditionBrokerReady, string(amqpprov.ReasonUnreachable))
	s.delete(t, s.cluster(t, ns, name))
	return top
}

func testCleanupGivesUp(t *testing.T, s *suite) {
	ns := s.namespace(t)
	top := s.deletedAfterBrokerLost(t, ns, "stuck")
	s.event(t, ns, controllers.EventCleanupFailed, "attempt 1", "retrying until", "--cleanup-retry-for=3s")
	s.gone(t, ns, "stuck")
	s.event(t, ns, controllers.EventLeftBehind, "gave up after", "--cleanup-retry-for=3s", top.Exchange)
	topologyIs(t, top, true) // left behind, as the event says
}

func testAbandon(t *testing.T, s *suite) {
	ns := s.namespace(t)
	top := s.deletedAfterBrokerLost(t, ns, "bye")
	// While it retries, the condition names what would be left and how to let go.
	c := s.reason(t, ns, "bye", v1alpha1.ConditionBrokerReady, controllers.ReasonCleanupFailed)
	if !strings.Contains(c.Message, top.Exchange) || !strings.Contains(c.Message, controllers.AnnotationAbandonExternalState) {
		t.Errorf("cleanup condition %q should name the exchange and the annotation", c.Message)
	}
	// The attempts are in the status, where a restarted operator finds them.
	if rec := s.cluster(t, ns, "bye").Status.ExternalState.Broker; rec == nil || rec.CleanupAttempts < 1 ||
		rec.FirstCleanupFailure == nil || rec.LastCleanupFailure == nil || rec.SecretRef.Name != "rabbitmq-admin" {
		t.Errorf("status.externalState.broker = %+v; want the failed attempts counted", rec)
	}
	cc := s.cluster(t, ns, "bye")
	s.update(t, cc, func() {
		if cc.Annotations == nil {
			cc.Annotations = map[string]string{}
		}
		cc.Annotations[controllers.AnnotationAbandonExternalState] = "true"
	})
	s.gone(t, ns, "bye")
	s.event(t, ns, controllers.EventExternalAbandoned, top.Exchange)
}

// noCondition waits until the cluster has no condition of type typ.
func noCondition(t *testing.T, s *suite, ns, name, typ string) {
	t.Helper()
	eventually(t, typ+" removed", func() error {
		if c := meta.FindStatusCondition(s.cluster(t, ns, name).Status.Conditions, typ); c != nil {
			return fmt.Errorf("%s = %+v", typ, c)
		}
		return nil
	})
}

func testRemoveBroker(t *testing.T, s *suite) {
	ns := s.namespace(t)
	top := s.brokered(t, ns, "unbrokered", testenv.AMQPURL(), true)
	s.condition(t, ns, "unbrokered", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	topologyIs(t, top, true)
	if rec := s.cluster(t, ns, "unbrokered").Status.ExternalState.Broker; rec == nil || rec.SecretRef.Name != "rabbitmq-admin" {
		t.Errorf("status.externalState.broker = %+v; want the broker's Secret recorded", rec)
	}

	// deletionPolicy Delete (the default): removing spec.broker deletes the
	// topology, then its condition, record and the finalizer go.
	cc := s.cluster(t, ns, "unbrokered")
	s.update(t, cc, func() { cc.Spec.Broker = nil })
	topologyIs(t, top, false)
	noCondition(t, s, ns, "unbrokered", v1alpha1.ConditionBrokerReady)
	eventually(t, "record and finalizer gone", func() error {
		got := s.cluster(t, ns, "unbrokered")
		if got.Status.ExternalState.Broker != nil || len(got.Finalizers) != 0 {
			return fmt.Errorf("record %+v, finalizers %v", got.Status.ExternalState.Broker, got.Finalizers)
		}
		return nil
	})
	s.event(t, ns, controllers.EventExternalDeleted, "spec.broker was removed", top.Exchange)
}
