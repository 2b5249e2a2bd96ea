// Package image builds Parley's OCI image without a container engine: the
// static programs `make build` puts in bin/ on a base layer made from this
// machine's Debian packages, laid out and configured as the Dockerfile's image
// is (a test parses the Dockerfile and compares), written as an OCI
// image-layout tar and pushed to a registry with go-containerregistry.
//
// The build is reproducible: the same binaries, Debian packages, version,
// commit and creation time give the same bytes and so the same digest.
package image

import (
	"fmt"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec is an image of static programs on the Debian base.
type Spec struct {
	// Programs are copied into the image, root-owned and mode 0755.
	Programs []Program
	// User, WorkingDir, Env, Entrypoint and Cmd are the image's run config.
	User       string
	WorkingDir string
	Env        []string
	Entrypoint []string
	Cmd        []string
	// Labels may use ${VERSION} and ${COMMIT}, filled from Options.
	Labels map[string]string
}

// Program is one binary: Name is its file in the bin directory, Path its
// place in the image.
type Program struct {
	Name, Path string
}

// LabelPrefix starts the labels the image target adds beyond the
// Dockerfile's: facts about a base that has no image of its own to name.
const LabelPrefix = "io.parley.image."

// BasePackagesLabel names the Debian packages (name=version) the base came from.
const BasePackagesLabel = LabelPrefix + "base.packages"

// Parley is the production image, the same as the Dockerfile's: /manager
// and /chatserver on distroless static-debian12:nonroot, whose run config
// (working directory, PATH and SSL_CERT_FILE) it repeats.
var Parley = Spec{
	Programs: []Program{{Name: "manager", Path: "/manager"}, {Name: "chatserver", Path: "/chatserver"}},
	// Numeric, because Kubernetes' runAsNonRoot can only verify a numeric user.
	User:       fmt.Sprintf("%d:%d", NonRoot, NonRoot),
	WorkingDir: "/home/nonroot",
	Env: []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SSL_CERT_FILE=" + caBundle,
	},
	Entrypoint: []string{"/manager"},
	Labels: map[string]string{
		"org.opencontainers.image.title":       "parley",
		"org.opencontainers.image.description": "Parley: the ChatCluster operator (/manager) and its chat server (/chatserver)",
		"org.opencontainers.image.source":      "https://github.com/parley-chat/parley",
		"org.opencontainers.image.version":     "${VERSION}",
		"org.opencontainers.image.revision":    "${COMMIT}",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	},
}

// Options are the inputs of one build.
type Options struct {
	// Binaries maps each program's Name to the file to copy.
	Binaries map[string]string
	// Version and Commit fill the labels (the Dockerfile's build args);
	// empty means "dev" and "unknown", the Dockerfile's defaults.
	Version, Commit string
	// Created is the image's creation time and every file's time; a fixed
	// value (SOURCE_DATE_EPOCH) keeps the digest reproducible.
	Created time.Time
	// Dpkg is the package database the base comes from.
	Dpkg Dpkg
}

// Result is a built image and what went into it.
type Result struct {
	Image    v1.Image
	Platform v1.Platform
	// Packages are the Debian packages of the base layer.
	Packages []*Package
	// ZoneInfo says whether the base holds tzdata (a program needs it).
	ZoneInfo bool
}

// Build assembles the image in memory.
func Build(spec Spec, o Options) (*Result, error) {
	version, commit := o.Version, o.Commit
	if version == "" {
		version = "dev"
	}
	if commit == "" {
		commit = "unknown"
	}
	var progFiles []File
	arch, archFrom, zones := "", "", false
	for _, p := range spec.Programs {
		src, ok := o.Binaries[p.Name]
		if !ok || src == "" {
			return nil, fmt.Errorf("no binary given for %s (%s in the image): run `make build`", p.Name, p.Path)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w (run `make build`)", p.Name, err)
		}
		info, err := inspectProgram(src, data)
		if err != nil {
			return nil, err
		}
		if arch != "" && info.arch != arch {
			return nil, fmt.Errorf("%s is built for %s but %s for %s: one image holds one architecture", src, info.arch, archFrom, arch)
		}
		arch, archFrom = info.arch, src
		zones = zones || info.loadsZones
		progFiles = append(progFiles, file(p.Path, 0o755, data))
	}
	if len(progFiles) == 0 {
		return nil, fmt.Errorf("the image spec names no programs")
	}
	baseFiles, pkgs, err := debianBase(o.Dpkg, zones)
	if err != nil {
		return nil, err
	}
	created := fixedTime(o.Created)
	base, err := newLayer(baseFiles, created)
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	progs, err := newLayer(progFiles, created)
	if err != nil {
		return nil, fmt.Errorf("programs layer: %w", err)
	}
	var names []string
	for _, p := range spec.Programs {
		names = append(names, p.Path)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "make image: Debian base " + packageList(pkgs),
		}},
		mutate.Addendum{Layer: progs, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "make image: COPY " + strings.Join(names, " "),
		}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	cf.OS, cf.Architecture = "linux", arch
	cf.Config = v1.Config{
		User:       spec.User,
		WorkingDir: spec.WorkingDir,
		Env:        append([]string(nil), spec.Env...),
		Entrypoint: append([]string(nil), spec.Entrypoint...),
		Cmd:        append([]string(nil), spec.Cmd...),
		Labels:     labels(spec.Labels, version, commit),
	}
	cf.Config.Labels[BasePackagesLabel] = packageList(pkgs)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return &Result{Image: img, Platform: v1.Platform{OS: "linux", Architecture: arch}, Packages: pkgs, ZoneInfo: zones}, nil
}

func labels(spec map[string]string, version, commit string) map[string]string {
	r := strings.NewReplacer("${VERSION}", version, "${COMMIT}", commit)
	out := make(map[string]string, len(spec)+1)
	for k, v := range spec {
		out[k] = r.Replace(v)
	}
	return out
}

// fixedTime is t in whole seconds and UTC; the zero time means the Unix
// epoch (a tar header cannot hold year 1 in its plain format).
func fixedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return time.Unix(t.Unix(), 0).UTC()
}
