package controllers_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/backends"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/testenv"
)

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
