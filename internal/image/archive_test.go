package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func TestArchiveIsAnOCILayoutDockerCanLoadToo(t *testing.T) {
	res := sharedStubImage(t)
	file := filepath.Join(t.TempDir(), "out", "parley.oci.tar")
	const ref = "registry.example:5000/team/parley:" + testVersion
	if err := WriteArchiveFile(file, res.Image, res.Platform, ref, testCreated); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".parley-image-*")); len(left) != 0 {
		t.Errorf("temporary files left beside the archive: %v", left)
	}
	a, err := OpenArchive(file)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	want, _ := res.Image.Digest()
	if got, err := a.Image.Digest(); err != nil || got != want {
		t.Fatalf("archive image digest %s (%v), built %s", got, err, want)
	}
	if a.Name != ref {
		t.Errorf("archive names the image %q, want %q", a.Name, ref)
	}

	// go-containerregistry's own layout reader agrees, and sees the tag and platform.
	idx, err := layout.ImageIndexFromPath(a.dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	d := im.Manifests[0]
	if d.Annotations[annotationRefName] != testVersion || d.Platform == nil || d.Platform.Architecture != res.Platform.Architecture {
		t.Errorf("index entry: %+v", d)
	}

	// manifest.json (docker load) names the same config and layer blobs.
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(readAll(t, filepath.Join(a.dir, "manifest.json")), &docker); err != nil {
		t.Fatal(err)
	}
	cfgName, _ := res.Image.ConfigName()
	layers, _ := res.Image.Layers()
	if len(docker) != 1 || docker[0].Config != "blobs/sha256/"+cfgName.Hex || len(docker[0].Layers) != len(layers) || len(docker[0].RepoTags) != 1 || docker[0].RepoTags[0] != ref {
		t.Fatalf("manifest.json = %+v", docker)
	}
	for i, l := range layers {
		h, _ := l.Digest()
		if docker[0].Layers[i] != "blobs/sha256/"+h.Hex {
			t.Errorf("manifest.json layer %d = %s, want %s", i, docker[0].Layers[i], h)
		}
		if _, err := os.Stat(filepath.Join(a.dir, docker[0].Layers[i])); err != nil {
			t.Error(err)
		}
	}
}

func TestArchiveNamesDockerHubImagesAsContainerdDoes(t *testing.T) {
	var buf bytes.Buffer
	res := sharedStubImage(t)
	if err := WriteArchive(&buf, res.Image, res.Platform, "parley:dev", testCreated); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"io.containerd.image.name":"docker.io/library/parley:dev"`)) {
		t.Error(`index.json does not name "parley:dev" docker.io/library/parley:dev`)
	}
	if err := WriteArchive(&buf, res.Image, res.Platform, "Not A Reference", testCreated); err == nil || !strings.Contains(err.Error(), `image reference "Not A Reference"`) {
		t.Errorf("bad reference: err = %v", err)
	}
}

func TestOpenArchiveRefusesEntriesOutsideIt(t *testing.T) {
	for _, name := range []string{"../escape", "/etc/escape", "blobs/../../escape"} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 1, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte("x"))
		tw.Close()
		file := filepath.Join(t.TempDir(), "evil.tar")
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenArchive(file); err == nil || !strings.Contains(err.Error(), "points outside the archive") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
