package image

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The CA bundle in the image is exactly the certificates Debian's
// ca-certificates package ships, in update-ca-certificates' order: nothing
// added on this machine (its own bundle may hold a local CA) reaches it.
func TestCABundleIsTheDebianPackagesCertificates(t *testing.T) {
	p, err := Dpkg{}.Package("ca-certificates")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	n := 0
	for _, f := range p.Files("/usr/share/ca-certificates") {
		if strings.HasSuffix(f, ".crt") {
			want.Write(readAll(t, f))
			n++
		}
	}
	if n < 100 {
		t.Fatalf("ca-certificates %s lists only %d certificates", p.Version, n)
	}
	fs := flatten(t, sharedStubImage(t).Image)
	got, ok := fs[caBundle]
	if !ok {
		t.Fatalf("the image has no %s", caBundle)
	}
	if !bytes.Equal(got.data, want.Bytes()) {
		t.Errorf("%s in the image (%d bytes) is not the package's %d certificates (%d bytes)", caBundle, len(got.data), n, want.Len())
	}
	pool := 0
	for rest := got.data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			t.Errorf("certificate %d: %v", pool, err)
		}
		pool++
	}
	if pool != n {
		t.Errorf("the bundle parses into %d certificates, want %d", pool, n)
	}
	if status := fs["/var/lib/dpkg/status.d/ca-certificates"]; !bytes.Contains(status.data, []byte("Version: "+p.Version+"\n")) {
		t.Errorf("status.d record of ca-certificates does not name version %s:\n%s", p.Version, status.data)
	}
}

// fakeRoot copies the parts of this machine's dpkg database that describe
// the named packages into a new root, with the packages' files, so a test
// can change one of them without touching the machine.
func fakeRoot(t *testing.T, files []string, pkgs ...string) string {
	t.Helper()
	root := t.TempDir()
	copyFile := func(src string) {
		dst := filepath.Join(root, src)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, readAll(t, src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyFile("/var/lib/dpkg/status")
	for _, p := range pkgs {
		for _, ext := range []string{".list", ".md5sums"} {
			copyFile("/var/lib/dpkg/info/" + p + ext)
		}
	}
	for _, f := range files {
		copyFile(f)
	}
	return root
}

func TestDpkgTakesOnlyUnchangedPackageFiles(t *testing.T) {
	root := fakeRoot(t, []string{"/etc/services", "/usr/share/doc/netbase/copyright"}, "netbase")
	p, err := Dpkg{Root: root}.Package("netbase")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadFile("/etc/services"); err != nil {
		t.Fatalf("unchanged /etc/services: %v", err)
	}
	if _, err := p.ReadFile("/usr/share/doc/netbase/copyright"); err != nil {
		t.Fatalf("unchanged copyright: %v", err)
	}
	// A configuration file edited on the machine (dpkg keeps its sum in the status file).
	if err := os.WriteFile(filepath.Join(root, "etc/services"), []byte("parley 1/tcp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = p.ReadFile("/etc/services")
	if err == nil || !strings.Contains(err.Error(), "/etc/services differs from what Debian package netbase="+p.Version+" shipped") ||
		!strings.Contains(err.Error(), "--force-confask,confnew netbase") {
		t.Errorf("edited conffile: err = %v", err)
	}
	// A plain file (sum in info/<package>.md5sums) replaced.
	if err := os.WriteFile(filepath.Join(root, "usr/share/doc/netbase/copyright"), []byte("no\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = p.ReadFile("/usr/share/doc/netbase/copyright")
	if err == nil || !strings.Contains(err.Error(), "restore it with `apt-get install --reinstall netbase`") {
		t.Errorf("replaced file: err = %v", err)
	}
	if _, err := p.ReadFile("/etc/passwd"); err == nil || !strings.Contains(err.Error(), "did not install /etc/passwd") {
		t.Errorf("a file of another package: err = %v", err)
	}
}

func TestDpkgNamesMissingPackages(t *testing.T) {
	root := fakeRoot(t, nil)
	status := filepath.Join(root, "var/lib/dpkg/status")
	removed := "Package: parley-removed\nStatus: deinstall ok config-files\nVersion: 1\n"
	data := append(readAll(t, status), []byte("\n"+removed)...)
	if err := os.WriteFile(status, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ pkg, want string }{
		{"parley-removed", `Debian package parley-removed is "deinstall ok config-files", not installed: run ` + "`apt-get install parley-removed`"},
		{"parley-no-such-package", "Debian package parley-no-such-package is not installed: run `apt-get install parley-no-such-package`"},
	} {
		if _, err := (Dpkg{Root: root}).Package(tc.pkg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.pkg, err, tc.want)
		}
	}
	if _, err := (Dpkg{Root: t.TempDir()}).Package("netbase"); err == nil || !strings.Contains(err.Error(), "read the dpkg database") {
		t.Errorf("no database: err = %v", err)
	}
}
