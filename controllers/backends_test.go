package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp091 "github.com/rabbitmq/amqp091-go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/backends"
	"github.com/parley-chat/parley/internal/naming"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/resource"
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

// aggregatedEdit builds what kube-controller-manager's aggregation
// controller makes of the built-in "edit" ClusterRole (envtest runs no
// controller manager): the union of the rules of every ClusterRole its
// aggregationRule selects, Parley's chatcluster-editor-role included.
func (s *suite) aggregatedEdit(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "chatcluster_editor_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	parley := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, parley); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Create(ctx, parley); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	edit := &rbacv1.ClusterRole{}
	if err := s.c.Get(ctx, types.NamespacedName{Name: "edit"}, edit); err != nil {
		t.Fatal(err)
	}
	if edit.AggregationRule == nil {
		t.Fatal("the built-in edit role has no aggregationRule")
	}
	union := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: testenv.UniqueName(t, "edit")}}
	for _, sel := range edit.AggregationRule.ClusterRoleSelectors {
		ls, err := metav1.LabelSelectorAsSelector(&sel)
		if err != nil {
			t.Fatal(err)
		}
		var roles rbacv1.ClusterRoleList
		if err := s.c.List(ctx, &roles, client.MatchingLabelsSelector{Selector: ls}); err != nil {
			t.Fatal(err)
		}
		for _, r := range roles.Items {
			union.Rules = append(union.Rules, r.Rules...)
		}
	}
	s.create(t, union)
	return union.Name
}

// testEditorCannotReadAdminCredentials: a tenant's namespace editor (the
// built-in edit role, impersonated through the API server) manages its
// ChatClusters and reads its own Secrets, but cannot read the backend admin
// credentials nor make a ChatBackend that would point at them.
func testEditorCannotReadAdmin(t *testing.T, s *suite) {
	ctx := context.Background()
	platform := s.namespace(t)
	rmq := s.rabbitBackend(t, platform, nil)
	ns := s.namespace(t)
	role := s.aggregatedEdit(t)
	user := "dev-" + ns
	s.create(t, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "developers"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})
	cfg := rest.CopyConfig(s.env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	dev, err := client.New(cfg, client.Options{Scheme: s.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// What an editor may do: the role works, so the refusals below mean something.
	s.secret(t, ns, "own", false, map[string]string{"k": "v"})
	if err := dev.Get(ctx, types.NamespacedName{Namespace: ns, Name: "own"}, &corev1.Secret{}); err != nil {
		t.Fatalf("the editor cannot read a Secret of its own namespace (is the role aggregated?): %v", err)
	}
	cc := newCluster(ns, "chat")
	cc.Spec.Broker = &v1alpha1.BrokerSpec{Backend: rmq.Name}
	if err := dev.Create(ctx, cc); err != nil {
		t.Fatalf("the editor cannot create a ChatCluster: %v", err)
	}
	// What it may not.
	if err := dev.Get(ctx, types.NamespacedName{Namespace: platform, Name: rmq.Name + "-admin"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the editor reading the backend's admin Secret: want Forbidden, got %v", err)
	}
	if err := dev.List(ctx, &corev1.SecretList{}); !apierrors.IsForbidden(err) {
		t.Errorf("the editor listing Secrets of all namespaces: want Forbidden, got %v", err)
	}
	evil := &v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: testenv.UniqueName(t, "evil")}, Spec: v1alpha1.ChatBackendSpec{
		RabbitMQ:          &v1alpha1.RabbitMQBackend{ConnectionSecret: &v1alpha1.ObjectReference{Namespace: platform, Name: rmq.Name + "-admin"}},
		AllowedNamespaces: allowed(nil),
	}}
	if err := dev.Create(ctx, evil); !apierrors.IsForbidden(err) {
		t.Errorf("the editor creating a ChatBackend: want Forbidden, got %v", err)
		_ = s.c.Delete(ctx, evil)
	}
	if err := dev.Update(ctx, rmq); !apierrors.IsForbidden(err) {
		t.Errorf("the editor changing a ChatBackend: want Forbidden, got %v", err)
	}
	// The cluster works with credentials of its own, which the editor may read.
	s.condition(t, ns, "chat", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	sec := &corev1.Secret{}
	if err := dev.Get(ctx, types.NamespacedName{Namespace: ns, Name: naming.BrokerSecretName("chat")}, sec); err != nil {
		t.Errorf("the editor cannot read its cluster's own broker credentials: %v", err)
	}
	if strings.Contains(string(sec.Data[naming.BrokerURIKey]), "guest") {
		t.Errorf("the cluster's credentials are the admin's")
	}
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

// testReferencedBackends: backends that point at a RabbitmqCluster and at a
// CloudNativePG Cluster, read as the operators of those kinds publish them,
// both verified over TLS with a CA the test makes (TLS proxies in front of
// this machine's servers). Before the kinds are installed, the backends'
// status says so.
func testReferencedBackends(t *testing.T, s *suite) {
	ctx := context.Background()
	platform := s.namespace(t)
	ca := testenv.NewCA(t)
	s.secret(t, platform, "backend-ca", false, map[string]string{"ca.crt": string(ca.CertPEM)})
	caRef := &v1alpha1.BackendTLS{CASecretRef: v1alpha1.NamespacedSecretKeyReference{Namespace: platform, Name: "backend-ca", Key: "ca.crt"}}

	rmq := &v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: testenv.UniqueName(t, "rmqref")}, Spec: v1alpha1.ChatBackendSpec{
		RabbitMQ:          &v1alpha1.RabbitMQBackend{ClusterRef: &v1alpha1.ObjectReference{Namespace: platform, Name: "rabbit"}, TLS: caRef},
		AllowedNamespaces: allowed(nil),
	}}
	pg := &v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: testenv.UniqueName(t, "pgref")}, Spec: v1alpha1.ChatBackendSpec{
		PostgreSQL:        &v1alpha1.PostgreSQLBackend{ClusterRef: &v1alpha1.ObjectReference{Namespace: platform, Name: "pg"}},
		AllowedNamespaces: allowed(nil),
	}}
	s.createBackend(t, rmq)
	s.createBackend(t, pg)
	crdsInstalled := false
	for _, b := range []*v1alpha1.ChatBackend{rmq, pg} {
		s.backendStatus(t, b.Name, func(got *v1alpha1.ChatBackend) error {
			c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionBackendReady)
			if crdsInstalled {
				return nil
			}
			if c == nil || c.Reason != backends.ReasonKindNotInstalled {
				return fmt.Errorf("Ready = %+v, want reason %s", c, backends.ReasonKindNotInstalled)
			}
			return nil
		})
	}
	if _, err := envtest.InstallCRDs(s.env.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("testdata", "rabbitmqcluster-crd.yaml"), filepath.Join("testdata", "cnpg-cluster-crd.yaml")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install the RabbitmqCluster and CNPG Cluster CRDs: %v", err)
	}
	crdsInstalled = true

	// What rabbitmq/cluster-operator publishes for a RabbitmqCluster "rabbit":
	// the default-user Secret, the Service, and status.defaultUser naming them.
	amqpsAddr := testenv.TLSProxy(t, ca, hostPort(t, testenv.AMQPURL()))
	mgmtAddr := testenv.TLSProxy(t, ca, hostPort(t, testenv.AMQPManagementURL()))
	adminUser, adminPass := amqpCredentials(t)
	s.secret(t, platform, "rabbit-default-user", false, map[string]string{
		"username": adminUser, "password": adminPass, "host": "127.0.0.1", "port": "5672", "provider": "rabbitmq", "type": "rabbitmq",
	})
	s.create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: platform, Name: "rabbit"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "amqp", Port: 5672}, {Name: "management", Port: 15672},
		{Name: "amqps", Port: int32(portOf(t, amqpsAddr))}, {Name: "management-tls", Port: int32(portOf(t, mgmtAddr))},
	}}})
	rabbit := unstructuredObject(backends.RabbitmqClusterGVK, platform, "rabbit", map[string]any{"replicas": int64(1)})
	s.create(t, rabbit)
	unstructured.SetNestedMap(rabbit.Object, map[string]any{
		"defaultUser": map[string]any{
			"secretReference":  map[string]any{"name": "rabbit-default-user", "keys": map[string]any{"username": "username", "password": "password"}},
			"serviceReference": map[string]any{"name": "rabbit", "namespace": platform},
		},
		"binding": map[string]any{"name": "rabbit-default-user"},
	}, "status")
	if err := s.c.Status().Update(ctx, rabbit); err != nil {
		t.Fatalf("write RabbitmqCluster status: %v", err)
	}

	// What CloudNativePG keeps for a Cluster "pg" with enableSuperuserAccess:
	// the superuser Secret (pointing here at a TLS proxy in front of this
	// machine's PostgreSQL) and the server CA Secret <name>-ca.
	pgAddr := testenv.PostgresTLSProxy(t, ca, hostPort(t, testenv.PostgresURL()))
	pgUser, pgPass := postgresCredentials(t)
	s.secret(t, platform, "pg-superuser", false, map[string]string{
		"username": pgUser, "password": pgPass, "host": "127.0.0.1", "port": fmt.Sprint(portOf(t, pgAddr)),
	})
	s.secret(t, platform, "pg-ca", false, map[string]string{"ca.crt": string(ca.CertPEM)})
	s.create(t, unstructuredObject(backends.CNPGClusterGVK, platform, "pg", map[string]any{"instances": int64(1), "enableSuperuserAccess": true}))

	s.backendStatus(t, rmq.Name, readyWith(0))
	s.backendStatus(t, pg.Name, readyWith(0))

	ns := s.namespace(t)
	s.tenantCluster(t, ns, "chat", rmq.Name, pg.Name)
	s.condition(t, ns, "chat", v1alpha1.ConditionBrokerReady, metav1.ConditionTrue)
	s.condition(t, ns, "chat", v1alpha1.ConditionDatabaseReady, metav1.ConditionTrue)

	// The tenant's credentials carry the CA and verify the servers.
	broker := secretData(t, s, ns, naming.BrokerSecretName("chat"))
	if string(broker[naming.CAKey]) != string(ca.CertPEM) || !strings.HasPrefix(string(broker[naming.BrokerURIKey]), "amqps://") {
		t.Fatalf("broker Secret: ca %d bytes, uri scheme %q", len(broker[naming.CAKey]), strings.SplitN(string(broker[naming.BrokerURIKey]), ":", 2)[0])
	}
	db := secretData(t, s, ns, naming.DatabaseSecretName("chat"))
	dbURI := string(db[naming.DatabaseURIKey])
	if string(db[naming.CAKey]) != string(ca.CertPEM) || !strings.Contains(dbURI, "sslmode=verify-full") ||
		!strings.Contains(dbURI, url.QueryEscape(resource.DatabaseDir+"/"+resource.CAFile)) {
		t.Fatalf("database Secret: ca %d bytes, uri %s", len(db[naming.CAKey]), redactURI(dbURI))
	}
	// The pods mount the CA beside each URI.
	d := s.deployment(t, ns, "chat")
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name != "broker" && v.Name != "database" {
			continue
		}
		found := false
		for _, it := range v.Secret.Items {
			found = found || (it.Key == naming.CAKey && it.Path == resource.CAFile)
		}
		if !found {
			t.Errorf("volume %s does not mount the CA: %+v", v.Name, v.Secret.Items)
		}
	}
	// The chat server's database URI works through the TLS proxy with the CA
	// (as the pod would read it, with sslrootcert pointing at a file).
	caFile := ca.WriteCertFile(t)
	cfg, err := pgx.ParseConfig(strings.Replace(dbURI, url.QueryEscape(resource.DatabaseDir+"/"+resource.CAFile), url.QueryEscape(caFile), 1))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("the tenant's database URI does not work over verified TLS: %v", err)
	}
	conn.Close(ctx)
}

func unstructuredObject(gvk schema.GroupVersionKind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// hostPort is the address of a URI (amqp://, http://, postgres://).
func hostPort(t *testing.T, uri string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "" {
		def := map[string]string{"amqp": "5672", "http": "80", "postgres": "5432", "postgresql": "5432"}[u.Scheme]
		return net.JoinHostPort(u.Hostname(), def)
	}
	return u.Host
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

func amqpCredentials(t *testing.T) (user, pass string) {
	t.Helper()
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil || u.User == nil {
		return "guest", "guest"
	}
	pass, _ = u.User.Password()
	return u.User.Username(), pass
}

func postgresCredentials(t *testing.T) (user, pass string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	pass = cfg.Password
	if pass == "" {
		pass = "unused-with-trust-auth"
	}
	return cfg.User, pass
}

// redactURI hides a URI's password in test output.
func redactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(unparsable URI)"
	}
	return u.Redacted()
}
