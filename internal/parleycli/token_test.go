package parleycli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/internal/testenv"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func parseToken(t *testing.T, token string, key []byte) *auth.ConnectionClaims {
	t.Helper()
	var c auth.ConnectionClaims
	if _, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	return &c
}

// A token minted from the server's key file is accepted by the real server,
// grants included.
func TestTokenFromKeyFileIsAcceptedByTheServer(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	keyFile := writeFile(t, "hmac", string(servertest.Secret)+"\n")
	code, stdout, stderr := run(t, "", "token", "--key-file", keyFile, "--user", "carol", "--ttl", "10m",
		"--channel", "secret:plans", "--info", `{"name":"Carol"}`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	token := strings.TrimSpace(stdout)
	c := parseToken(t, token, servertest.Secret)
	if c.Subject != "carol" || len(c.Channels) != 1 || c.Channels[0] != "secret:plans" || string(c.Info) != `{"name":"Carol"}` {
		t.Errorf("claims %+v", c)
	}
	if left := time.Until(c.ExpiresAt.Time); left < 9*time.Minute || left > 10*time.Minute {
		t.Errorf("expires in %s, want about 10m", left)
	}
	// "secret" needs a grant: the minted one works against the real server.
	if code, _, stderr := run(t, "psst\n", "chat", "--url", srv.HTTP, "--token", token, "-n", "secret:plans"); code != 0 {
		t.Fatalf("chat with the minted token: %s", stderr)
	}
	if got := texts(apiHistory(t, srv, "secret:plans")); len(got) != 1 || got[0] != "psst" {
		t.Errorf("stored %v", got)
	}
}

func TestTokenBadInput(t *testing.T) {
	key := writeFile(t, "hmac", "0123456789abcdef0123456789abcdef")
	empty := writeFile(t, "empty", " \n")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no user", []string{"token", "--key-file", key}, 2, "--user is required"},
		{"no key", []string{"token", "--user", "a"}, 2, "give --key-file FILE or --cluster NAME"},
		{"two keys", []string{"token", "--user", "a", "--key-file", key, "--cluster", "c"}, 2, "not both"},
		{"missing key file", []string{"token", "--user", "a", "--key-file", "/nonexistent/key"}, 1, "no such file"},
		{"empty key file", []string{"token", "--user", "a", "--key-file", empty}, 1, "is empty"},
		{"info not an object", []string{"token", "--user", "a", "--key-file", key, "--info", "[1]"}, 2, "--info must be a JSON object"},
		{"ttl too long", []string{"token", "--user", "a", "--key-file", key, "--ttl", "1000h"}, 2, "--ttl must be between"},
		{"stray argument", []string{"token", "--user", "a", "--key-file", key, "extra"}, 2, "unexpected arguments"},
		{"unknown flag", []string{"token", "--frob"}, 2, "flag provided but not defined"},
		{"missing kubeconfig", []string{"token", "--user", "a", "--cluster", "c", "--kubeconfig", "/nonexistent/kubeconfig"}, 1, "kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(t, "", tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Errorf("exit %d (want %d), stdout %q, stderr %q (want %q)", code, tc.code, stdout, stderr, tc.want)
			}
		})
	}
}

var chatClusterGVR = schema.GroupVersionResource{Group: "chat.parley.io", Version: "v1alpha1", Resource: "chatclusters"}

// kubeconfigFor writes a kubeconfig for an envtest user, optionally with a
// default namespace in its context.
func kubeconfigFor(t *testing.T, env *envtest.Environment, user string, groups []string, namespace string) string {
	t.Helper()
	u, err := env.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if namespace != "" {
		cfg, err := clientcmd.Load(data)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Contexts[cfg.CurrentContext].Namespace = namespace
		if data, err = clientcmd.Write(*cfg); err != nil {
			t.Fatal(err)
		}
	}
	return writeFile(t, "kubeconfig-"+user, string(data))
}

// parley token --cluster reads the ChatCluster and its JWT Secret from a real
// API server with the kubeconfig's credentials, and the token it mints is
// accepted by a chat server configured like that ChatCluster.
func TestTokenFromChatClusterSecret(t *testing.T) {
	env, cfg := testenv.StartControlPlane(t)
	ctx := context.Background()
	kc := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ns := testenv.UniqueName(t, "cli")
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const name = "demo"
	cluster := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "chat.parley.io/v1alpha1", "kind": "ChatCluster",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"replicas": int64(1), "auth": map[string]any{"audience": "parley-test", "issuer": "https://issuer.test"}},
	}}
	if _, err := dyn.Resource(chatClusterGVR).Namespace(ns).Create(ctx, cluster, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ChatCluster: %v", err)
	}
	key := "generated-key-0123456789abcdef0123456789"
	if _, err := kc.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-jwt", Namespace: ns},
		Data:       map[string][]byte{"current": []byte(key), "previous": nil},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	admin := kubeconfigFor(t, env, "admin", []string{"system:masters"}, ns)

	t.Run("audience, issuer and key from the cluster", func(t *testing.T) {
		// The namespace comes from the kubeconfig's context.
		code, stdout, stderr := run(t, "", "token", "--cluster", name, "--kubeconfig", admin, "--user", "dave", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var out struct {
			Token, User string
			ExpiresAt   string `json:"expires_at"`
		}
		if err := json.Unmarshal([]byte(stdout), &out); err != nil || out.User != "dave" || out.ExpiresAt == "" {
			t.Fatalf("output %q: %v", stdout, err)
		}
		c := parseToken(t, out.Token, []byte(key))
		if c.Subject != "dave" || c.Issuer != "https://issuer.test" || len(c.Audience) != 1 || c.Audience[0] != "parley-test" {
			t.Errorf("claims %+v", c)
		}

		// A chat server set up like this ChatCluster accepts it, and refuses one for another audience.
		scfg := servertest.Config()
		scfg.Auth.HMACSecretFiles = []string{writeFile(t, "current", key+"\n")}
		scfg.Auth.Audience, scfg.Auth.Issuer = "parley-test", "https://issuer.test"
		srv := servertest.Start(t, scfg, nil, nil)
		if code, _, stderr := run(t, "hi from dave\n", "chat", "--url", srv.HTTP, "--token", out.Token, "-n", "lobby"); code != 0 {
			t.Fatalf("chat with the cluster token: %s", stderr)
		}
		_, other, _ := run(t, "", "token", "--cluster", name, "--kubeconfig", admin, "--user", "dave", "--audience", "elsewhere")
		if code, _, _ := run(t, "x\n", "chat", "--url", srv.HTTP, "--token", strings.TrimSpace(other), "-n", "lobby"); code != 1 {
			t.Errorf("a token for another audience was accepted (exit %d)", code)
		}
	})

	t.Run("secret named in status", func(t *testing.T) {
		if _, err := kc.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "byo-keys", Namespace: ns},
			Data:       map[string][]byte{"current": []byte("another-key-0123456789abcdef0123456789\n")},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		live, err := dyn.Resource(chatClusterGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(live.Object, "byo-keys", "status", "secrets", "jwt"); err != nil {
			t.Fatal(err)
		}
		if live, err = dyn.Resource(chatClusterGVR).Namespace(ns).UpdateStatus(ctx, live, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := run(t, "", "token", "--cluster", name, "--namespace", ns, "--kubeconfig", admin, "--user", "erin")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		parseToken(t, strings.TrimSpace(stdout), []byte("another-key-0123456789abcdef0123456789"))
		live.Object["status"] = map[string]any{}
		if _, err := dyn.Resource(chatClusterGVR).Namespace(ns).UpdateStatus(ctx, live, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("least privilege: only the Secret", func(t *testing.T) {
		if _, err := kc.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "jwt-reader", Namespace: ns},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{name + "-jwt"}, Verbs: []string{"get"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := kc.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "jwt-reader", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "jwt-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "reader"}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The API server's RBAC authorizer learns of the binding from its own
		// watch, a moment after the create returned: wait until it allows
		// the read, or the CLI's first request can still be forbidden.
		waitAllowed(ctx, t, kc, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "secrets", Name: name + "-jwt"}, "reader")
		reader := kubeconfigFor(t, env, "reader", nil, ns)
		code, stdout, stderr := run(t, "", "token", "--cluster", name, "--kubeconfig", reader, "--user", "frank", "--audience", "parley-test")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stderr, "warning: could not read ChatCluster") || !strings.Contains(stderr, "forbidden") {
			t.Errorf("no warning about the unreadable ChatCluster: %q", stderr)
		}
		c := parseToken(t, strings.TrimSpace(stdout), []byte(key))
		if c.Issuer != "" || c.Audience[0] != "parley-test" {
			t.Errorf("claims %+v", c)
		}
	})

	t.Run("clear errors", func(t *testing.T) {
		nobody := kubeconfigFor(t, env, "nobody", nil, ns)
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"no such cluster", []string{"--cluster", "nosuch", "--kubeconfig", admin}, "ChatCluster " + ns + "/nosuch not found"},
			{"no permission", []string{"--cluster", name, "--kubeconfig", nobody}, "read Secret " + ns + "/" + name + "-jwt: forbidden"},
			{"unknown context", []string{"--cluster", name, "--kubeconfig", admin, "--context", "nosuch"}, "kubeconfig"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, stdout, stderr := run(t, "", append([]string{"token", "--user", "x"}, tc.args...)...)
				if code != 1 || stdout != "" || !strings.Contains(stderr, tc.want) {
					t.Errorf("exit %d, stdout %q, stderr %q (want %q)", code, stdout, stderr, tc.want)
				}
			})
		}
	})
}

// waitAllowed waits, for at most ten seconds, until the API server's
// authorizer lets user do what attrs describe.
func waitAllowed(ctx context.Context, t *testing.T, kc kubernetes.Interface, attrs authorizationv1.ResourceAttributes, user string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		review, err := kc.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &attrs},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("access review for %s: %v", user, err)
		}
		if review.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still not allowed to %s %s %q after 10s: %s", user, attrs.Verb, attrs.Resource, attrs.Name, review.Status.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
