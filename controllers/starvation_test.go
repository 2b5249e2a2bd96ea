package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/backends"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/testenv"
)

func init() {
	register("BlackholedBackendsDoNotStarveHealthyClusters", testBlackholeDoesNotStarve)
}

// healthyBound is how long 20 healthy ChatClusters may take, from their
// creation, to be provisioned (BrokerReady and DatabaseReady), deleted and
// gone, while 5 others point at backends that never answer. Alone they need
// a few seconds; without bounds on the calls to the blackholed backends the
// manager's 4 workers each sit in 10 s calls, and they need minutes.
const healthyBound = 60 * time.Second

func testBlackholeDoesNotStarve(t *testing.T, s *suite) {
	hole := testenv.Blackhole(t)

	// 5 clusters whose RabbitMQ and PostgreSQL accept connections and never
	// answer: 3 through the deprecated admin Secrets, 2 through ChatBackends.
	stuckNS := s.namespace(t)
	s.secret(t, stuckNS, "rabbitmq-admin", true, map[string]string{"uri": "amqp://guest:guest@" + hole + "/"})
	s.secret(t, stuckNS, "postgres-admin", true, map[string]string{"uri": "postgres://postgres@" + hole + "/postgres?sslmode=disable"})
	platformNS := s.namespace(t)
	sel := map[string]string{"test.parley.io/blackhole": stuckNS}
	labelNamespace(t, s, stuckNS, sel)
	rmqName := testenv.UniqueName(t, "rmq-hole")
	s.secret(t, platformNS, rmqName, false, map[string]string{
		backends.ConnectionURIKey: "amqp://guest:guest@" + hole + "/", backends.ConnectionManagementURIKey: "http://guest:guest@" + hole,
	})
	rmq := &v1alpha1.ChatBackend{ObjectMeta: metav1.ObjectMeta{Name: rmqName}, Spec: v1alpha1.ChatBackendSpec{
		RabbitMQ:          &v1alpha1.RabbitMQBackend{ConnectionSecret: &v1alpha1.ObjectReference{Namespace: platformNS, Name: rmqName}},
		AllowedNamespaces: allowed(sel),
	}}
	s.createBackend(t, rmq)
	pg := s.postgresBackend(t, platformNS, "postgres://postgres@"+hole+"/postgres?sslmode=disable", sel)

	var stuck []string
	for i := range 5 {
		name := fmt.Sprintf("stuck-%d", i)
		cc := newCluster(stuckNS, name)
		if i < 3 {
			cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq-admin", Key: "uri"}}
			cc.Spec.Database = &v1alpha1.DatabaseSpec{AdminSecretRef: &v1alpha1.SecretKeyReference{Name: "postgres-admin", Key: "uri"},
				ReclaimPolicy: v1alpha1.DeletionPolicyDelete}
		} else {
			cc.Spec.Broker = &v1alpha1.BrokerSpec{Backend: rmq.Name}
			cc.Spec.Database = &v1alpha1.DatabaseSpec{Backend: pg.Name, ReclaimPolicy: v1alpha1.DeletionPolicyDelete}
		}
		s.create(t, cc)
		stuck = append(stuck, name)
	}
	// Registered after the namespace's cleanup, so it runs first: the stuck
	// clusters let go of their (never created) state at once.
	t.Cleanup(func() {
		for _, name := range stuck {
			cc := &v1alpha1.ChatCluster{}
			if s.get(t, stuckNS, name, cc) != nil {
				continue
			}
			s.update(t, cc, func() {
				if cc.Annotations == nil {
					cc.Annotations = map[string]string{}
				}
				cc.Annotations[controllers.AnnotationAbandonExternalState] = "true"
			})
		}
	})
	// The stuck clusters are being worked on before the healthy ones come.
	time.Sleep(time.Second)

	ns := s.namespace(t)
	s.secret(t, ns, "rabbitmq-admin", true, map[string]string{"uri": testenv.AMQPURL()})
	s.secret(t, ns, "postgres-admin", true, map[string]string{"uri": testenv.PostgresURL()})
	start := time.Now()
	deadline := start.Add(healthyBound)
	var healthy []*v1alpha1.ChatCluster
	for i := range 20 {
		cc := newCluster(ns, fmt.Sprintf("ok-%d", i))
		cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq-admin", Key: "uri"}}
		cc.Spec.Database = &v1alpha1.DatabaseSpec{AdminSecretRef: &v1alpha1.SecretKeyReference{Name: "postgres-admin", Key: "uri"},
			ReclaimPolicy: v1alpha1.DeletionPolicyDelete}
		s.createProvisioned(t, cc)
		healthy = append(healthy, cc)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(healthy))
	for i, cc := range healthy {
		wg.Go(func() {
			errs[i] = s.provisionThenDelete(cc, deadline)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("20 healthy clusters provisioned and deleted in %s beside 5 blackholed ones", time.Since(start).Round(time.Millisecond))

	// The stuck ones say what is wrong and when the next attempt is.
	for _, name := range stuck {
		cc := s.cluster(t, stuckNS, name)
		for _, typ := range []string{v1alpha1.ConditionBrokerReady, v1alpha1.ConditionDatabaseReady} {
			c := meta.FindStatusCondition(cc.Status.Conditions, typ)
			switch {
			case c == nil || c.Status != metav1.ConditionFalse:
				t.Errorf("%s %s = %+v; want False", name, typ, c)
			case c.Reason != string(amqpprov.ReasonUnreachable) && c.Reason != string(pgprov.ReasonUnreachable):
				t.Errorf("%s %s reason %s (%s); want Unreachable", name, typ, c.Reason, c.Message)
			case !strings.Contains(c.Message, "next attempt at"):
				t.Errorf("%s %s message %q does not say when the next attempt is", name, typ, c.Message)
			}
		}
	}
}

// provisionThenDelete waits until cc is BrokerReady and DatabaseReady,
// deletes it and waits until it is gone, all before deadline.
func (s *suite) provisionThenDelete(cc *v1alpha1.ChatCluster, deadline time.Time) error {
	ctx := context.Background()
	ready := func() (bool, error) {
		got := &v1alpha1.ChatCluster{}
		if err := s.c.Get(ctx, clientKey(cc), got); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(got.Status.Conditions, v1alpha1.ConditionBrokerReady) &&
			meta.IsStatusConditionTrue(got.Status.Conditions, v1alpha1.ConditionDatabaseReady), nil
	}
	for {
		ok, err := ready()
		if err != nil {
			return err
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not BrokerReady and DatabaseReady within %s", cc.Name, healthyBound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.c.Delete(ctx, cc); err != nil {
		return err
	}
	for {
		err := s.c.Get(ctx, clientKey(cc), &v1alpha1.ChatCluster{})
		if err != nil {
			if client404(err) {
				return nil
			}
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not gone within %s of its creation", cc.Name, healthyBound)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func labelNamespace(t *testing.T, s *suite, ns string, labels map[string]string) {
	t.Helper()
	obj := &corev1.Namespace{}
	if err := s.c.Get(context.Background(), types.NamespacedName{Name: ns}, obj); err != nil {
		t.Fatal(err)
	}
	s.update(t, obj, func() {
		if obj.Labels == nil {
			obj.Labels = map[string]string{}
		}
		maps.Copy(obj.Labels, labels)
	})
}

func clientKey(obj client.Object) types.NamespacedName { return client.ObjectKeyFromObject(obj) }

func client404(err error) bool { return apierrors.IsNotFound(err) }
