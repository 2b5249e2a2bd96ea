package image

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// The base layer holds what distroless's static image gives Go programs, taken
// from this machine's Debian packages instead of a registry:
//
//	ca-certificates  /etc/ssl/certs/ca-certificates.crt, assembled from the
//	                 package's own certificates (not the machine's bundle,
//	                 which may hold local additions such as a proxy's CA)
//	netbase          /etc/services, /etc/protocols, /etc/rpc, /etc/ethertypes
//	media-types      /etc/mime.types (Go's mime package reads it)
//	base-files       /etc/os-release (how scanners tell the distribution)
//	libc-bin         /etc/nsswitch.conf from Debian's default (hosts: files dns,
//	                 which Go's resolver honours); none of libc itself
//	tzdata           /usr/share/zoneinfo, only when a program loads zones by name
//
// plus /etc/passwd and /etc/group with root, nobody and the nonroot user and
// group 65532 (distroless's convention, which Parley's pods run as), the home
// directories and a world-writable sticky /tmp. Each package also leaves its
// copyright file and its dpkg record in /var/lib/dpkg/status.d/, which is where
// vulnerability scanners look for the packages of a distroless image.

// NonRoot is the user and group the image runs as (distroless's "nonroot").
const NonRoot = 65532

const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// The base packages in the order their files are gathered.
var basePackages = []string{"base-files", "ca-certificates", "libc-bin", "media-types", "netbase"}

const zonePackage = "tzdata"

// noStatusRecord are packages the base takes only a configuration file from:
// recording them in status.d would make scanners report the vulnerabilities of
// a C library the image does not hold.
var noStatusRecord = map[string]bool{"libc-bin": true}

// debianBase gathers the base layer's files and the packages they came from.
func debianBase(d Dpkg, withZones bool) ([]File, []*Package, error) {
	names := basePackages
	if withZones {
		names = append(append([]string{}, names...), zonePackage)
	}
	var files []File
	var pkgs []*Package
	for _, name := range names {
		p, err := d.Package(name)
		if err != nil {
			return nil, nil, err
		}
		pkgs = append(pkgs, p)
		taken, err := packageFiles(p)
		if err != nil {
			return nil, nil, err
		}
		copyright, err := p.ReadFile(p.copyright())
		if err != nil {
			return nil, nil, err
		}
		files = append(files, taken...)
		files = append(files, file(copyright.Path, 0o644, copyright.Data))
		if !noStatusRecord[name] {
			files = append(files, file("/var/lib/dpkg/status.d/"+name, 0o644, p.Stanza))
		}
	}
	files = append(files, accounts()...)
	return files, pkgs, nil
}

// packageFiles picks what the image takes from one package.
func packageFiles(p *Package) ([]File, error) {
	var out []File
	take := func(src, dst string) error {
		f, err := p.ReadFile(src)
		if err != nil {
			return err
		}
		switch {
		case f.Dir:
			out = append(out, dir(dst, 0o755, 0, 0))
		case f.Link != "":
			out = append(out, File{Path: dst, Mode: fs.ModeSymlink | 0o777, Link: f.Link})
		default:
			out = append(out, file(dst, 0o644, f.Data))
		}
		return nil
	}
	switch p.Name {
	case "ca-certificates":
		bundle, err := certificateBundle(p)
		if err != nil {
			return nil, err
		}
		out = append(out, file(caBundle, 0o644, bundle))
	case "netbase":
		for _, f := range p.Files("/etc") {
			if err := take(f, f); err != nil {
				return nil, err
			}
		}
	case "media-types":
		if err := take("/etc/mime.types", "/etc/mime.types"); err != nil {
			return nil, err
		}
	case "base-files":
		for _, f := range []string{"/usr/lib/os-release", "/etc/os-release"} {
			if err := take(f, f); err != nil {
				return nil, err
			}
		}
	case "libc-bin":
		// Debian's postinst installs this template as /etc/nsswitch.conf.
		if err := take("/usr/share/libc-bin/nsswitch.conf", "/etc/nsswitch.conf"); err != nil {
			return nil, err
		}
	case zonePackage:
		for _, f := range p.Files("/usr/share/zoneinfo") {
			if err := take(f, f); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("Debian package %s: the image takes nothing from it", p.Name)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("Debian package %s installed none of the files the image needs", p)
	}
	return out, nil
}

// certificateBundle concatenates the certificates the package ships, in the
// order update-ca-certificates uses (sorted paths), each checked to parse.
func certificateBundle(p *Package) ([]byte, error) {
	var bundle bytes.Buffer
	n := 0
	for _, f := range p.Files("/usr/share/ca-certificates") {
		if !strings.HasSuffix(f, ".crt") {
			continue
		}
		c, err := p.ReadFile(f)
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(c.Data)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s (from Debian package %s) holds no PEM certificate", f, p)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("%s (from Debian package %s): %w", f, p, err)
		}
		bundle.Write(c.Data)
		if !bytes.HasSuffix(c.Data, []byte("\n")) {
			bundle.WriteByte('\n')
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("Debian package %s ships no certificates under /usr/share/ca-certificates", p)
	}
	return bundle.Bytes(), nil
}

// accounts are the users, groups and home directories of distroless's
// static image: root, nobody and nonroot, none with a login shell.
func accounts() []File {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
		"nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRoot, NonRoot)
	group := fmt.Sprintf("root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:%d:\n", NonRoot)
	return []File{
		file("/etc/passwd", 0o644, []byte(passwd)),
		file("/etc/group", 0o644, []byte(group)),
		dir("/root", 0o700, 0, 0),
		dir("/home", 0o755, 0, 0),
		dir("/home/nonroot", 0o700, NonRoot, NonRoot),
		dir("/tmp", fs.ModeSticky|0o777, 0, 0),
	}
}

// packageList is the label value naming the base's packages: "name=version ...".
func packageList(pkgs []*Package) string {
	var s []string
	for _, p := range pkgs {
		s = append(s, p.String())
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
