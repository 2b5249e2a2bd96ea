package image

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The annotations naming the image in the archive's index.json: containerd
// (`ctr images import`) reads the full name from the first, the OCI spec's
// tools (skopeo, podman) read the tag from the second.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// WriteArchive writes img as an OCI image layout (oci-layout, index.json,
// blobs/sha256/…) in a tar stream. ref, e.g. "ghcr.io/parley-chat/parley:v1",
// names it in the index. The archive also holds a manifest.json naming the
// same blobs, as `docker save` writes it, so `docker load` reads it too.
// Entries are sorted and dated mtime, so the same image gives the same bytes.
func WriteArchive(w io.Writer, img v1.Image, platform v1.Platform, ref string, mtime time.Time) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	blobs := map[string][]byte{}
	addBlob := func(h v1.Hash, data []byte) string {
		p := path.Join("blobs", h.Algorithm, h.Hex)
		blobs[p] = data
		return p
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	addBlob(digest, rawManifest)
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := img.ConfigName()
	if err != nil {
		return err
	}
	configPath := addBlob(configName, rawConfig)
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var layerPaths []string
	for i, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		layerPaths = append(layerPaths, addBlob(h, data))
	}

	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	desc := v1.Descriptor{
		MediaType:   mt,
		Digest:      digest,
		Size:        int64(len(rawManifest)),
		Platform:    &platform,
		Annotations: map[string]string{annotationContainerdName: fullName(r)},
	}
	var tags []string
	if t, ok := r.(name.Tag); ok {
		desc.Annotations[annotationRefName] = t.TagStr()
		tags = []string{ref}
	}
	index, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{desc}})
	if err != nil {
		return err
	}
	docker, err := json.Marshal([]map[string]any{{"Config": configPath, "RepoTags": tags, "Layers": layerPaths}})
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"oci-layout":    []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json":    index,
		"manifest.json": docker,
	}
	for p, data := range blobs {
		files[p] = data
	}
	names := []string{"blobs/", "blobs/sha256/"}
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	mtime = fixedTime(mtime)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(files[n]))}
		if strings.HasSuffix(n, "/") {
			h.Mode, h.Typeflag, h.Size = 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// fullName is the reference as containerd spells it: Docker Hub is "docker.io".
func fullName(r name.Reference) string {
	n := r.Name()
	if r.Context().RegistryStr() == name.DefaultRegistry {
		n = "docker.io" + strings.TrimPrefix(n, name.DefaultRegistry)
	}
	return n
}

// WriteArchiveFile writes the archive to a temporary file beside file and
// renames it into place, so file is never a half-written archive.
func WriteArchiveFile(file string, img v1.Image, platform v1.Platform, ref string, mtime time.Time) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".parley-image-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := WriteArchive(tmp, img, platform, ref, mtime); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// Archive is an OCI image-layout tar unpacked for reading.
type Archive struct {
	// Image is the archive's one image.
	Image v1.Image
	// Name is the reference the archive was written for ("" if none).
	Name string
	dir  string
}

// OpenArchive unpacks an archive written by WriteArchive (or any OCI layout
// tar holding one image) into a temporary directory; Close removes it.
func OpenArchive(file string) (*Archive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir, err := os.MkdirTemp("", "parley-image-archive-")
	if err != nil {
		return nil, err
	}
	a := &Archive{dir: dir}
	if err := unpack(f, dir); err != nil {
		a.Close()
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("%s is not an OCI image layout: %w", file, err)
	}
	im, err := index.IndexManifest()
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsImage() {
		a.Close()
		return nil, fmt.Errorf("%s holds %d index entries; want exactly one image manifest", file, len(im.Manifests))
	}
	desc := im.Manifests[0]
	if a.Image, err = index.Image(desc.Digest); err != nil {
		a.Close()
		return nil, fmt.Errorf("%s: image %s: %w", file, desc.Digest, err)
	}
	a.Name = desc.Annotations[annotationContainerdName]
	return a, nil
}

// Close removes the unpacked archive.
func (a *Archive) Close() error { return os.RemoveAll(a.dir) }

// unpack extracts the regular files and directories of a tar under dir,
// refusing any name that would land outside it.
func unpack(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		clean := path.Clean(h.Name)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("archive entry %q points outside the archive", h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(clean))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("archive entry %s has type %q; an image layout holds only files and directories", h.Name, h.Typeflag)
		}
	}
}
