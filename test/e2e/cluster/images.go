package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/image"
)

// The node never pulls: every image it runs is built here, from programs on
// this machine, by the same code as `make image` (internal/image: a base
// layer from Debian packages, the programs, a non-root user), and imported
// into containerd. Pods name them with imagePullPolicy IfNotPresent.

// Images the cluster's add-ons run.
const (
	CoreDNSImage       = "registry.parley.local/coredns:v" + CoreDNSVersion
	MetricsServerImage = "registry.parley.local/metrics-server:v" + MetricsServerVersion
	// CoreDNSVersion and MetricsServerVersion are what hack/control-plane.sh
	// --with-node builds.
	CoreDNSVersion       = "1.15.0"
	MetricsServerVersion = "0.8.0"
)

// ParleyImage is the reference the local cluster gives Parley's image built
// from BinDir: a tag from the binaries' content, so a rebuilt binary is a new
// image and never a stale one the node already has.
func parleyImageRef(digest string) string {
	return "ghcr.io/parley-chat/parley:local-" + strings.TrimPrefix(digest, "sha256:")[:12]
}

// imageBuild is one image: its spec, the binaries, its reference.
type imageBuild struct {
	ref      string
	spec     image.Spec
	binaries map[string]string
}

func staticImage(ref, program, binary string, args ...string) imageBuild {
	return imageBuild{
		ref: ref,
		spec: image.Spec{
			Programs:   []image.Program{{Name: program, Path: "/" + program}},
			User:       fmt.Sprintf("%d:%d", image.NonRoot, image.NonRoot),
			Entrypoint: []string{"/" + program},
			Cmd:        args,
			Labels:     map[string]string{"org.opencontainers.image.title": program},
		},
		binaries: map[string]string{program: binary},
	}
}

// buildAndImport builds each image into dir and imports it into the node's
// containerd; it returns each reference's digest.
func (c *Cluster) buildAndImport(dir string, builds []imageBuild) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	digests := map[string]string{}
	for _, b := range builds {
		res, err := image.Build(b.spec, image.Options{Binaries: b.binaries, Created: time.Unix(0, 0)})
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", b.ref, err)
		}
		d, err := res.Image.Digest()
		if err != nil {
			return nil, err
		}
		ref := b.ref
		if ref == "" {
			ref = parleyImageRef(d.String())
		}
		file := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		if err := image.WriteArchiveFile(file, res.Image, res.Platform, ref, time.Unix(0, 0)); err != nil {
			return nil, err
		}
		if err := c.ctr("images", "import", file); err != nil {
			return nil, fmt.Errorf("import %s into containerd: %w", ref, err)
		}
		_ = os.Remove(file)
		digests[ref] = d.String()
	}
	return digests, nil
}

// ctr runs containerd's CLI against the node's containerd, in the
// namespace the CRI uses.
func (c *Cluster) ctr(args ...string) error {
	argv := append([]string{"ctr", "--address", c.containerdSocket(), "--namespace", "k8s.io"}, args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// buildPause compiles the sandbox program (./pause) into dir.
func buildPause(repoRoot, dir string) (string, error) {
	out := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./test/e2e/cluster/pause")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the pause program: %v: %s", err, b)
	}
	return out, nil
}

// parleySpec is the production image's spec (the Dockerfile's).
func parleySpec() image.Spec { return image.Parley }
