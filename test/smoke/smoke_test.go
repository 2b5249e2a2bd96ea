// Package smoke proves the foundation every other test stands on: a real API
// server, the real RabbitMQ and the real PostgreSQL on this machine.
package smoke

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/parley-chat/parley/internal/testenv"
)

func TestAPIServerRoundTripsAnObject(t *testing.T) {
	_, cfg := testenv.StartControlPlane(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version = %q, want v1.37.2 (stamped by hack/control-plane.sh)", v.GitVersion)
	}

	ns := testenv.UniqueName(t, "smoke")
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"greeting": "hello"}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke"}, Data: want,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "smoke", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Data["greeting"] != "hello" || got.UID == "" || got.ResourceVersion == "" {
		t.Errorf("round trip lost data: %+v", got)
	}
}

func TestRabbitMQDeclaresAndDeletesAnExchange(t *testing.T) {
	conn, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatalf("connect to RabbitMQ (run `make services`, or set PARLEY_TEST_AMQP_URL): %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	name := testenv.UniqueName(t, "smoke")
	if err := ch.ExchangeDeclare(name, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclarePassive(name, "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("exchange %s missing after declare: %v", name, err)
	}
	if err := ch.ExchangeDelete(name, false, false); err != nil {
		t.Fatal(err)
	}
	// A passive declare of a missing exchange closes the channel with 404.
	err = ch.ExchangeDeclarePassive(name, "topic", true, false, false, false, nil)
	if e, ok := err.(*amqp.Error); !ok || e.Code != amqp.NotFound {
		t.Fatalf("exchange %s still there after delete: %v", name, err)
	}
}

func TestPostgresCreatesAndDropsADatabase(t *testing.T) {
	url := testenv.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	testenv.DropDatabase(t, db)
	admin, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after drop", db)
	}
}
