package image

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// startRegistry runs go-containerregistry's in-memory registry behind HTTP
// basic auth, as a private registry would demand.
func startRegistry(t *testing.T, user, password string) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="parley-test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// dockerConfig points the Docker keychain at a config.json holding creds.
func dockerConfig(t *testing.T, host, user, password string) {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

func TestPushUsesDockerCredentialsAndTheRegistryServesTheSameImage(t *testing.T) {
	res := sharedStubImage(t)
	archive := filepath.Join(t.TempDir(), "parley.oci.tar")
	if err := WriteArchiveFile(archive, res.Image, res.Platform, "ghcr.io/parley-chat/parley:"+testVersion, testCreated); err != nil {
		t.Fatal(err)
	}
	host := startRegistry(t, "parley", "s3cret")
	ref, err := name.ParseReference(host + "/team/parley:" + testVersion)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Without credentials the registry refuses the push.
	dockerConfig(t, "other.example", "x", "y")
	if _, err := Push(ctx, archive, ref); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("push without credentials: err = %v", err)
	}

	dockerConfig(t, host, "parley", "s3cret")
	digest, err := Push(ctx, archive, ref)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := res.Image.Digest()
	if digest != want {
		t.Errorf("Push reports %s, the image is %s", digest, want)
	}

	// Pull it back, independently of Push's own check.
	pulled, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: "parley", Password: "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pulled.Digest(); err != nil || got != want {
		t.Fatalf("pulled digest %s (%v), pushed %s", got, err, want)
	}
	gotCfg, _ := pulled.RawConfigFile()
	wantCfg, _ := res.Image.RawConfigFile()
	if !bytes.Equal(gotCfg, wantCfg) {
		t.Error("the pulled config differs from the built one")
	}
	fs := flatten(t, pulled)
	if !bytes.Equal(fs["/manager"].data, readAll(t, stub(t, "manager"))) {
		t.Error("the pulled image's /manager is not the manager that was built in")
	}

	// A second push of the same archive is a no-op that still succeeds.
	if _, err := Push(ctx, archive, ref); err != nil {
		t.Errorf("second push: %v", err)
	}
}

func TestPushNamesABadArchive(t *testing.T) {
	ref, _ := name.ParseReference("127.0.0.1:1/parley:x")
	missing := filepath.Join(t.TempDir(), "missing.oci.tar")
	if _, err := Push(context.Background(), missing, ref); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing archive: err = %v", err)
	}
	notLayout := filepath.Join(t.TempDir(), "empty.tar")
	if err := os.WriteFile(notLayout, make([]byte, 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Push(context.Background(), notLayout, ref); err == nil || !strings.Contains(err.Error(), "is not an OCI image layout") {
		t.Errorf("empty tar: err = %v", err)
	}
}
