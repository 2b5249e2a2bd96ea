package image

// A model of the Dockerfile's runtime base: what it gives the programs.

import (
	"archive/tar"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// baseFile is something the runtime base gives the programs.
type baseFile struct {
	path  string
	typ   byte  // tar.TypeReg, tar.TypeDir, or 0 for a file reached through symlinks
	mode  int64 // permission and special bits
	owner int   // uid and gid
	why   string
	check func(data []byte) error
}

// baseModel is what a runtime base image contributes: its run config and the
// files programs rely on.
type baseModel struct {
	config v1.Config
	files  []baseFile
	// extra are further paths the base has that the image may carry too.
	extra []string
}

// distrolessStatic models gcr.io/distroless/static-debian12:nonroot from its
// build definition (GoogleContainerTools/distroless, static/static.bzl and
// common/BUILD.bazel): env PATH and SSL_CERT_FILE, user 65532, working
// directory /home/nonroot; files from base-files, netbase, tzdata,
// media-types and ca-certificates, passwd/group with root, nobody, nonroot,
// homes /root (0700), /home/nonroot (0700, 65532), /tmp (1777) and
// /etc/nsswitch.conf. tzdata's /usr/share/zoneinfo is the one part the image
// target adds only on demand (see TestZoneInfoOnlyWhenAProgramLoadsZonesByName).
var distrolessStatic = baseModel{
	config: v1.Config{
		User:       "65532",
		WorkingDir: "/home/nonroot",
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
	},
	files: []baseFile{
		{path: "/etc/passwd", typ: tar.TypeReg, mode: 0o644, why: "user names for root, nobody and nonroot", check: checkPasswd},
		{path: "/etc/group", typ: tar.TypeReg, mode: 0o644, why: "groups root, nobody and nonroot", check: checkGroup},
		{path: "/etc/ssl/certs/ca-certificates.crt", typ: tar.TypeReg, mode: 0o644, why: "TLS to RabbitMQ, PostgreSQL, the API server and JWKS endpoints", check: checkCABundle},
		{path: "/etc/nsswitch.conf", typ: tar.TypeReg, mode: 0o644, why: "Go's resolver reads /etc/hosts before DNS", check: checkNSSwitch},
		{path: "/etc/os-release", why: "scanners identify the distribution", check: checkOSRelease},
		{path: "/etc/services", typ: tar.TypeReg, mode: 0o644, why: "netbase: service names"},
		{path: "/etc/protocols", typ: tar.TypeReg, mode: 0o644, why: "netbase: protocol names"},
		{path: "/etc/mime.types", typ: tar.TypeReg, mode: 0o644, why: "media-types: content types of served files"},
		{path: "/tmp", typ: tar.TypeDir, mode: 0o1777, why: "temporary files"},
		{path: "/home", typ: tar.TypeDir, mode: 0o755, why: "home directories"},
		{path: "/home/nonroot", typ: tar.TypeDir, mode: 0o700, owner: NonRoot, why: "nonroot's home and the working directory"},
		{path: "/root", typ: tar.TypeDir, mode: 0o700, why: "root's home"},
	},
	extra: []string{"/etc/ethertypes", "/etc/rpc", "/usr/lib/os-release", "/usr/share/doc/*/copyright", "/var/lib/dpkg/status.d/*", "/usr/share/zoneinfo/**"},
}

var baseModels = map[string]baseModel{
	"gcr.io/distroless/static-debian12:nonroot": distrolessStatic,
}

func checkPasswd(data []byte) error {
	want := map[string]string{"root": "0:0:", "nobody": "65534:65534:", "nonroot": "65532:65532:"}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 {
			continue
		}
		if ids, ok := want[f[0]]; ok && ids == f[2]+":"+f[3]+":" {
			if f[0] == "nonroot" && f[5] != "/home/nonroot" {
				return fmt.Errorf("nonroot's home is %s, want /home/nonroot", f[5])
			}
			delete(want, f[0])
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("no entry for %v with the expected uid:gid", want)
	}
	return nil
}

func checkGroup(data []byte) error {
	for _, g := range []string{"root:x:0:", "nobody:x:65534:", "nonroot:x:65532:"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(g)).Match(data) {
			return fmt.Errorf("no group %s", g)
		}
	}
	return nil
}

func checkCABundle(data []byte) error {
	n := 0
	for rest := data; ; n++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("certificate %d: %w", n, err)
		}
		if !c.IsCA {
			return fmt.Errorf("certificate %d (%s) is not a CA", n, c.Subject)
		}
	}
	if n < 100 {
		return fmt.Errorf("only %d certificates", n)
	}
	return nil
}

func checkNSSwitch(data []byte) error {
	if !regexp.MustCompile(`(?m)^hosts:\s+files\s+dns\s*$`).Match(data) {
		return fmt.Errorf("no `hosts: files dns` line")
	}
	return nil
}

// checkOSRelease holds the image to the base's distribution: static-debian12.
func checkOSRelease(data []byte) error {
	for _, want := range []string{"ID=debian", `VERSION_ID="12"`} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(data) {
			return fmt.Errorf("does not say %s (the Dockerfile's base is Debian 12)", want)
		}
	}
	return nil
}
