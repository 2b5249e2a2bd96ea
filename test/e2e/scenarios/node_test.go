package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/internal/testenv"
	"github.com/parley-chat/parley/test/e2e/cluster"
	"github.com/parley-chat/parley/test/e2e/framework"
)

// TestOnARealNode checks what only a real node can show: Pod Security
// enforced by the API server, probes run by the kubelet (a frozen chat
// server leaves the Service and is restarted), evictions held by the
// PodDisruptionBudget, and a HorizontalPodAutoscaler acting on CPU use
// measured from cgroups by metrics-server.
func TestOnARealNode(t *testing.T) {
	need(t)
	ctx := context.Background()
	ns := testenv.UniqueName(t, "node")
	if err := env.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.DeleteNamespace(context.Background(), ns) })
	rmq, pg, err := env.Backends(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.DeleteBackends(context.Background(), ns) })
	create := func(t *testing.T, name string, replicas int32, change func(*chatv1alpha1.ChatCluster)) {
		t.Helper()
		cc, err := env.LoadSample("chat_v1alpha1_chatcluster.yaml")
		if err != nil {
			t.Fatal(err)
		}
		cc.Name, cc.Namespace, cc.Spec.Replicas = name, ns, &replicas
		framework.WithBackends(cc, rmq, pg)
		cc.Spec.Resources = &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		}
		if change != nil {
			change(cc)
		}
		if err := env.Client.Create(ctx, cc); err != nil {
			t.Fatalf("create ChatCluster %s: %v", name, err)
		}
	}
	create(t, "kube", 3, nil)
	create(t, "auto", 1, func(cc *chatv1alpha1.ChatCluster) {
		cc.Spec.Replicas = nil
		// An idle chat server uses about 10m of CPU: well below the target.
		cc.Spec.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("100m")
		cc.Spec.Autoscaling = &chatv1alpha1.AutoscalingSpec{MinReplicas: ptr.To[int32](1), MaxReplicas: 2, TargetCPUUtilizationPercentage: ptr.To[int32](40),
			// The operator's HPA behaviour, not the controller-manager's
			// flag, decides the scale-down window (default 5m).
			ScaleDownStabilizationWindow: &metav1.Duration{Duration: 30 * time.Second}}
	})
	for _, name := range []string{"kube", "auto"} {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		start := time.Now()
		_, err := env.WaitReady(wctx, ns, name, func(line string) { t.Logf("[%5.1fs] %s: %s", time.Since(start).Seconds(), name, line) })
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	l := &lifecycle{t: t, ctx: ctx, ns: ns, name: "kube"}

	t.Run("Pod Security restricted is enforced", func(t *testing.T) {
		// The chat servers were admitted; a pod that leaves its security
		// context to the defaults (may run as root, keeps capabilities, no
		// seccomp profile) is not.
		bad := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "unrestricted", Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: env.ParleyImage}}},
		}
		err := env.Client.Create(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) {
			t.Fatalf("creating an unrestricted pod in %s: %v, want a PodSecurity refusal", ns, err)
		}
		pods := l.readyPods(t)
		for _, p := range pods {
			for _, c := range p.Status.ContainerStatuses {
				if !strings.Contains(c.ImageID, "sha256:") {
					t.Errorf("pod %s container %s: image ID %q, want a digest containerd resolved", p.Name, c.Name, c.ImageID)
				}
			}
		}
	})

	t.Run("kubelet probes: a frozen chat server leaves the Service and is restarted", func(t *testing.T) {
		l.settled(t, 3)
		victim := l.readyPods(t)[0]
		restarts := restartCount(&victim)
		if err := env.KillContainer(ctx, ns, victim.Name, naming.ContainerName, "SIGSTOP"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		eventually(t, time.Minute, "the frozen pod not Ready (readiness probe) and out of the Service", func() error {
			eps, err := env.ReadyEndpoints(ctx, ns, "kube")
			if err != nil {
				return err
			}
			if ready := len(l.readyPods(t)); ready != 2 || eps != 2 {
				return fmt.Errorf("%d ready pods, %d ready endpoints", ready, eps)
			}
			return nil
		})
		unready := time.Since(start)
		eventually(t, 3*time.Minute, "the frozen chat server restarted by the liveness probe and Ready again", func() error {
			p := &corev1.Pod{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(&victim), p); err != nil {
				return err
			}
			if restartCount(p) <= restarts {
				return errors.New("not restarted yet")
			}
			if !podReady(p) {
				return errors.New("restarted, not Ready yet")
			}
			return nil
		})
		fmt.Printf("e2e node: a SIGSTOPped chat server was unready after %s and restarted by its liveness probe, Ready again after %s\n",
			unready.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
		l.settled(t, 3)
	})

	t.Run("draining respects the PodDisruptionBudget", func(t *testing.T) {
		l.settled(t, 3)
		if _, err := env.RunKubectl(ctx, "cordon", cluster.NodeName); err != nil {
			t.Fatal(err)
		}
		uncordon := func() { _, _ = env.RunKubectl(context.Background(), "uncordon", cluster.NodeName) }
		defer uncordon()
		pods := l.readyPods(t)
		evict := func(p corev1.Pod) error {
			return env.Client.SubResource("eviction").Create(ctx, &p, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
		}
		if err := evict(pods[0]); err != nil {
			t.Fatalf("first eviction: %v", err)
		}
		// One pod is gone and its replacement cannot be scheduled on the
		// cordoned node: the budget (maxUnavailable 1) allows no second eviction.
		eventually(t, wait, "the budget spent", func() error {
			err := evict(pods[1])
			if err == nil {
				t.Fatalf("a second eviction was allowed while %s was gone", pods[0].Name)
			}
			if !apierrors.IsTooManyRequests(err) {
				return fmt.Errorf("second eviction: %v (want 429 from the PodDisruptionBudget)", err)
			}
			return nil
		})
		pending := 0
		all, _ := env.Pods(ctx, ns, "kube")
		for _, p := range all {
			if p.Status.Phase == corev1.PodPending {
				pending++
			}
		}
		if pending != 1 {
			t.Errorf("%d pending pods on the cordoned node, want 1 (the evicted pod's replacement)", pending)
		}
		uncordon()
		l.settled(t, 3)
		// The disruption controller recounts the budget from the pods.
		eventually(t, wait, "an eviction allowed again once the replacement is Ready", func() error { return evict(pods[1]) })
		l.settled(t, 3)
		fmt.Println("e2e node: drain evicted one chat server, the PodDisruptionBudget refused the second until the replacement was Ready")
	})

	t.Run("a chat server over its memory limit is OOM-killed by the kernel", func(t *testing.T) {
		// 8Mi is below what a chat server needs to start: the cgroup's limit
		// is hit and the kernel kills it, the kubelet reports OOMKilled and
		// restarts it (CrashLoopBackOff), and the ChatCluster is not Ready.
		create(t, "oom", 1, func(cc *chatv1alpha1.ChatCluster) {
			cc.Spec.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("8Mi")
			cc.Spec.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("8Mi")
		})
		start := time.Now()
		var reason string
		eventually(t, 2*time.Minute, "the chat server OOM-killed", func() error {
			pods, err := env.Pods(ctx, ns, "oom")
			if err != nil {
				return err
			}
			for _, p := range pods {
				for _, c := range p.Status.ContainerStatuses {
					for _, term := range []*corev1.ContainerStateTerminated{c.State.Terminated, c.LastTerminationState.Terminated} {
						if term != nil && term.Reason == "OOMKilled" {
							reason = fmt.Sprintf("%s (exit %d), restarts %d", term.Reason, term.ExitCode, c.RestartCount)
							return nil
						}
					}
				}
			}
			return fmt.Errorf("no OOMKilled container yet: %d pods", len(pods))
		})
		cc := &chatv1alpha1.ChatCluster{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "oom"}, cc); err != nil {
			t.Fatal(err)
		}
		for _, c := range cc.Status.Conditions {
			if c.Type == "Ready" && c.Status == metav1.ConditionTrue {
				t.Errorf("ChatCluster oom is Ready though its only chat server is OOM-killed")
			}
		}
		fmt.Printf("e2e node: a chat server limited to 8Mi was %s after %s\n", reason, time.Since(start).Round(100*time.Millisecond))
		_ = env.Client.Delete(ctx, cc)
	})

	t.Run("the HorizontalPodAutoscaler scales on CPU measured by metrics-server", func(t *testing.T) {
		a := &lifecycle{t: t, ctx: ctx, ns: ns, name: "auto"}
		hpa := &autoscalingv2.HorizontalPodAutoscaler{}
		key := client.ObjectKey{Namespace: ns, Name: "auto"}
		eventually(t, 2*time.Minute, "the HPA reads the idle chat server's CPU, below its target, and wants 1 replica", func() error {
			if err := env.Client.Get(ctx, key, hpa); err != nil {
				return err
			}
			for _, m := range hpa.Status.CurrentMetrics {
				if m.Resource != nil && m.Resource.Name == corev1.ResourceCPU && m.Resource.Current.AverageUtilization != nil {
					if hpa.Status.DesiredReplicas != 1 || *m.Resource.Current.AverageUtilization >= 40 {
						return fmt.Errorf("idle: desired %d at %s", hpa.Status.DesiredReplicas, cpuMetric(hpa))
					}
					return nil
				}
			}
			return fmt.Errorf("no CPU metric yet: %+v", hpa.Status.Conditions)
		})
		idle := cpuMetric(hpa)
		// Load: publishers as fast as acknowledgements come back.
		cols := a.clients(t, 4, "room:load")
		tl := newTally()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, c := range cols {
			tl.run(c.sub, fmt.Sprintf("p%d", i), 0, stop, &wg)
		}
		start := time.Now()
		eventually(t, 3*time.Minute, "the HPA scaled the chat servers to 2", func() error {
			if err := env.Client.Get(ctx, key, hpa); err != nil {
				return err
			}
			if hpa.Status.DesiredReplicas < 2 {
				return fmt.Errorf("desired %d, current metrics %s", hpa.Status.DesiredReplicas, cpuMetric(hpa))
			}
			return nil
		})
		scaled := time.Since(start)
		close(stop)
		wg.Wait()
		a.settled(t, 2)
		up := time.Since(start)
		// Load off: after the stabilisation window (30s here) the HPA scales
		// down; a slow publisher keeps going while a pod drains away.
		slow := make(chan struct{})
		tl.run(cols[0].sub, "slow", 200*time.Millisecond, slow, &wg)
		down := time.Now()
		eventually(t, 3*time.Minute, "the HPA scaled back to 1", func() error {
			if err := env.Client.Get(ctx, key, hpa); err != nil {
				return err
			}
			if hpa.Status.DesiredReplicas != 1 {
				return fmt.Errorf("desired %d at %s", hpa.Status.DesiredReplicas, cpuMetric(hpa))
			}
			return nil
		})
		a.settled(t, 1)
		scaledDown := time.Since(down)
		time.Sleep(time.Second)
		close(slow)
		wg.Wait()
		fence(t, tl, cols[0].sub, "fence-hpa", cols...)
		report(t, "autoscaled 1→2→1 under load", tl, cols...)
		fmt.Printf("e2e node: idle at %s the HPA kept 1 chat server; under load it asked for 2 after %s, 2 Ready after %s; load off, back to 1 after %s (stabilisation window 30s)\n",
			idle, scaled.Round(time.Second), up.Round(time.Second), scaledDown.Round(time.Second))
	})
}

func restartCount(p *corev1.Pod) int32 {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == naming.ContainerName {
			return c.RestartCount
		}
	}
	return 0
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func cpuMetric(h *autoscalingv2.HorizontalPodAutoscaler) string {
	for _, m := range h.Status.CurrentMetrics {
		if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
			return fmt.Sprintf("%d%% of request", *m.Resource.Current.AverageUtilization)
		}
	}
	return "unknown"
}
