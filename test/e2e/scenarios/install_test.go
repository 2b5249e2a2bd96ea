package scenarios

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/testenv"
	"github.com/parley-chat/parley/test/e2e/framework"
)

// TestInstallWithKustomize installs the operator the other way the README
// offers, `kubectl apply -k config/default` with the image set as
// config/manager's kustomization says, runs a ChatCluster with it, and
// removes it with `kubectl delete -k`; the Helm install the other scenarios
// use is put back afterwards. (It runs first: files are taken in name order.)
func TestInstallWithKustomize(t *testing.T) {
	need(t)
	ctx := context.Background()
	if err := env.UninstallOperator(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.InstallOperator(context.Background()); err != nil {
			t.Errorf("reinstall the operator with Helm: %v", err)
		}
	})
	// A copy of config/ with the image set, as `kustomize edit set image` would.
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", filepath.Join(env.RepoRoot(), "config"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy config/: %v: %s", err, out)
	}
	kfile := filepath.Join(dir, "config", "manager", "kustomization.yaml")
	k, err := os.ReadFile(kfile)
	if err != nil {
		t.Fatal(err)
	}
	repo, tag, _ := strings.Cut(env.ParleyImage, ":")
	k = regexp.MustCompile(`(?m)^(\s+newName:).*$`).ReplaceAll(k, []byte("${1} "+repo))
	k = regexp.MustCompile(`(?m)^(\s+newTag:).*$`).ReplaceAll(k, []byte("${1} "+tag))
	if err := os.WriteFile(kfile, k, 0o644); err != nil {
		t.Fatal(err)
	}
	kdir := filepath.Join(dir, "config", "default")
	if out, err := env.RunKubectl(ctx, "apply", "--server-side", "--force-conflicts", "-k", kdir); err != nil {
		t.Fatalf("kubectl apply -k config/default: %v\n%s", err, out)
	}
	removed := false
	defer func() {
		if !removed {
			_, _ = env.RunKubectl(context.Background(), "delete", "--ignore-not-found", "--wait", "--timeout=2m", "-k", kdir)
		}
	}()
	if out, err := env.RunKubectl(ctx, "-n", framework.OperatorNamespace, "rollout", "status", "deployment/parley-controller-manager", "--timeout=3m"); err != nil {
		t.Fatalf("the kustomize-installed operator did not become available: %v\n%s\n%s", err, out, env.OperatorLog())
	}

	ns := testenv.UniqueName(t, "kustomize")
	if err := env.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	defer env.DeleteNamespace(context.Background(), ns)
	rmq, pg, err := env.Backends(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	defer env.DeleteBackends(context.Background(), ns)
	cc, err := env.LoadSample("chat_v1alpha1_chatcluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cc.Namespace = ns
	framework.WithBackends(cc, rmq, pg)
	if err := env.Client.Create(ctx, cc); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	start := time.Now()
	_, err = env.WaitReady(wctx, ns, cc.Name, func(line string) { t.Logf("[%5.1fs] %s", time.Since(start).Seconds(), line) })
	cancel()
	if err != nil {
		t.Fatalf("%v\n%s", err, env.OperatorLog())
	}
	ready := time.Since(start)
	l := &lifecycle{t: t, ctx: ctx, ns: ns, name: cc.Name}
	c := connect(t, l.serviceWS(t), "")
	c.Close()
	// The operator installed this way cleans up after its ChatCluster too.
	if err := env.Client.Delete(ctx, cc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the ChatCluster deleted by the kustomize-installed operator", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cc), &chatv1alpha1.ChatCluster{}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	// The backends go while their operator runs (it removes their finalizer);
	// deleting the CRDs with `delete -k` would otherwise wait on them.
	env.DeleteBackends(ctx, ns)
	eventually(t, time.Minute, "the ChatBackends deleted", func() error {
		list := &chatv1alpha1.ChatBackendList{}
		if err := env.Client.List(ctx, list); err != nil {
			return err
		}
		for _, b := range list.Items {
			if b.Name == rmq || b.Name == pg {
				return fmt.Errorf("%s still there (finalizers %v)", b.Name, b.Finalizers)
			}
		}
		return nil
	})
	if out, err := env.RunKubectl(ctx, "delete", "--wait", "--timeout=3m", "-k", kdir); err != nil {
		t.Fatalf("kubectl delete -k: %v\n%s", err, out)
	}
	removed = true
	fmt.Printf("e2e kustomize: operator from `kubectl apply -k config/default`, ChatCluster Ready in %s, removed with `kubectl delete -k`\n", ready.Round(100*time.Millisecond))
}
