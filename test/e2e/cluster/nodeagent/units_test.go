package nodeagent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

func TestExpandFollowsKubernetes(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"plain":           "plain",
		"$(A)":            "1",
		"x$(A)y$(B)z":     "x1ytwoz",
		"$$(A)":           "$(A)",
		"$(MISSING)":      "$(MISSING)",
		"$(A":             "$(A",
		"cost $5":         "cost $5",
		"trailing $":      "trailing $",
		"--addr=:$(A)000": "--addr=:1000",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

type fakeObjects struct {
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
}

func (f fakeObjects) Secret(_, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func (f fakeObjects) ConfigMap(_, name string) (*corev1.ConfigMap, error) {
	if c, ok := f.configMaps[name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func TestContainerEnvResolvesSourcesInOrder(t *testing.T) {
	objs := fakeObjects{
		secrets:    map[string]*corev1.Secret{"s": {Data: map[string][]byte{"k": []byte("secret"), "X": []byte("from-secret")}}},
		configMaps: map[string]*corev1.ConfigMap{"c": {Data: map[string]string{"k": "config", "X": "from-config"}}},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"app": "a"}}, Status: corev1.PodStatus{PodIP: "10.1.2.3"}}
	c := &corev1.Container{
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}},
			{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}},
		},
		Env: []corev1.EnvVar{
			{Name: "X", Value: "literal wins over envFrom"},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k", Optional: ptr.To(true)}}},
			{Name: "MSG", Value: "$(APP)@$(IP) $(S_k)"},
		},
	}
	env, err := containerEnv(pod, c, objs, nodeFacts{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(env, "\n")
	want := "X=literal wins over envFrom\nk=config\nS_X=from-secret\nS_k=secret\nAPP=a\nIP=10.1.2.3\nMSG=a@10.1.2.3 secret"
	if got != want {
		t.Errorf("env:\n%s\nwant:\n%s", got, want)
	}

	c.Env = []corev1.EnvVar{{Name: "K", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "nope"}}}}
	if _, err := containerEnv(pod, c, objs, nodeFacts{}); err == nil || !strings.Contains(err.Error(), "couldn't find key nope in Secret ns/s") {
		t.Errorf("missing key: err = %v", err)
	}
}

func TestWriteAtomicSwapsWholeVersions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	v1 := map[string]file{"a": {data: []byte("1"), mode: 0o644}, "sub/b": {data: []byte("b1"), mode: 0o400}}
	if err := writeAtomic(dir, v1, nil); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if read("a") != "1" || read("sub/b") != "b1" {
		t.Fatalf("v1: a=%q sub/b=%q", read("a"), read("sub/b"))
	}
	if st, _ := os.Stat(filepath.Join(dir, "sub/b")); st.Mode().Perm() != 0o400 {
		t.Errorf("mode %v, want 0400", st.Mode().Perm())
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	// Unchanged payload: no new version.
	if err := writeAtomic(dir, v1, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, "..data")); again != first {
		t.Errorf("an unchanged payload was rewritten (%s → %s)", first, again)
	}
	// A new version replaces the whole set: a dropped key disappears.
	if err := writeAtomic(dir, map[string]file{"a": {data: []byte("2"), mode: 0o644}}, nil); err != nil {
		t.Fatal(err)
	}
	if read("a") != "2" {
		t.Errorf("a = %q after update", read("a"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("dropped key still visible: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old version directory %s kept", first)
	}
	if err := writeAtomic(dir, map[string]file{"../escape": {data: []byte("x")}}, nil); err == nil {
		t.Error("a path leaving the volume was accepted")
	}
}

func TestParleyImagesMirrorTheDockerfile(t *testing.T) {
	bin := t.TempDir()
	for _, n := range []string{"manager", "chatserver", "chatbench"} {
		if err := os.WriteFile(filepath.Join(bin, n), []byte("#!"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := ParleyImages{Repositories: DefaultRepositories, BinDir: bin}
	for _, ref := range []string{"ghcr.io/parley-chat/parley:latest", "ghcr.io/parley-chat/parley@sha256:abc", "ghcr.io/parley-chat/parley:v1@sha256:abc", "ghcr.io/parley-chat/parley"} {
		img, err := p.Resolve(ref)
		if err != nil {
			t.Errorf("%s: %v", ref, err)
			continue
		}
		if len(img.Files) != 2 || img.Files["/chatserver"] == "" || img.Files["/manager"] == "" || img.Entrypoint[0] != "/manager" || img.UID != 65532 {
			t.Errorf("%s: %+v", ref, img)
		}
	}
	for _, ref := range []string{"nginx:1.27", "ghcr.io/parley-chatx/parley:1", "localhost:5000/parley-chat/parley:1"} {
		if _, err := p.Resolve(ref); err == nil || !strings.Contains(err.Error(), "not one of Parley's") {
			t.Errorf("%s: err = %v", ref, err)
		}
	}
}
