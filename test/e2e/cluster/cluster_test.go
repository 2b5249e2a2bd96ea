package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/parley-chat/parley/internal/testenv"
	"github.com/parley-chat/parley/test/e2e/cluster"
	"github.com/parley-chat/parley/test/e2e/cluster/nodeagent"
)

const podserverImage = "example.test/podserver:test"

var (
	lc       *cluster.Cluster
	skipWhy  string
	repoRoot = testenv.RepoRoot()
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipWhy = "the local cluster's node agent needs root (network and mount namespaces per pod)"
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "parley-cluster-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin, err := cluster.BinDir(repoRoot, filepath.Join(tmp, "bin"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	podserver := filepath.Join(tmp, "podserver")
	build := exec.Command("go", "build", "-o", podserver, "./test/e2e/cluster/testdata/podserver")
	build.Dir, build.Env = repoRoot, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build podserver: %v\n%s", err, out)
		return 1
	}
	assets, err := cluster.DefaultAssets(repoRoot)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lc, err = cluster.Start(ctx, cluster.Options{
		Assets: assets, BinDir: bin, StateDir: filepath.Join(tmp, "state"),
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Images: nodeagent.ImageMap{
			Images: map[string]nodeagent.Image{podserverImage: {
				Files: map[string]string{"/podserver": podserver}, Entrypoint: []string{"/podserver"}, UID: 65532, GID: 65532,
			}},
			Fallback: nodeagent.ParleyImages{Repositories: nodeagent.DefaultRepositories, BinDir: bin},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start local cluster:", err)
		if lc != nil {
			cluster.DumpLogs(lc.StateDir, 3000)
			lc.Stop()
		}
		return 1
	}
	code := m.Run()
	if code != 0 {
		cluster.DumpLogs(lc.StateDir, 3000)
	}
	lc.Stop()
	return code
}

func need(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

func namespace(t *testing.T) string {
	t.Helper()
	ns := testenv.UniqueName(t, "lc")
	ctx := context.Background()
	if err := lc.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = lc.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return ns
}

// eventually polls f every 200ms until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s: %v", what, timeout, err)
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

func httpPost(url string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	return string(b), nil
}

func podserverContainer() corev1.Container {
	return corev1.Container{
		Name:  "app",
		Image: podserverImage,
		Env:   []corev1.EnvVar{{Name: "PORT", Value: "8080"}},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
			PeriodSeconds: 1, FailureThreshold: 1,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
			PeriodSeconds: 1, FailureThreshold: 2,
		},
	}
}

func waitPodReady(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 60*time.Second, "pod "+name+" Ready", func() error {
		p, err := lc.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("phase %s, conditions %v, containers %v", p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
	})
	return pod
}

// TestPodSeesItsSpec runs one pod and checks, from inside its container,
// everything the node agent promises: env from literals, $(VAR) expansion,
// Secrets, ConfigMaps and the downward API; Secret, ConfigMap, downward API
// and emptyDir volumes at their mount paths; the user and fsGroup; a
// read-only root filesystem; its hostname; and a Secret update reaching the
// mounted file.
func TestPodSeesItsSpec(t *testing.T) {
	need(t)
	ctx := context.Background()
	ns := namespace(t)
	if _, err := lc.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"}, Data: map[string][]byte{"password": []byte("s3cret"), "uri": []byte("amqp://x")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "conf"}, Data: map[string]string{"config.json": `{"a":1}`, "level": "debug"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := podserverContainer()
	c.Env = append(c.Env,
		corev1.EnvVar{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
		corev1.EnvVar{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}, Key: "level"}}},
		corev1.EnvVar{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		corev1.EnvVar{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		corev1.EnvVar{Name: "MEM_MB", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
		corev1.EnvVar{Name: "GREETING", Value: "hello $(POD_NAME) at $(LEVEL), $$(LEVEL) stays"},
	)
	c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "creds", MountPath: "/etc/parley/secrets"},
		{Name: "conf", MountPath: "/etc/parley/config.json", SubPath: "config.json"},
		{Name: "info", MountPath: "/etc/podinfo"},
		{Name: "scratch", MountPath: "/tmp"},
	}
	c.SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false)}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "inspect", Labels: map[string]string{"app": "inspect", "tier": "test"}},
		Spec: corev1.PodSpec{
			Containers:      []corev1.Container{c},
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), RunAsNonRoot: ptr.To(true), FSGroup: ptr.To[int64](2000)},
			Volumes: []corev1.Volume{
				{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: ptr.To[int32](0o400)}}},
				{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}},
				{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
				}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
	if _, err := lc.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodReady(t, ns, "inspect")
	if !strings.HasPrefix(p.Status.PodIP, "10.") {
		t.Errorf("pod IP %q, want a 10.x cluster address", p.Status.PodIP)
	}
	addr, err := lc.PodAddress(p, 8080)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		t.Helper()
		body, err := httpGet("http://" + addr + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return body
	}
	checks := []struct{ path, want string }{
		{"/hostname", "inspect"},
		{"/env?name=PASSWORD", "s3cret"},
		{"/env?name=LEVEL", "debug"},
		{"/env?name=POD_NAME", "inspect"},
		{"/env?name=POD_IP", p.Status.PodIP},
		{"/env?name=MEM_MB", "128"},
		{"/env?name=GREETING", "hello inspect at debug, $(LEVEL) stays"},
		{"/env?name=HOME", "/"},
		{"/file?path=/etc/parley/secrets/password", "s3cret"},
		{"/file?path=/etc/parley/config.json", `{"a":1}`},
		{"/file?path=/etc/podinfo/ns", ns},
		{"/file?path=/etc/podinfo/labels", "app=\"inspect\"\ntier=\"test\"\n"},
		{"/id", "uid=1000 gid=0 groups=[2000]"},
	}
	for _, c := range checks {
		if got := get(c.path); got != c.want {
			t.Errorf("GET %s = %q, want %q", c.path, got, c.want)
		}
	}
	if _, err := httpPost("http://" + addr + "/write?path=/tmp/x"); err != nil {
		t.Errorf("emptyDir /tmp not writable: %v", err)
	}
	if body, err := httpPost("http://" + addr + "/write?path=/x"); err == nil || !strings.Contains(body, "read-only file system") {
		t.Errorf("write to read-only root: err=%v body=%q, want read-only file system", err, body)
	}
	if body, err := httpPost("http://" + addr + "/write?path=/etc/parley/secrets/password"); err == nil {
		t.Errorf("write to a Secret volume succeeded: %q", body)
	}

	// A Secret change reaches the mounted file (not the env, as in Kubernetes).
	sec, err := lc.Client.CoreV1().Secrets(ns).Get(ctx, "creds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["password"] = []byte("rotated")
	if _, err := lc.Client.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "rotated secret in the mounted file", func() error {
		if got := get("/file?path=/etc/parley/secrets/password"); got != "rotated" {
			return fmt.Errorf("file holds %q", got)
		}
		return nil
	})
	if got := get("/env?name=PASSWORD"); got != "s3cret" {
		t.Errorf("env changed without a restart: %q", got)
	}
}

// TestProbesRestartsAndTermination: readiness drives Ready, a failing
// liveness probe and a crash restart the container, and deletion sends
// SIGTERM then SIGKILL after the grace period.
func TestProbesRestartsAndTermination(t *testing.T) {
	need(t)
	ctx := context.Background()
	ns := namespace(t)
	c := podserverContainer()
	c.Env = append(c.Env, corev1.EnvVar{Name: "EXIT_CODE", Value: "3"}, corev1.EnvVar{Name: "IGNORE_SIGTERM", Value: "1"})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probed"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}, TerminationGracePeriodSeconds: ptr.To[int64](2)},
	}
	if _, err := lc.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodReady(t, ns, "probed")
	addr, _ := lc.PodAddress(p, 8080)
	status := func() corev1.ContainerStatus {
		p, err := lc.Client.CoreV1().Pods(ns).Get(ctx, "probed", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			t.Fatalf("get pod: %v", err)
		}
		return p.Status.ContainerStatuses[0]
	}

	// Readiness failing → not Ready; back → Ready.
	if _, err := httpPost("http://" + addr + "/unready"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "container not ready", func() error {
		if status().Ready {
			return fmt.Errorf("still ready")
		}
		return nil
	})
	if _, err := httpPost("http://" + addr + "/ready"); err != nil {
		t.Fatal(err)
	}
	waitPodReady(t, ns, "probed")

	// A crash restarts the container with the exit code recorded.
	if _, err := httpPost("http://" + addr + "/exit"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "restart after crash", func() error {
		s := status()
		if s.RestartCount != 1 || s.LastTerminationState.Terminated == nil || !s.Ready {
			return fmt.Errorf("restarts=%d last=%+v ready=%v", s.RestartCount, s.LastTerminationState, s.Ready)
		}
		if code := s.LastTerminationState.Terminated.ExitCode; code != 3 {
			t.Errorf("last exit code %d, want 3", code)
		}
		return nil
	})

	// A failing liveness probe gets the container killed and restarted.
	if _, err := httpPost("http://" + addr + "/sick"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "restart after liveness failure", func() error {
		if s := status(); s.RestartCount != 2 || !s.Ready {
			return fmt.Errorf("restarts=%d ready=%v", s.RestartCount, s.Ready)
		}
		return nil
	})

	// SIGTERM is ignored by this container: SIGKILL comes after the 2s grace.
	start := time.Now()
	if err := lc.Client.CoreV1().Pods(ns).Delete(ctx, "probed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "pod gone", func() error {
		_, err := lc.Client.CoreV1().Pods(ns).Get(ctx, "probed", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("pod gone after %s, before its 2s grace period", took)
	}
	log, err := lc.PodLog(ns, "probed", "app")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "podserver: got SIGTERM") {
		t.Errorf("container log has no SIGTERM:\n%s", log)
	}
}

// TestUnknownImageFailsThePod: an image the node cannot run fails the pod
// with a reason that says so.
func TestUnknownImageFailsThePod(t *testing.T) {
	need(t)
	ctx := context.Background()
	ns := namespace(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
	}
	if _, err := lc.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "pod failed", func() error {
		p, err := lc.Client.CoreV1().Pods(ns).Get(ctx, "nginx", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %q", p.Status.Phase)
		}
		if p.Status.Reason != "UnsupportedImage" || !strings.Contains(p.Status.Message, `"nginx:1.27"`) {
			t.Errorf("reason %q message %q", p.Status.Reason, p.Status.Message)
		}
		return nil
	})
}

// TestDeploymentBehindTheServiceProxy: a Deployment becomes ReplicaSets and
// Pods (kube-controller-manager), its ready pods become EndpointSlice
// endpoints, and the service proxy spreads connections over them round-robin,
// skipping an unready one; deleting the Deployment cascades.
func TestDeploymentBehindTheServiceProxy(t *testing.T) {
	need(t)
	ctx := context.Background()
	ns := namespace(t)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{podserverContainer()}, TerminationGracePeriodSeconds: ptr.To[int64](5)},
			},
		},
	}
	if _, err := lc.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	if _, err := lc.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readyEndpoints := func(want int) {
		t.Helper()
		eventually(t, 60*time.Second, fmt.Sprintf("%d ready endpoints", want), func() error {
			if n := len(lc.Proxy.Endpoints(ns, "web", "http")); n != want {
				return fmt.Errorf("%d ready endpoints", n)
			}
			return nil
		})
	}
	readyEndpoints(3)
	slices, err := lc.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil || len(slices.Items) == 0 {
		t.Fatalf("endpoint slices: %v", err)
	}
	addr, err := lc.ServiceAddress(ctx, ns, "web", 80)
	if err != nil {
		t.Fatal(err)
	}
	hosts := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			h, err := httpGet("http://" + addr + "/hostname")
			if err != nil {
				t.Fatal(err)
			}
			seen[h]++
		}
		return seen
	}
	seen := hosts(6)
	if len(seen) != 3 {
		t.Fatalf("6 requests through the proxy reached %v, want each of 3 pods twice", seen)
	}
	for h, n := range seen {
		if n != 2 {
			t.Errorf("pod %s got %d of 6 requests, want 2 (round-robin)", h, n)
		}
	}

	// An unready pod stops getting connections.
	pods, err := lc.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	sick := pods.Items[0]
	sickAddr, _ := lc.PodAddress(&sick, 8080)
	if _, err := httpPost("http://" + sickAddr + "/unready"); err != nil {
		t.Fatal(err)
	}
	readyEndpoints(2)
	for h := range hosts(6) {
		if h == sick.Name {
			t.Errorf("unready pod %s still got a connection", h)
		}
	}

	// Scale, then delete the Deployment: the garbage collector removes the rest.
	scale, err := lc.Client.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 4
	if _, err := lc.Client.AppsV1().Deployments(ns).UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	readyEndpoints(3) // 4 pods, one of them unready
	if err := lc.Client.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "pods garbage-collected", func() error {
		pods, err := lc.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		rs, err := lc.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(pods.Items)+len(rs.Items) > 0 {
			return fmt.Errorf("%d pods, %d replica sets left", len(pods.Items), len(rs.Items))
		}
		return nil
	})
	if n := len(lc.Proxy.Endpoints(ns, "web", "http")); n != 0 {
		t.Errorf("%d endpoints left after the pods went", n)
	}
}
