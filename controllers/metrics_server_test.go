package controllers_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/testenv"
)

// TestMetricsNeedAnAuthorizedToken runs the manager, under exactly the
// generated RBAC, with the metrics endpoint as cmd/manager serves it, and
// checks that /metrics turns away a request without a token (401), with a
// token the API server does not accept (refused: controller-runtime's filter
// answers 500 when the TokenReview fails) and with a ServiceAccount's
// token not bound to the metrics-reader ClusterRole (403), and serves the
// metrics to a ServiceAccount bound to config/rbac/metrics_reader_role.yaml.
func TestMetricsNeedAnAuthorizedToken(t *testing.T) {
	env, cfg := testenv.StartControlPlane(t)
	scheme := controllers.NewScheme()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	mgr, err := ctrl.NewManager(operatorUser(t, env, c), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(nil),
		Metrics:                controllers.MetricsServing{BindAddress: addr, Secure: true}.Options(),
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// The reader role as shipped, bound to one ServiceAccount of two.
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "metrics_reader_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	reader := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, reader); err != nil {
		t.Fatal(err)
	}
	s := &suite{env: env, c: c, requests: &requestLog{}}
	ns := s.namespace(t)
	s.create(t, reader)
	for _, sa := range []string{"prometheus", "nosy"} {
		s.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	}
	s.create(t, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-" + ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}},
	})
	cs := kubernetes.NewForConfigOrDie(cfg)
	token := func(sa string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token for %s: %v", sa, err)
		}
		return tr.Status.Token
	}

	scrape := func(bearer string) (int, string, error) {
		req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		// The certificate is self-signed (no --metrics-cert-path), as the
		// ServiceMonitor's insecureSkipVerify expects.
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	// The server starts with the manager: wait for it to answer at all.
	eventually(t, "the metrics server", func() error { _, _, err := scrape(""); return err })

	const refused = -1 // any status but 200
	for _, tc := range []struct {
		who   string
		token string
		want  int
	}{
		{"anonymous", "", http.StatusUnauthorized},
		{"a forged token", "not-a-token", refused},
		{"an unbound ServiceAccount", token("nosy"), http.StatusForbidden},
		{"the metrics-reader ServiceAccount", token("prometheus"), http.StatusOK},
	} {
		code, body, err := scrape(tc.token)
		if err != nil {
			t.Fatalf("%s: %v", tc.who, err)
		}
		if code != tc.want && (tc.want != refused || code == http.StatusOK) {
			t.Errorf("%s: status %d, want %d (%s)", tc.who, code, tc.want, firstLine(body))
		}
		if code == http.StatusOK && !strings.Contains(body, "controller_runtime_") {
			t.Errorf("%s: no controller-runtime metrics in the answer: %s", tc.who, firstLine(body))
		}
		if code != http.StatusOK && strings.Contains(body, "controller_runtime_") {
			t.Errorf("%s was refused yet got metrics", tc.who)
		}
	}

	// Plain HTTP is not served at all.
	resp, err := http.Get("http://" + addr + "/metrics")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served the metrics")
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return fmt.Sprintf("%.200s", line)
}
