package nodeagent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// file is one file of a volume's payload.
type file struct {
	data []byte
	mode os.FileMode
}

// volumeWriter keeps a pod's volumes on disk under dir/<volume name>:
// Secret, ConfigMap, downward API and projected volumes are rewritten
// atomically when their sources change (the kubelet's "..data" symlink
// swap, so a reader never sees half an update); emptyDir is a plain directory.
type volumeWriter struct {
	dir  string
	pod  *corev1.Pod
	objs objects
	cs   kubernetes.Interface
	node nodeFacts

	mu     sync.Mutex
	tokens map[string]cachedToken // by volume/path
}

type cachedToken struct {
	token   string
	refresh time.Time
}

// HostPath is where volume name lives on the host.
func (w *volumeWriter) HostPath(name string) string { return filepath.Join(w.dir, name) }

// SyncAll writes every volume of the pod; the error names the first volume
// that could not be set up (a missing Secret, an unsupported volume type).
func (w *volumeWriter) SyncAll(ctx context.Context) error {
	for i := range w.pod.Spec.Volumes {
		v := &w.pod.Spec.Volumes[i]
		if err := w.sync(ctx, v); err != nil {
			return fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
		}
	}
	return nil
}

func (w *volumeWriter) sync(ctx context.Context, v *corev1.Volume) error {
	dir := w.HostPath(v.Name)
	if v.EmptyDir != nil {
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		return os.Chmod(dir, 0o777) // world-writable like the kubelet's, not subject to umask
	}
	payload, err := w.payload(ctx, v)
	if err != nil {
		return err
	}
	return writeAtomic(dir, payload, w.pod.Spec.SecurityContext)
}

func (w *volumeWriter) payload(ctx context.Context, v *corev1.Volume) (map[string]file, error) {
	switch {
	case v.Secret != nil:
		return w.secretPayload(v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
	case v.ConfigMap != nil:
		return w.configMapPayload(v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
	case v.DownwardAPI != nil:
		return w.downwardPayload(v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
	case v.Projected != nil:
		out := map[string]file{}
		for i, src := range v.Projected.Sources {
			var part map[string]file
			var err error
			switch {
			case src.Secret != nil:
				part, err = w.secretPayload(src.Secret.Name, src.Secret.Items, v.Projected.DefaultMode, src.Secret.Optional)
			case src.ConfigMap != nil:
				part, err = w.configMapPayload(src.ConfigMap.Name, src.ConfigMap.Items, v.Projected.DefaultMode, src.ConfigMap.Optional)
			case src.DownwardAPI != nil:
				part, err = w.downwardPayload(src.DownwardAPI.Items, v.Projected.DefaultMode)
			case src.ServiceAccountToken != nil:
				part, err = w.tokenPayload(ctx, v.Name, src.ServiceAccountToken, v.Projected.DefaultMode)
			default:
				err = fmt.Errorf("projected source %d: only secret, configMap, downwardAPI and serviceAccountToken are supported by the local node agent", i)
			}
			if err != nil {
				return nil, err
			}
			for k, f := range part {
				out[k] = f
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("volume type not supported by the local node agent (supported: secret, configMap, downwardAPI, projected, emptyDir)")
}

func mode(m *int32, def *int32) os.FileMode {
	switch {
	case m != nil:
		return os.FileMode(*m)
	case def != nil:
		return os.FileMode(*def)
	}
	return 0o644
}

func (w *volumeWriter) secretPayload(name string, items []corev1.KeyToPath, defMode *int32, optional *bool) (map[string]file, error) {
	s, err := w.objs.Secret(w.pod.Namespace, name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional != nil && *optional {
			return map[string]file{}, nil
		}
		return nil, fmt.Errorf("secret %q not found", name)
	}
	return keyPayload("Secret", name, s.Data, items, defMode, optional)
}

func (w *volumeWriter) configMapPayload(name string, items []corev1.KeyToPath, defMode *int32, optional *bool) (map[string]file, error) {
	cm, err := w.objs.ConfigMap(w.pod.Namespace, name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional != nil && *optional {
			return map[string]file{}, nil
		}
		return nil, fmt.Errorf("configmap %q not found", name)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyPayload("ConfigMap", name, data, items, defMode, optional)
}

func keyPayload(kind, name string, data map[string][]byte, items []corev1.KeyToPath, defMode *int32, optional *bool) (map[string]file, error) {
	out := map[string]file{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = file{data: v, mode: mode(nil, defMode)}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, fmt.Errorf("configured key %q not found in %s %q", it.Key, kind, name)
		}
		out[it.Path] = file{data: v, mode: mode(it.Mode, defMode)}
	}
	return out, nil
}

func (w *volumeWriter) downwardPayload(items []corev1.DownwardAPIVolumeFile, defMode *int32) (map[string]file, error) {
	out := map[string]file{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = podField(w.pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := w.containerNamed(it.ResourceFieldRef.ContainerName)
			if c == nil {
				return nil, fmt.Errorf("resourceFieldRef: no container %q", it.ResourceFieldRef.ContainerName)
			}
			v, err = resourceField(c, it.ResourceFieldRef, w.node)
		}
		if err != nil {
			return nil, err
		}
		out[it.Path] = file{data: []byte(v), mode: mode(it.Mode, defMode)}
	}
	return out, nil
}

func (w *volumeWriter) containerNamed(name string) *corev1.Container {
	for i := range w.pod.Spec.Containers {
		if w.pod.Spec.Containers[i].Name == name {
			return &w.pod.Spec.Containers[i]
		}
	}
	return nil
}

// tokenPayload asks the API server for a bound service account token and
// refreshes it at 80% of its lifetime, as the kubelet does.
func (w *volumeWriter) tokenPayload(ctx context.Context, volume string, src *corev1.ServiceAccountTokenProjection, defMode *int32) (map[string]file, error) {
	key := volume + "/" + src.Path
	w.mu.Lock()
	if w.tokens == nil {
		w.tokens = map[string]cachedToken{}
	}
	cached, ok := w.tokens[key]
	w.mu.Unlock()
	if !ok || time.Now().After(cached.refresh) {
		ttl := int64(3600)
		if src.ExpirationSeconds != nil {
			ttl = *src.ExpirationSeconds
		}
		var aud []string
		if src.Audience != "" {
			aud = []string{src.Audience}
		}
		sa := w.pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		tr, err := w.cs.CoreV1().ServiceAccounts(w.pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{
				Audiences: aud, ExpirationSeconds: &ttl,
				BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: w.pod.Name, UID: w.pod.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("service account token for %q: %w", sa, err)
		}
		life := time.Until(tr.Status.ExpirationTimestamp.Time)
		cached = cachedToken{token: tr.Status.Token, refresh: time.Now().Add(life * 8 / 10)}
		w.mu.Lock()
		w.tokens[key] = cached
		w.mu.Unlock()
	}
	return map[string]file{src.Path: {data: []byte(cached.token), mode: mode(nil, defMode)}}, nil
}

// writeAtomic writes payload under dir the way the kubelet's AtomicWriter
// does: the files go into a fresh timestamped directory, "..data" is switched
// to it with one rename, and each top-level name is a symlink through
// "..data". Nothing is written when the payload is unchanged.
func writeAtomic(dir string, payload map[string]file, psc *corev1.PodSecurityContext) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var fsGroup *int64
	if psc != nil {
		fsGroup = psc.FSGroup
	}
	if fsGroup != nil {
		if err := os.Chown(dir, -1, int(*fsGroup)); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o755|os.ModeSetgid); err != nil {
			return err
		}
	}
	dataLink := filepath.Join(dir, "..data")
	if current, err := os.Readlink(dataLink); err == nil && sameContent(filepath.Join(dir, current), payload, fsGroup != nil) {
		return nil
	}
	ts := "..parley_" + time.Now().UTC().Format("2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, ts)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		return err
	}
	for _, p := range sortedKeys(payload) {
		if err := validRelative(p); err != nil {
			return err
		}
		f := payload[p]
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		m := f.mode
		if fsGroup != nil {
			m |= 0o440 // read-only volumes: the kubelet grants the fsGroup read
		}
		if err := os.WriteFile(full, f.data, m); err != nil {
			return err
		}
		if err := os.Chmod(full, m); err != nil { // WriteFile is subject to umask
			return err
		}
		if fsGroup != nil {
			if err := os.Chown(full, -1, int(*fsGroup)); err != nil {
				return err
			}
		}
	}
	old, _ := os.Readlink(dataLink)
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return err
	}
	// User-visible names: one symlink per top-level entry.
	top := map[string]bool{}
	for p := range payload {
		top[strings.SplitN(p, "/", 2)[0]] = true
	}
	for name := range top {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") && !top[e.Name()] {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	if old != "" && old != ts {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

func validRelative(p string) error {
	if p == "" || filepath.IsAbs(p) || strings.HasPrefix(p, "..") || strings.Contains(p, "/../") || filepath.Clean(p) != p {
		return fmt.Errorf("invalid volume path %q", p)
	}
	return nil
}

// sameContent reports whether dir holds exactly payload.
func sameContent(dir string, payload map[string]file, group bool) bool {
	var found []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		found = append(found, rel)
		return nil
	})
	if err != nil || len(found) != len(payload) {
		return false
	}
	sort.Strings(found)
	for _, rel := range found {
		f, ok := payload[rel]
		if !ok {
			return false
		}
		st, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			return false
		}
		m := f.mode
		if group {
			m |= 0o440
		}
		if st.Mode().Perm() != m.Perm() {
			return false
		}
		data, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil || !bytes.Equal(data, f.data) {
			return false
		}
	}
	return true
}
