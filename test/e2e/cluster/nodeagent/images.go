package nodeagent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Image is what the agent knows about an image it can run: the files of its
// root filesystem (container path → host file; the binaries built from this
// repository) and its default entrypoint and user, as a Dockerfile would set them.
type Image struct {
	// Files are bind-mounted read-only into the container, e.g. "/chatserver".
	Files map[string]string
	// Entrypoint is used when the container sets no command.
	Entrypoint []string
	// UID and GID are the image's default user (USER in the Dockerfile).
	UID, GID int64
}

// Images resolves an image reference to something runnable, or says why not.
type Images interface {
	Resolve(image string) (Image, error)
}

// ParleyImages runs every image in Parley's repositories (any tag or digest)
// with the binaries from one directory (bin/ after `make build`), laid out as
// the Dockerfile lays out the production image: /manager and /chatserver,
// the distroless "nonroot" user 65532, entrypoint /manager.
type ParleyImages struct {
	// Repositories are image names without tag, e.g. "ghcr.io/parley-chat/parley".
	// A trailing "/" matches every image under that prefix.
	Repositories []string
	// BinDir holds the binaries.
	BinDir string
}

// DefaultRepositories are Parley's image repositories.
var DefaultRepositories = []string{"ghcr.io/parley-chat/"}

// imageFiles are the production image's programs (see the Dockerfile).
var imageFiles = []string{"manager", "chatserver"}

// Resolve implements Images.
func (p ParleyImages) Resolve(image string) (Image, error) {
	repo := imageRepository(image)
	match := false
	for _, r := range p.Repositories {
		if repo == r || (strings.HasSuffix(r, "/") && strings.HasPrefix(repo, r)) {
			match = true
		}
	}
	if !match {
		return Image{}, fmt.Errorf("image %q is not one of Parley's (%s): the local node agent has no container runtime and runs only Parley's binaries as processes", image, strings.Join(p.Repositories, ", "))
	}
	img := Image{Files: map[string]string{}, Entrypoint: []string{"/manager"}, UID: 65532, GID: 65532}
	for _, name := range imageFiles {
		path := filepath.Join(p.BinDir, name)
		if info, err := os.Stat(path); err == nil && info.Mode()&0o111 != 0 {
			img.Files["/"+name] = path
		}
	}
	if len(img.Files) == 0 {
		return Image{}, fmt.Errorf("image %q: neither manager nor chatserver in %s (run `make build`)", image, p.BinDir)
	}
	return img, nil
}

// imageRepository strips the tag and digest: "a.io/b/c:v1@sha256:…" → "a.io/b/c".
func imageRepository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// ImageMap runs the images it lists and asks Fallback about the rest.
type ImageMap struct {
	Images   map[string]Image
	Fallback Images
}

// Resolve implements Images.
func (m ImageMap) Resolve(image string) (Image, error) {
	if img, ok := m.Images[image]; ok {
		return img, nil
	}
	if m.Fallback == nil {
		return Image{}, fmt.Errorf("image %q is unknown to the local node agent", image)
	}
	return m.Fallback.Resolve(image)
}
