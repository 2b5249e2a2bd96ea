package image

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Dpkg reads the package database of a Debian system: which packages are
// installed, at which version, which files each one shipped and their
// checksums. The image's base files are taken only through it, so every byte
// of the base is a file a named Debian package installed, unmodified.
type Dpkg struct {
	// Root is the system's root directory; "" means "/".
	Root string
}

// Package is one installed Debian package.
type Package struct {
	Name, Version, Architecture string
	// Stanza is the package's record in dpkg's status file, as scanners
	// (Trivy, Grype, Syft) read it from /var/lib/dpkg/status.d/ in distroless images.
	Stanza []byte

	root      string
	files     map[string]bool   // absolute paths the package installed (its .list)
	sums      map[string]string // path → md5 from .md5sums and the Conffiles field
	conffiles map[string]bool
}

func (d Dpkg) root() string {
	if d.Root == "" {
		return "/"
	}
	return d.Root
}

// Package reads the named package's status, file list and checksums. It fails
// when the package is not installed (naming how to install it).
func (d Dpkg) Package(name string) (*Package, error) {
	admin := filepath.Join(d.root(), "var", "lib", "dpkg")
	status, err := os.ReadFile(filepath.Join(admin, "status"))
	if err != nil {
		return nil, fmt.Errorf("read the dpkg database: %w (the image's base comes from this machine's Debian packages)", err)
	}
	var p *Package
	for _, stanza := range bytes.Split(status, []byte("\n\n")) {
		fields := parseStanza(stanza)
		if fields["Package"] != name {
			continue
		}
		if !strings.HasSuffix(fields["Status"], " installed") {
			return nil, fmt.Errorf("Debian package %s is %q, not installed: run `apt-get install %s`", name, fields["Status"], name)
		}
		p = &Package{
			Name: name, Version: fields["Version"], Architecture: fields["Architecture"],
			Stanza: append(bytes.TrimSpace(stanza), '\n'),
			root:   d.root(), files: map[string]bool{}, sums: map[string]string{}, conffiles: map[string]bool{},
		}
		for _, line := range strings.Split(fields["Conffiles"], "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				p.sums[f[0]], p.conffiles[f[0]] = f[1], true
			}
		}
		break
	}
	if p == nil {
		return nil, fmt.Errorf("Debian package %s is not installed: run `apt-get install %s`", name, name)
	}
	// dpkg names the files of a Multi-Arch: same package "<name>:<arch>.list".
	info := ""
	for _, base := range []string{name, name + ":" + p.Architecture} {
		if _, err := os.Stat(filepath.Join(admin, "info", base+".list")); err == nil {
			info = filepath.Join(admin, "info", base)
			break
		}
	}
	if info == "" {
		return nil, fmt.Errorf("Debian package %s: dpkg keeps no file list for it in %s", name, filepath.Join(admin, "info"))
	}
	list, err := os.ReadFile(info + ".list")
	if err != nil {
		return nil, fmt.Errorf("Debian package %s: %w", name, err)
	}
	for _, f := range strings.Split(string(list), "\n") {
		if f != "" {
			p.files[f] = true
		}
	}
	sums, err := os.ReadFile(info + ".md5sums")
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("Debian package %s: %w", name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		if ok {
			p.sums["/"+file] = sum
		}
	}
	return p, nil
}

// parseStanza reads a deb822 record; continuation lines (starting with a
// blank) are joined to their field with "\n".
func parseStanza(stanza []byte) map[string]string {
	fields := map[string]string{}
	last := ""
	for _, line := range strings.Split(string(stanza), "\n") {
		if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
			if last != "" {
				fields[last] += "\n" + strings.TrimSpace(line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = k
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}

// String is "name=version", the form apt-get install takes.
func (p *Package) String() string { return p.Name + "=" + p.Version }

// Files lists the package's files under dir (an absolute path), sorted.
func (p *Package) Files(dir string) []string {
	dir = strings.TrimSuffix(dir, "/") + "/"
	var out []string
	for f := range p.files {
		if strings.HasPrefix(f, dir) {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// PackageFile is one file a package installed, as found on disk.
type PackageFile struct {
	Path string
	Mode fs.FileMode
	// Data is a regular file's content, checked against dpkg's checksum.
	Data []byte
	// Link is a symbolic link's target.
	Link string
	// Dir is set for a directory.
	Dir bool
}

// ReadFile returns a file the package installed. A regular file must still
// match dpkg's recorded checksum, so a locally edited or replaced file is
// never copied into the image as if Debian had shipped it.
func (p *Package) ReadFile(name string) (PackageFile, error) {
	if !p.files[name] {
		return PackageFile{}, fmt.Errorf("Debian package %s did not install %s", p, name)
	}
	host := filepath.Join(p.root, filepath.FromSlash(name))
	fi, err := os.Lstat(host)
	if err != nil {
		return PackageFile{}, fmt.Errorf("%s (from Debian package %s): %w", name, p, err)
	}
	f := PackageFile{Path: name, Mode: fi.Mode()}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		if f.Link, err = os.Readlink(host); err != nil {
			return PackageFile{}, err
		}
		return f, nil
	case fi.IsDir():
		f.Dir = true
		return f, nil
	case !fi.Mode().IsRegular():
		return PackageFile{}, fmt.Errorf("%s (from Debian package %s) is a %s, not a file", name, p, fi.Mode().Type())
	}
	if f.Data, err = os.ReadFile(host); err != nil {
		return PackageFile{}, err
	}
	want, ok := p.sums[name]
	if !ok {
		return PackageFile{}, fmt.Errorf("%s (from Debian package %s) has no checksum in dpkg's database, so its origin cannot be checked", name, p)
	}
	sum := md5.Sum(f.Data)
	if got := hex.EncodeToString(sum[:]); got != want {
		restore := "apt-get install --reinstall " + p.Name
		if p.conffiles[name] {
			// dpkg keeps a locally edited configuration file on reinstall unless told otherwise.
			restore = "apt-get install --reinstall -o Dpkg::Options::=--force-confask,confnew " + p.Name
		}
		return PackageFile{}, fmt.Errorf("%s differs from what Debian package %s shipped (md5 %s, dpkg recorded %s): it was changed on this machine; restore it with `%s`",
			name, p, got, want, restore)
	}
	return f, nil
}

// copyright is the package's license file, shipped with every file taken from it.
func (p *Package) copyright() string { return path.Join("/usr/share/doc", p.Name, "copyright") }
