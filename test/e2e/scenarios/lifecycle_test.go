package scenarios

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/parleycli"
	"github.com/parley-chat/parley/internal/testenv"
	"github.com/parley-chat/parley/test/e2e/framework"
)

// lifecycle is one ChatCluster's life on the local cluster, shared by the
// steps of TestChatClusterLifecycle.
type lifecycle struct {
	t    *testing.T
	ctx  context.Context
	ns   string
	name string
	// users get distinct names: the server limits connections per user.
	users int
	mu    sync.Mutex
}

func (l *lifecycle) get(t *testing.T) *chatv1alpha1.ChatCluster {
	t.Helper()
	cc := &chatv1alpha1.ChatCluster{}
	if err := env.Client.Get(l.ctx, client.ObjectKey{Namespace: l.ns, Name: l.name}, cc); err != nil {
		t.Fatal(err)
	}
	return cc
}

// patch changes the ChatCluster's spec and returns its new generation.
func (l *lifecycle) patch(t *testing.T, change func(*chatv1alpha1.ChatCluster)) {
	t.Helper()
	cc := l.get(t)
	base := cc.DeepCopy()
	change(cc)
	if err := env.Client.Patch(l.ctx, cc, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

func (l *lifecycle) waitReady(t *testing.T, name string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := env.WaitReady(ctx, l.ns, name, func(line string) {
		t.Logf("[%5.1fs] %s: %s", time.Since(start).Seconds(), name, line)
	}); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// token mints a token for a fresh user.
func (l *lifecycle) token(t *testing.T) string {
	t.Helper()
	l.mu.Lock()
	l.users++
	user := fmt.Sprintf("user-%d", l.users)
	l.mu.Unlock()
	tok, err := env.Token(l.ctx, l.ns, l.name, user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (l *lifecycle) serviceWS(t *testing.T) string {
	t.Helper()
	u, err := env.ServiceURL(l.ctx, l.ns, l.name)
	if err != nil {
		t.Fatal(err)
	}
	return framework.WebSocketURL(u)
}

func (l *lifecycle) podWS(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	u, err := env.PodURL(p)
	if err != nil {
		t.Fatal(err)
	}
	return framework.WebSocketURL(u)
}

func (l *lifecycle) readyPods(t *testing.T) []corev1.Pod {
	t.Helper()
	pods, err := env.ReadyPods(l.ctx, l.ns, l.name)
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

// settled waits until exactly n pods exist, all Ready, and the
// ChatCluster's Service has n ready endpoints (kube-proxy routes to those).
func (l *lifecycle) settled(t *testing.T, n int) {
	t.Helper()
	eventually(t, 2*time.Minute, fmt.Sprintf("%d ready pods and endpoints", n), func() error {
		all, err := env.Pods(l.ctx, l.ns, l.name)
		if err != nil {
			return err
		}
		ready := l.readyPods(t)
		eps, err := env.ReadyEndpoints(l.ctx, l.ns, l.name)
		if err != nil {
			return err
		}
		if len(all) != n || len(ready) != n || eps != n {
			return fmt.Errorf("%d pods, %d ready, %d endpoints", len(all), len(ready), eps)
		}
		return nil
	})
}

// clients connects n clients through the Service, each subscribed to channel.
func (l *lifecycle) clients(t *testing.T, n int, channel string) []*collector {
	t.Helper()
	ws := l.serviceWS(t)
	cols := make([]*collector, n)
	for i := range cols {
		cols[i] = subscribe(t, connect(t, ws, l.token(t)), fmt.Sprintf("client%d", i), channel)
	}
	return cols
}

// TestChatClusterLifecycle takes one ChatCluster (3 replicas, RabbitMQ
// through a proxy the test controls, a PostgreSQL database the operator
// creates) and a second one that retains its external state, through the
// life a platform team would give them.
func TestChatClusterLifecycle(t *testing.T) {
	need(t)
	ctx := context.Background()
	l := &lifecycle{t: t, ctx: ctx, ns: testenv.UniqueName(t, "e2e"), name: "chat"}
	if err := env.CreateNamespace(ctx, l.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.DeleteNamespace(context.Background(), l.ns) })
	rmq, pg, err := env.Backends(ctx, l.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.DeleteBackends(context.Background(), l.ns) })

	newCluster := func(name string, replicas int32, policy chatv1alpha1.DeletionPolicy) {
		cc, err := env.LoadSample("chat_v1alpha1_chatcluster.yaml")
		if err != nil {
			t.Fatal(err)
		}
		cc.Name, cc.Namespace, cc.Spec.Replicas = name, l.ns, &replicas
		framework.WithBackends(cc, rmq, pg)
		cc.Spec.Broker.DeletionPolicy, cc.Spec.Database.ReclaimPolicy = policy, policy
		// Enough history that a client away for a rollout recovers everything.
		for i := range cc.Spec.Channels {
			if cc.Spec.Channels[i].History != nil {
				cc.Spec.Channels[i].History.Size = 10000
			}
		}
		if err := env.Client.Create(ctx, cc); err != nil {
			t.Fatalf("create ChatCluster %s: %v", name, err)
		}
	}
	newCluster("chat", 3, chatv1alpha1.DeletionPolicyDelete)
	newCluster("keeper", 1, chatv1alpha1.DeletionPolicyRetain)

	if !t.Run("apply→Ready", func(t *testing.T) { l.applyToReady(t) }) {
		return
	}
	t.Run("web client and CLI through the Service", func(t *testing.T) { l.webAndCLI(t) })
	t.Run("one room, three replicas, one order", func(t *testing.T) { l.oneOrder(t) })
	t.Run("scale 3→5→3", func(t *testing.T) { l.scale(t) })
	t.Run("config change rolls the pods, clients recover", func(t *testing.T) { l.rollingConfigChange(t) })
	t.Run("pods SIGKILLed under load", func(t *testing.T) { l.podsKilled(t) })
	t.Run("broker lost under load", func(t *testing.T) { l.brokerLost(t) })
	t.Run("delete cleans up per policy", func(t *testing.T) { l.deletion(t) })
}

func (l *lifecycle) applyToReady(t *testing.T) {
	took := l.waitReady(t, "chat")
	l.waitReady(t, "keeper")
	l.settled(t, 3)
	cc := l.get(t)
	if cc.Status.ReadyReplicas != 3 || cc.Status.Endpoint == "" {
		t.Errorf("status: readyReplicas=%d endpoint=%q", cc.Status.ReadyReplicas, cc.Status.Endpoint)
	}
	dep := &appsv1.Deployment{}
	if err := env.Client.Get(l.ctx, client.ObjectKey{Namespace: l.ns, Name: l.name}, dep); err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(dep, cc) {
		t.Error("the Deployment is not owned by the ChatCluster")
	}
	fmt.Printf("e2e apply→Ready: 3 replicas Ready %s after the ChatCluster was applied\n", took.Round(100*time.Millisecond))
}

// webAndCLI: what `make demo` prints works: the web client is served at the
// Service's address, and `parley chat` / `parley history` talk through it.
func (l *lifecycle) webAndCLI(t *testing.T) {
	base, err := env.ServiceURL(l.ctx, l.ns, l.name)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(page)), "<html") {
		t.Errorf("GET %s/: %s, %.80q", base, resp.Status, page)
	}
	// Metrics and the HTTP API are on the Service's admin port, never the public one.
	admin, err := env.ServiceAdminURL(l.ctx, l.ns, l.name)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url, want string
		status    int
	}{
		{base + "/metrics", "", http.StatusNotFound},
		{admin + "/metrics", "parley_connections", http.StatusOK},
	} {
		resp, err := http.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s: %s, want %d with %q", tc.url, resp.Status, tc.status, tc.want)
		}
	}
	resp, err = http.Post(base+"/api/publish", "application/json", strings.NewReader(`{"channel":"room:lobby","data":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST %s/api/publish on the public port: %s, want 404", base, resp.Status)
	}
	ws := framework.WebSocketURL(base)
	listener := subscribe(t, connect(t, ws, l.token(t)), "listener", "room:lobby")
	cli := func(stdin string, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
		defer cancel()
		tok := l.token(t)
		code := parleycli.Main(ctx, args, parleycli.Env{
			Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
			Getenv: func(k string) string {
				if k == "PARLEY_TOKEN" {
					return tok
				}
				return ""
			},
		})
		if code != 0 {
			t.Fatalf("parley %v: exit %d: %s", args, code, errOut.String())
		}
		return out.String()
	}
	cli("hello from the CLI\n", "chat", "--non-interactive", "--url", ws, "lobby")
	listener.waitFor(t, "the CLI's message", func() bool { return hasText(listener, "hello from the CLI") })
	if out := cli("", "history", "--url", ws, "lobby"); !strings.Contains(out, "hello from the CLI") {
		t.Errorf("parley history does not show the message:\n%s", out)
	}
}

// hasText reports whether a publication's JSON payload carries text.
func hasText(c *collector, text string) bool {
	for _, p := range c.publications() {
		if strings.Contains(string(p.Data), text) {
			return true
		}
	}
	return false
}

// oneOrder: a client on each replica publishes into one room at the same
// time; every client sees every publication, in one and the same order.
func (l *lifecycle) oneOrder(t *testing.T) {
	pods := l.readyPods(t)
	if len(pods) != 3 {
		t.Fatalf("%d ready pods, want 3", len(pods))
	}
	cols := make([]*collector, len(pods))
	for i := range pods {
		cols[i] = subscribe(t, connect(t, l.podWS(t, &pods[i]), l.token(t)), "replica"+fmt.Sprint(i), "room:order")
	}
	tl := newTally()
	var wg sync.WaitGroup
	for i, c := range cols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 16 a second: under the default limit of 20 per connection.
			for n := range 20 {
				tl.publish(c.sub, fmt.Sprintf("r%d-%d", i, n))
				time.Sleep(60 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	fence(t, tl, cols[0].sub, "fence-order", cols...)
	report(t, "one room on 3 replicas", tl, cols...)
	seq := func(c *collector) string {
		var b strings.Builder
		for _, p := range c.publications() {
			fmt.Fprintf(&b, "%d:%s ", p.Offset, p.Data)
		}
		return b.String()
	}
	want := seq(cols[0])
	for _, c := range cols[1:] {
		if got := seq(c); got != want {
			t.Errorf("%s saw another order than %s:\n%s\nvs\n%s", c.name, cols[0].name, got, want)
		}
	}
	if tl.acked.Load() != 61 {
		t.Errorf("%d of 61 publications acknowledged: %s", tl.acked.Load(), tl.errors())
	}
}

func (l *lifecycle) scale(t *testing.T) {
	before := l.readyPods(t)
	l.patch(t, func(cc *chatv1alpha1.ChatCluster) { cc.Spec.Replicas = ptr.To[int32](5) })
	start := time.Now()
	l.waitReady(t, l.name)
	l.settled(t, 5)
	up := time.Since(start)
	pods := l.readyPods(t)
	// A client on a new replica hears a client on an old one.
	var fresh *corev1.Pod
	for i := range pods {
		isNew := true
		for _, b := range before {
			if b.Name == pods[i].Name {
				isNew = false
			}
		}
		if isNew {
			fresh = &pods[i]
		}
	}
	if fresh == nil {
		t.Fatal("no new pod after scaling to 5")
	}
	listener := subscribe(t, connect(t, l.podWS(t, fresh), l.token(t)), "new-replica", "room:scale")
	speaker := subscribe(t, connect(t, l.podWS(t, &before[0]), l.token(t)), "old-replica", "room:scale")
	tl := newTally()
	for n := range 10 {
		tl.publish(speaker.sub, fmt.Sprintf("scale-%d", n))
	}
	fence(t, tl, speaker.sub, "fence-scale", listener, speaker)
	report(t, "scaled to 5", tl, listener, speaker)

	l.patch(t, func(cc *chatv1alpha1.ChatCluster) { cc.Spec.Replicas = ptr.To[int32](3) })
	start = time.Now()
	l.waitReady(t, l.name)
	l.settled(t, 3)
	fmt.Printf("e2e scale: 3→5 Ready in %s, 5→3 settled in %s\n", up.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
}

// rollingConfigChange: a real config change (the message size limit) rolls
// every pod while clients connected through the Service publish and listen;
// they reconnect to the new pods and recover what they missed.
func (l *lifecycle) rollingConfigChange(t *testing.T) {
	old := map[string]bool{}
	for _, p := range l.readyPods(t) {
		old[p.Name] = true
	}
	cols := l.clients(t, 5, "room:rollout")
	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tl.run(cols[0].sub, "a", 100*time.Millisecond, stop, &wg)
	tl.run(cols[1].sub, "b", 100*time.Millisecond, stop, &wg)
	time.Sleep(time.Second)
	l.patch(t, func(cc *chatv1alpha1.ChatCluster) { cc.Spec.Limits.MaxMessageBytes = 60000 })
	start := time.Now()
	eventually(t, 3*time.Minute, "every pod replaced", func() error {
		pods, err := env.Pods(l.ctx, l.ns, l.name)
		if err != nil {
			return err
		}
		for _, p := range pods {
			if old[p.Name] {
				return fmt.Errorf("old pod %s still there", p.Name)
			}
		}
		return nil
	})
	l.waitReady(t, l.name)
	l.settled(t, 3)
	took := time.Since(start)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	fence(t, tl, cols[0].sub, "fence-rollout", cols...)
	report(t, "rolling config change", tl, cols...)
	for _, c := range cols {
		if c.recoveries() == 0 {
			t.Errorf("%s never reconnected and recovered, though every pod was replaced", c.name)
		}
	}
	fmt.Printf("e2e rollout: 3 pods replaced in %s under load\n", took.Round(100*time.Millisecond))
}

// podsKilled: under load, one chat server is killed with SIGKILL (the
// container restarts in its pod) and another pod is force-deleted (SIGKILL,
// no grace; the Deployment replaces it). Clients reconnect and recover.
func (l *lifecycle) podsKilled(t *testing.T) {
	cols := l.clients(t, 6, "room:kill")
	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tl.run(cols[0].sub, "a", 100*time.Millisecond, stop, &wg)
	tl.run(cols[1].sub, "b", 100*time.Millisecond, stop, &wg)
	tl.run(cols[2].sub, "c", 100*time.Millisecond, stop, &wg)
	time.Sleep(time.Second)
	pods := l.readyPods(t)
	crashed, deleted := pods[0], pods[1]
	if err := env.KillContainer(l.ctx, l.ns, crashed.Name, naming.ContainerName, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the killed chat server restarted and Ready", func() error {
		p := &corev1.Pod{}
		if err := env.Client.Get(l.ctx, client.ObjectKeyFromObject(&crashed), p); err != nil {
			return err
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount >= 1 && cs.Ready {
				if term := cs.LastTerminationState.Terminated; term == nil || term.ExitCode != 137 {
					return fmt.Errorf("last termination %+v, want exit code 137 (SIGKILL)", cs.LastTerminationState)
				}
				return nil
			}
		}
		return errors.New("not restarted yet")
	})
	if err := env.Client.Delete(l.ctx, &deleted, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the force-deleted pod replaced", func() error {
		for _, p := range l.readyPods(t) {
			if p.Name == deleted.Name {
				return errors.New("the deleted pod is still listed")
			}
		}
		if n := len(l.readyPods(t)); n != 3 {
			return fmt.Errorf("%d ready pods", n)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	fence(t, tl, cols[0].sub, "fence-kill", cols...)
	report(t, "pods SIGKILLed under load", tl, cols...)
	reconnected := 0
	for _, c := range cols {
		reconnected += c.recoveries()
	}
	if reconnected == 0 {
		t.Error("no client had to reconnect: the killed pods held none of the 6 connections")
	}
}

// brokerLost: the chat servers' RabbitMQ connections go through a proxy the
// test cuts for a while under load. Nothing acknowledged may be lost:
// publishes are committed to history and acknowledged, or fail with an
// error; subscribers catch up once the broker is back. An outage every
// replica shares is not a reason to empty the Service (docs/guarantees.md,
// "Readiness"): the kubelet's readiness probes keep every pod Ready and in
// the Service's endpoints throughout, and the test watches that they do.
func (l *lifecycle) brokerLost(t *testing.T) {
	pods := l.readyPods(t)
	if len(pods) != 3 {
		t.Fatalf("%d ready pods, want 3", len(pods))
	}
	var cols []*collector
	for i := range pods {
		for j := range 2 {
			cols = append(cols, subscribe(t, connect(t, l.podWS(t, &pods[i]), l.token(t)), fmt.Sprintf("pod%d-c%d", i, j), "room:broker"))
		}
	}
	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tl.run(cols[0].sub, "a", 100*time.Millisecond, stop, &wg)
	tl.run(cols[2].sub, "b", 100*time.Millisecond, stop, &wg)
	time.Sleep(2 * time.Second)
	ackedBefore := tl.acked.Load()
	const outage = 20 * time.Second
	env.RabbitMQ.Proxy.Disable()
	// Readiness as the kubelet reports it and as the Service routes, sampled
	// through the outage and past a probe period after it.
	minReady, minEndpoints := 3, 3
	sample := func() {
		if n := len(l.readyPods(t)); n < minReady {
			minReady = n
		}
		if n, err := env.ReadyEndpoints(l.ctx, l.ns, l.name); err == nil && n < minEndpoints {
			minEndpoints = n
		}
	}
	// 20s: longer than the readiness probe's 3 failures × 5s, so a probe
	// that failed on the broker would have taken the pods out.
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		sample()
	}
	acked := tl.acked.Load()
	env.RabbitMQ.Proxy.Enable()
	returned := time.Now()
	l.waitReady(t, l.name)
	l.settled(t, 3)
	ready := time.Since(returned)
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		sample() // a probe that failed late would show now
	}
	if minReady != 3 || minEndpoints != 3 {
		t.Errorf("during the broker outage: as few as %d Ready pods and %d ready endpoints, want 3 and 3 (a shared broker outage must not empty the Service)", minReady, minEndpoints)
	}
	// Publishing resumes without a restart.
	eventually(t, 30*time.Second, "a publication acknowledged after the broker returned", func() error {
		if n := tl.acked.Load(); n <= acked {
			return fmt.Errorf("acknowledged still %d; errors so far %s", n, tl.errors())
		}
		return nil
	})
	resumed := time.Since(returned)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	fence(t, tl, cols[0].sub, "fence-broker", cols...)
	report(t, "broker lost for 20s under load", tl, cols...)
	fmt.Printf("e2e broker: %d publications acknowledged during the 20s outage; fewest Ready pods %d/3 and ready endpoints %d/3 during and after it; ChatCluster Ready %s after it returned, publishing acknowledged again in %s\n",
		acked-ackedBefore, minReady, minEndpoints, ready.Round(100*time.Millisecond), resumed.Round(100*time.Millisecond))
}

// deletion: deleting the ChatClusters removes their Kubernetes children; the
// one with policy Delete takes its RabbitMQ exchanges and its database with
// it, the one with Retain leaves them.
func (l *lifecycle) deletion(t *testing.T) {
	type external struct {
		vhost     string
		exchanges naming.Exchanges
		database  string
		role      string
	}
	ext := map[string]external{}
	for _, name := range []string{"chat", "keeper"} {
		s := &corev1.Secret{}
		if err := env.Client.Get(l.ctx, client.ObjectKey{Namespace: l.ns, Name: naming.DatabaseSecretName(name)}, s); err != nil {
			t.Fatalf("database Secret of %s: %v", name, err)
		}
		ext[name] = external{naming.BrokerVHost(l.ns, name), naming.ExchangeNames(l.ns, name), string(s.Data["database"]), string(s.Data["username"])}
	}
	keeper := ext["keeper"]
	t.Cleanup(func() { dropExternal(t, keeper.vhost, keeper.database, keeper.role) })
	for _, name := range []string{"chat", "keeper"} {
		cc := &chatv1alpha1.ChatCluster{ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: name}}
		if err := env.Client.Delete(l.ctx, cc); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	eventually(t, 2*time.Minute, "ChatClusters and their pods gone", func() error {
		list := &chatv1alpha1.ChatClusterList{}
		if err := env.Client.List(l.ctx, list, client.InNamespace(l.ns)); err != nil {
			return err
		}
		pods := &corev1.PodList{}
		if err := env.Client.List(l.ctx, pods, client.InNamespace(l.ns)); err != nil {
			return err
		}
		if len(list.Items)+len(pods.Items) > 0 {
			return fmt.Errorf("%d ChatClusters, %d pods left", len(list.Items), len(pods.Items))
		}
		return nil
	})
	eventually(t, time.Minute, "children garbage-collected", func() error {
		var left []string
		for _, name := range []string{"chat", "keeper"} {
			for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &corev1.ServiceAccount{}} {
				if err := env.Client.Get(l.ctx, client.ObjectKey{Namespace: l.ns, Name: name}, obj); !apierrors.IsNotFound(err) {
					left = append(left, fmt.Sprintf("%T %s", obj, name))
				}
			}
			for _, s := range []string{naming.ConfigMapName(name)} {
				if err := env.Client.Get(l.ctx, client.ObjectKey{Namespace: l.ns, Name: s}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
					left = append(left, "ConfigMap "+s)
				}
			}
			for _, s := range []string{naming.JWTSecretName(name), naming.APIKeySecretName(name)} {
				if err := env.Client.Get(l.ctx, client.ObjectKey{Namespace: l.ns, Name: s}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
					left = append(left, "Secret "+s)
				}
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left: %s", strings.Join(left, ", "))
		}
		return nil
	})
	took := time.Since(start)

	chat := ext["chat"]
	if exists := exchangesExist(t, chat.vhost, chat.exchanges); len(exists) > 0 {
		t.Errorf("policy Delete: exchanges %v still exist", exists)
	}
	if exists := exchangesExist(t, keeper.vhost, keeper.exchanges); len(exists) != 2 {
		t.Errorf("policy Retain: exchanges %v exist, want both of %+v", exists, keeper.exchanges)
	}
	if databaseExists(t, chat.database) || roleExists(t, chat.role) {
		t.Errorf("reclaimPolicy Delete: database %q or role %q still exists", chat.database, chat.role)
	}
	if !databaseExists(t, keeper.database) || !roleExists(t, keeper.role) {
		t.Errorf("reclaimPolicy Retain: database %q or role %q is gone", keeper.database, keeper.role)
	}
	fmt.Printf("e2e delete: both ChatClusters and their children gone in %s; Delete removed exchanges and database, Retain kept them\n", took.Round(100*time.Millisecond))
}

// exchangesExist lists which of the cluster's exchanges exist in its vhost
// (none when the vhost itself is gone), looked at as the backend's admin.
func exchangesExist(t *testing.T, vhost string, ex naming.Exchanges) []string {
	t.Helper()
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path, u.RawPath = "/"+vhost, "/"+url.PathEscape(vhost)
	conn, err := amqp.Dial(u.String())
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotAllowed {
		return nil // the vhost is gone
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var out []string
	for _, name := range []string{ex.Publications, ex.Control} {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		kind := "topic"
		if name == ex.Control {
			kind = "fanout"
		}
		if err := ch.ExchangeDeclarePassive(name, kind, true, false, false, false, nil); err == nil {
			out = append(out, name)
			ch.Close()
		}
	}
	sort.Strings(out)
	return out
}

func pgQueryBool(t *testing.T, q string, arg string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, q, arg).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func databaseExists(t *testing.T, name string) bool {
	return name != "" && pgQueryBool(t, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name)
}

func roleExists(t *testing.T, name string) bool {
	return name != "" && pgQueryBool(t, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name)
}

// dropExternal removes what a Retain policy left behind on the shared
// services: the cluster's vhost and user (named alike), its database and role.
func dropExternal(t *testing.T, vhost, database, role string) {
	if u, err := url.Parse(testenv.AMQPURL()); err == nil {
		pass, _ := u.User.Password()
		if rh, err := rabbithole.NewClient(testenv.AMQPManagementURL(), u.User.Username(), pass); err == nil {
			_, _ = rh.DeleteVhost(vhost)
			_, _ = rh.DeleteUser(vhost)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		t.Errorf("clean up database %s: %v", database, err)
		return
	}
	defer conn.Close(ctx)
	if database != "" {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{database}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", database, err)
		}
	}
	if role != "" {
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	}
}
