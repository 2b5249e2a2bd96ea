package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp091 "github.com/rabbitmq/amqp091-go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/backends"
	"github.com/parley-chat/parley/internal/naming"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/testenv"
)

// Scenarios of ChatBackends (issue 14): platform-owned backends, tenants
// with credentials of their own, isolation proven against the real servers.
func init() {
	register("TenantsOnOneBackendAreIsolated", testTenantsIsolated)
	register("BackendRefusesNamespacesItDoesNotAllow", testNamespaceNotAllowed)
	register("DefaultBackendIsTheNewestAndSticks", testDefaultBackend)
	register("BackendsReferenceRabbitmqClusterAndCNPGOverTLS", testReferencedBackends)
	register("NamespaceEditorCannotReadAdminCredentials", testEditorCannotReadAdmin)
}

// rabbitBackend creates a RabbitMQ ChatBackend whose connection Secret (the
// admin's AMQP and management URIs) lives in platformNS, admitting the
// namespaces labelled with the given selector (nil: all). It is deleted when
// the test ends, after the ChatClusters registered later (t.Cleanup order).
func (s *suite) rabbitBackend(t *testing.T, platformNS string, selector map[string]string) *v1alpha1.ChatBackend {
	t.Helper()
	name := testenv.UniqueName(t, "rmq")
	s.secret(t, platformNS, name+"-admin", false, map[string]string{
		backends.ConnectionURIKey: testenv.AMQPURL(), backends.ConnectionManagementURIKey: testenv.AMQPManagementURL(),
	})
	b := &v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ChatBackendSpec{
		RabbitMQ:          &v1alpha1.RabbitMQBackend{ConnectionSecret: &v1alpha1.ObjectReference{Namespace: platformNS, Name: name + "-admin"}},
		AllowedNamespaces: allowed(selector),
	}}
	s.createBackend(t, b)
	return b
}

// postgresBackend creates a PostgreSQL ChatBackend with adminURI in platformNS.
func (s *suite) postgresBackend(t *testing.T, platformNS, adminURI string, selector map[string]string) *v1alpha1.ChatBackend {
	t.Helper()
	name := testenv.UniqueName(t, "pg")
	s.secret(t, platformNS, name+"-admin", false, map[string]string{"uri": adminURI})
	b := &v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ChatBackendSpec{
		PostgreSQL: &v1alpha1.PostgreSQLBackend{AdminSecretRef: &v1alpha1.NamespacedSecretKeyReference{
			Namespace: platformNS, Name: name + "-admin", Key: "uri"}},
		AllowedNamespaces: allowed(selector),
	}}
	s.createBackend(t, b)
	return b
}

func allowed(selector map[string]string) v1alpha1.AllowedNamespaces {
	if selector == nil {
		return v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromAll}
	}
	return v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector, Selector: &metav1.LabelSelector{MatchLabels: selector}}
}

func (s *suite) createBackend(t *testing.T, b *v1alpha1.ChatBackend) {
	t.Helper()
	s.create(t, b)
	// Deleting a backend in use only marks it: it goes once the clusters
	// using it (deleted by their namespaces' cleanup) are gone.
	t.Cleanup(func() { _ = s.c.Delete(context.Background(), b) })
}

// backendStatus waits until the backend's status satisfies check.
func (s *suite) backendStatus(t *testing.T, name string, check func(*v1alpha1.ChatBackend) error) *v1alpha1.ChatBackend {
	t.Helper()
	b := &v1alpha1.ChatBackend{}
	eventually(t, "ChatBackend "+name+" status", func() error {
		if err := s.c.Get(context.Background(), types.NamespacedName{Name: name}, b); err != nil {
			return err
		}
		return check(b)
	})
	return b
}

func readyWith(clusters int32) func(*v1alpha1.ChatBackend) error {
	return func(b *v1alpha1.ChatBackend) error {
		c := meta.FindStatusCondition(b.Status.Conditions, v1alpha1.ConditionBackendReady)
		switch {
		case c == nil || c.Status != metav1.ConditionTrue:
			return fmt.Errorf("Ready = %+v", c)
		case b.Status.Version == "":
			return errors.New("no version")
		case b.Status.ChatClusters != clusters:
			return fmt.Errorf("chatClusters = %d, want %d", b.Status.ChatClusters, clusters)
		}
		return nil
	}
}

// tenantCluster creates a ChatCluster in ns on the two backends.
func (s *suite) tenantCluster(t *testing.T, ns, name, broker, database string) *v1alpha1.ChatCluster {
	t.Helper()
	cc := s.keyedCluster(t, ns, name)
	cc.Spec.Broker = &v1alpha1.BrokerSpec{Backend: broker}
	cc.Spec.Database = &v1alpha1.DatabaseSpec{Backend: database, ReclaimPolicy: v1alpha1.DeletionPolicyDelete}
	s.create(t, cc)
	return cc
}

// limitedAdmin creates a PostgreSQL admin that is no superuser (CREATEROLE
// and CREATEDB, as a managed service gives), dropped when the test ends.
func limitedAdmin(t *testing.T) (role, uri string) {
	t.Helper()
	ctx := context.Background()
	role = strings.ReplaceAll(testenv.UniqueName(t, "admin"), "-", "_")
	if len(role) > 60 {
		role = role[len(role)-60:]
	}
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN CREATEROLE CREATEDB PASSWORD 'admin-pw'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, testenv.PostgresURL())
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize())
	})
	u, err := url.Parse(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "admin-pw")
	return role, u.String()
}

func isMember(t *testing.T, member, role string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_has_role($1, $2, 'MEMBER')", member, role).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func secretData(t *testing.T, s *suite, ns, name string) map[string][]byte {
	t.Helper()
	sec := &corev1.Secret{}
	eventually(t, "Secret "+name, func() error { return s.get(t, ns, name, sec) })
	return sec.Data
}

func mgmtClient(t *testing.T) *rabbithole.Client {
	t.Helper()
	u, err := url.Parse(testenv.AMQPManagementURL())
	if err != nil {
		t.Fatal(err)
	}
	user, pass := "guest", "guest"
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	} else if a, err := url.Parse(testenv.AMQPURL()); err == nil && a.User != nil {
		user = a.User.Username()
		pass, _ = a.User.Password()
	}
	u.User = nil
	c, err := rabbithole.NewClient(u.String(), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func vhostExists(t *testing.T, vhost string) bool {
	t.Helper()
	_, err := mgmtClient(t).GetVhost(vhost)
	var e rabbithole.ErrorResponse
	if errors.As(err, &e) && e.StatusCode == 404 {
		return false
	}
	if err != nil {
		t.Fatalf("management API: %v", err)
	}
	return true
}

// withVHost replaces the vhost of an AMQP URI.
func withVHost(t *testing.T, uri, vhost string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.Path, u.RawPath = "/"+vhost, "/"+url.PathEscape(vhost)
	return u.String()
}

// vhostRefused recognises RabbitMQ's answer to opening a vhost the user has
// no permissions in: connection.close 530 NOT_ALLOWED "access to vhost ... refused".
func vhostRefused(err error) bool {
	var e *amqp091.Error
	return errors.As(err, &e) && e.Code == amqp091.NotAllowed && strings.Contains(e.Reason, "access to vhost")
}

func accessRefused(err error) bool {
	var e *amqp091.Error
	return errors.As(err, &e) && e.Code == amqp091.AccessRefused
}

// testTenantsIsolated runs two tenants in two namespaces on one RabbitMQ
// and one PostgreSQL (a non-superuser admin) and proves each holds only its
// own credentials and can reach nothing of the other's.
func testTenantsIsolated(t *testing.T, s *suite) {
	platform := s.namespace(t)
	adminRole, adminURI := limitedAdmin(t)
	rmq := s.rabbitBackend(t, platform, nil)
	pg := s.postgresBackend(t, platform, adminURI, nil)
	nsA, nsB := s.namespace(t), s.namespace(t)
	a := s.tenantCluster(t, nsA, "chat", rmq.Name, pg.Name)
	b := s.tenantCluster(t, nsB, "chat", rmq.Name, pg.Name)
	for _, cc := range []*v1alpha1.ChatCluster{a, b} {
		s.condition(t, cc.Namespace, cc.Name, v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
		s.condition(t, cc.Namespace, cc.Name, v1alpha1.ConditionDatabaseReady, metav1.ConditionTrue)
		got := s.cluster(t, cc.Namespace, cc.Name)
		if got.Status.Backends.Broker != rmq.Name || got.Status.Backends.Database != pg.Name {
			t.Errorf("%s: status.backends = %+v", cc.Namespace, got.Status.Backends)
		}
		if meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionDeprecated) != nil {
			t.Errorf("%s: a cluster on backends has a Deprecated condition", cc.Namespace)
		}
	}
	s.backendStatus(t, rmq.Name, readyWith(2))
	s.backendStatus(t, pg.Name, readyWith(2))

	// The pods mount the cluster's own credentials, nothing of the platform's.
	d := s.deployment(t, nsA, "chat")
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil && strings.Contains(v.Secret.SecretName, "admin") {
			t.Errorf("the pods mount Secret %s", v.Secret.SecretName)
		}
		if v.Name == "broker" && (v.Secret == nil || v.Secret.SecretName != naming.BrokerSecretName("chat")) {
			t.Errorf("broker volume = %+v, want Secret %s", v.VolumeSource, naming.BrokerSecretName("chat"))
		}
	}

	// RabbitMQ: each tenant its own vhost and user.
	brokerA, brokerB := secretData(t, s, nsA, naming.BrokerSecretName("chat")), secretData(t, s, nsB, naming.BrokerSecretName("chat"))
	uriA := string(brokerA[naming.BrokerURIKey])
	vhostA, vhostB := naming.BrokerVHost(nsA, "chat"), naming.BrokerVHost(nsB, "chat")
	if string(brokerA["vhost"]) != vhostA || string(brokerB["vhost"]) != vhostB {
		t.Fatalf("vhosts %q, %q", brokerA["vhost"], brokerB["vhost"])
	}
	if strings.Contains(uriA, "guest") {
		t.Fatalf("tenant URI carries the admin's user: %s", uriA)
	}
	connA, err := amqp091.Dial(uriA)
	if err != nil {
		t.Fatalf("tenant A cannot connect to its own vhost: %v", err)
	}
	defer connA.Close()
	if _, err := amqp091.Dial(withVHost(t, uriA, vhostB)); !vhostRefused(err) {
		t.Errorf("tenant A's user opening B's vhost: want 530 NOT_ALLOWED, got %v", err)
	}
	if _, err := amqp091.Dial(withVHost(t, uriA, "/")); !vhostRefused(err) {
		t.Errorf("tenant A's user opening the default vhost: want 530 NOT_ALLOWED, got %v", err)
	}
	exA := naming.ExchangeNames(nsA, "chat")
	// What the chat server does works: its own exclusive queue, bound and consumed.
	ch, err := connA.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := exA.Publications + ".node.test.1"
	if _, err := ch.QueueDeclare(q, false, true, true, false, amqp091.Table{"x-queue-type": "classic", "x-dead-letter-exchange": exA.DeadLetter}); err != nil {
		t.Fatalf("tenant A cannot declare its node queue: %v", err)
	}
	if err := ch.QueueBind(q, "c.x", exA.Publications, false, nil); err != nil {
		t.Fatalf("tenant A cannot bind its queue: %v", err)
	}
	if _, err := ch.Consume(q, "", false, true, false, false, nil); err != nil {
		t.Fatalf("tenant A cannot consume its queue: %v", err)
	}
	// ...and nothing more: no deleting the durable exchanges, no other queues.
	ch2, _ := connA.Channel()
	if err := ch2.ExchangeDelete(exA.Publications, false, false); !accessRefused(err) {
		t.Errorf("tenant A deleting its durable exchange: want 403, got %v", err)
	}
	ch3, _ := connA.Channel()
	if _, err := ch3.QueueDeclare("stolen", true, false, false, false, nil); !accessRefused(err) {
		t.Errorf("tenant A declaring a queue outside its pattern: want 403, got %v", err)
	}

	// PostgreSQL: each tenant its own role and database; the admin is a member of neither.
	dbA, dbB := pgprov.DatabaseFor(nsA, "chat"), pgprov.DatabaseFor(nsB, "chat")
	for _, db := range []pgprov.Database{dbA, dbB} {
		if isMember(t, adminRole, db.Role) {
			t.Errorf("the admin %s is a member of tenant role %s after reconcile", adminRole, db.Role)
		}
	}
	credsA := secretData(t, s, nsA, naming.DatabaseSecretName("chat"))
	ctx := context.Background()
	pgA, err := pgx.Connect(ctx, string(credsA[naming.DatabaseURIKey]))
	if err != nil {
		t.Fatalf("tenant A cannot connect to its database: %v", err)
	}
	defer pgA.Close(ctx)
	if _, err := pgA.Exec(ctx, "SET ROLE "+pgx.Identifier{dbB.Role}.Sanitize()); err == nil {
		t.Errorf("tenant A could SET ROLE %s", dbB.Role)
	}
	if _, err := pgA.Exec(ctx, "DROP DATABASE "+pgx.Identifier{dbB.Name}.Sanitize()); err == nil {
		t.Errorf("tenant A dropped B's database")
	}
	cfg, err := pgx.ParseConfig(string(credsA[naming.DatabaseURIKey]))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = dbB.Name
	if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		c.Close(ctx)
		t.Errorf("tenant A connected to B's database %s", dbB.Name)
	}

	// Deleting a tenant deletes its vhost, user, role and database, and nothing of the other's.
	s.delete(t, a)
	s.gone(t, nsA, "chat")
	if vhostExists(t, vhostA) {
		t.Errorf("vhost %s left after its ChatCluster was deleted", vhostA)
	}
	if !vhostExists(t, vhostB) {
		t.Errorf("vhost %s of the other tenant was deleted", vhostB)
	}
	if roleOK, dbOK := databaseExists(t, dbA); roleOK || dbOK {
		t.Errorf("role/database of A left behind: role %v, database %v", roleOK, dbOK)
	}
	if _, dbOK := databaseExists(t, dbB); !dbOK {
		t.Errorf("B's database went with A")
	}
	s.backendStatus(t, rmq.Name, readyWith(1))

	// A backend in use is kept when deleted, and says so, until its last cluster goes.
	s.delete(t, rmq)
	s.backendStatus(t, rmq.Name, func(got *v1alpha1.ChatBackend) error {
		c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionBackendReady)
		if got.DeletionTimestamp.IsZero() || c == nil || c.Reason != "InUse" || !strings.Contains(c.Message, nsB+"/chat") {
			return fmt.Errorf("deletion %v, Ready %+v", got.DeletionTimestamp, c)
		}
		return nil
	})
	s.delete(t, b)
	s.gone(t, nsB, "chat")
	if vhostExists(t, vhostB) {
		t.Errorf("vhost %s left after its ChatCluster was deleted from a backend being deleted", vhostB)
	}
	eventually(t, "the deleted backend gone once unused", func() error {
		if err := s.c.Get(context.Background(), client.ObjectKeyFromObject(rmq), &v1alpha1.ChatBackend{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

// testNamespaceNotAllowed: a backend admits only the namespaces its selector
// matches; elsewhere nothing is created and the condition says why, until
// the namespace is admitted.
func testNamespaceNotAllowed(t *testing.T, s *suite) {
	platform := s.namespace(t)
	label := map[string]string{"parley.test/tenant": strings.TrimPrefix(testenv.UniqueName(t, "t"), "-")[:20]}
	rmq := s.rabbitBackend(t, platform, label)
	ns := s.namespace(t)
	cc := s.keyedCluster(t, ns, "chat")
	cc.Spec.Broker = &v1alpha1.BrokerSpec{Backend: rmq.Name}
	s.create(t, cc)
	c := s.reason(t, ns, "chat", v1alpha1.ConditionBrokerReady, backends.ReasonNamespaceNotAllowed)
	if !strings.Contains(c.Message, ns) || !strings.Contains(c.Message, rmq.Name) {
		t.Errorf("message does not name the namespace and backend: %s", c.Message)
	}
	if vhostExists(t, naming.BrokerVHost(ns, "chat")) {
		t.Error("a vhost was created for a namespace the backend does not allow")
	}
	if err := s.get(t, ns, naming.BrokerSecretName("chat"), &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("credentials Secret for a refused namespace: %v", err)
	}
	if err := s.get(t, ns, "chat", &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("Deployment for a refused namespace: %v", err)
	}
	if got := s.cluster(t, ns, "chat").Status.Backends.Broker; got != "" {
		t.Errorf("status.backends.broker = %q for a refused namespace", got)
	}

	// Admitting the namespace (a label the backend selects) is seen at once.
	n := &corev1.Namespace{}
	if err := s.c.Get(context.Background(), types.NamespacedName{Name: ns}, n); err != nil {
		t.Fatal(err)
	}
	s.update(t, n, func() {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		for k, v := range label {
			n.Labels[k] = v
		}
	})
	s.condition(t, ns, "chat", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	if !vhostExists(t, naming.BrokerVHost(ns, "chat")) {
		t.Error("no vhost after the namespace was admitted")
	}
}

// testDefaultBackend: a cluster naming no backend gets the newest default of
// its type and keeps it when another default appears later.
func testDefaultBackend(t *testing.T, s *suite) {
	platform := s.namespace(t)
	ns := s.namespace(t)
	label := map[string]string{"kubernetes.io/metadata.name": ns} // only this scenario's namespace
	older := s.rabbitBackend(t, platform, label)
	time.Sleep(1100 * time.Millisecond) // creation timestamps have a resolution of a second
	newer := s.rabbitBackend(t, platform, label)
	for _, b := range []*v1alpha1.ChatBackend{older, newer} {
		s.update(t, b, func() { b.Annotations = map[string]string{v1alpha1.AnnotationDefaultBackend: "true"} })
	}
	cc := s.keyedCluster(t, ns, "chat")
	cc.Spec.Broker = &v1alpha1.BrokerSpec{}
	s.create(t, cc)
	s.condition(t, ns, "chat", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	if got := s.cluster(t, ns, "chat").Status.Backends.Broker; got != newer.Name {
		t.Fatalf("the cluster got backend %q, want the newest default %q", got, newer.Name)
	}
	s.backendStatus(t, newer.Name, func(b *v1alpha1.ChatBackend) error {
		if !b.Status.Default || b.Status.ChatClusters != 1 {
			return fmt.Errorf("default %v, clusters %d", b.Status.Default, b.Status.ChatClusters)
		}
		return nil
	})
	s.backendStatus(t, older.Name, func(b *v1alpha1.ChatBackend) error {
		if b.Status.Default {
			return errors.New("the older default says it is the default")
		}
		return nil
	})

	// A still newer default does not move the cluster's state.
	time.Sleep(1100 * time.Millisecond)
	newest := s.rabbitBackend(t, platform, label)
	s.update(t, newest, func() { newest.Annotations = map[string]string{v1alpha1.AnnotationDefaultBackend: "true"} })
	s.backendStatus(t, newest.Name, func(b *v1alpha1.ChatBackend) error {
		if !b.Status.Default {
			return errors.New("not the default yet")
		}
		return nil
	})
	s.passesRead(t, cc, platform, "/api/v1/namespaces/"+platform+"/secrets/"+newer.Name+"-admin")
	if got := s.cluster(t, ns, "chat").Status.Backends.Broker; got != newer.Name {
		t.Errorf("a newer default moved the cluster to %q", got)
	}

	// Naming another backend than the one holding the state is refused.
	s.update(t, cc, func() { cc.Spec.Broker.Backend = newest.Name })
	s.reason(t, ns, "chat", v1alpha1.ConditionBrokerReady, controllersReasonBackendChanged)
}

const controllersReasonBackendChanged = "BackendChanged"

// passesRead pokes the cluster twice and waits each time for a pass to read
// path (a backend's admin Secret in readNS, read around the cache), so the
// first poke's pass has finished when it returns.
func (s *suite) passesRead(t *testing.T, cc *v1alpha1.ChatCluster, readNS, path string) {
	t.Helper()
	for i := range 2 {
		mark := s.requests.mark()
		s.update(t, cc, func() {
			if cc.Annotations == nil {
				cc.Annotations = map[string]string{}
			}
			cc.Annotations["test.parley.io/poke"] = fmt.Sprint(time.Now().UnixNano(), i)
		})
		eventually(t, "a reconcile pass", func() error {
			for _, r := range s.requests.since(mark, readNS) {
				if r.method == "GET" && r.path == path {
					return nil
				}
			}
			return fmt.Errorf("no pass read %s", path)
		})
	}
}
