package image

// Comparing the image the Dockerfile describes (dockerfile_parse_test.go,
// distroless_test.go) with the image `make image` builds: run config, labels,
// ports and every file, so a Dockerfile change the image target does not
// follow, or an image change the Dockerfile does not have, fails by name.

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// shells are the paths a shell would have in a Debian-based image.
var shells = []string{"/bin/sh", "/bin/bash", "/bin/dash", "/bin/busybox", "/usr/bin/sh", "/usr/bin/bash", "/usr/bin/dash", "/busybox/sh"}

// compare lists every difference between the described image and img (its
// config and flattened filesystem fs); programs are the binaries by name.
func (d *described) compare(img v1.Image, fs map[string]entry, programs map[string][]byte, arch string) []string {
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	cf, err := img.ConfigFile()
	if err != nil {
		return []string{err.Error()}
	}
	got := cf.Config
	if got.User != d.config.User {
		bad("%s: user %q, the image runs as %q", d.origin["User"], d.config.User, got.User)
	}
	if got.WorkingDir != d.config.WorkingDir {
		bad("%s: working directory %q, the image has %q", d.origin["WorkingDir"], d.config.WorkingDir, got.WorkingDir)
	}
	if fmt.Sprint(got.Entrypoint) != fmt.Sprint(d.config.Entrypoint) {
		bad("%s: entrypoint %q, the image has %q", d.origin["Entrypoint"], d.config.Entrypoint, got.Entrypoint)
	}
	if fmt.Sprint(got.Cmd) != fmt.Sprint(d.config.Cmd) {
		bad("%s: cmd %q, the image has %q", d.origin["Cmd"], d.config.Cmd, got.Cmd)
	}
	gotEnv := map[string]string{}
	for _, e := range got.Env {
		k, v, _ := strings.Cut(e, "=")
		gotEnv[k] = v
	}
	for _, e := range d.config.Env {
		k, v, _ := strings.Cut(e, "=")
		if g, ok := gotEnv[k]; !ok || g != v {
			bad("%s: env %s=%s, the image has %q", d.origin["Env "+k], k, v, g)
		}
		delete(gotEnv, k)
	}
	for k, v := range gotEnv {
		bad("the image sets env %s=%s, which neither the Dockerfile nor its base sets", k, v)
	}
	if len(got.Env) == len(d.config.Env) && fmt.Sprint(got.Env) != fmt.Sprint(d.config.Env) {
		bad("env order: the Dockerfile gives %q, the image %q", d.config.Env, got.Env)
	}
	for k, v := range d.config.Labels {
		if g, ok := got.Labels[k]; !ok || g != v {
			bad("%s: label %s=%q, the image has %q", d.origin["Label "+k], k, v, g)
		}
	}
	for k, v := range got.Labels {
		if _, ok := d.config.Labels[k]; !ok && !strings.HasPrefix(k, LabelPrefix) {
			bad("the image has label %s=%q, which the Dockerfile does not set (labels of the image target's own start with %s)", k, v, LabelPrefix)
		}
	}
	for p, in := range d.ports {
		if _, ok := got.ExposedPorts[p]; !ok {
			bad("%s: port %s, the image exposes %v", in, p, keys(got.ExposedPorts))
		}
	}
	for p := range got.ExposedPorts {
		if _, ok := d.ports[p]; !ok {
			bad("the image exposes %s, which the Dockerfile does not", p)
		}
	}
	if len(got.Volumes) > 0 || got.StopSignal != "" || got.Healthcheck != nil || len(got.OnBuild) > 0 || len(got.Shell) > 0 {
		bad("the image sets volumes %v, stop signal %q, healthcheck %v, onbuild %v or shell %v, which the Dockerfile does not", keys(got.Volumes), got.StopSignal, got.Healthcheck, got.OnBuild, got.Shell)
	}
	if cf.OS != "linux" || cf.Architecture != arch {
		bad("the image is for %s/%s, its programs for linux/%s", cf.OS, cf.Architecture, arch)
	}

	// Files: what the Dockerfile copies, then what the base gives.
	known := map[string]bool{}
	for _, c := range d.files {
		known[c.dest] = true
		e, ok := fs[c.dest]
		switch {
		case !ok:
			bad("%s: the image has no %s", c.from, c.dest)
		case e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode != c.mode || e.hdr.Uid != c.uid || e.hdr.Gid != c.gid:
			bad("%s: %s is type %q mode %o owner %d:%d in the image, want a file %o %d:%d", c.from, c.dest, e.hdr.Typeflag, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid, c.mode, c.uid, c.gid)
		case !bytes.Equal(e.data, programs[c.program]):
			bad("%s: %s in the image is not the %s program", c.from, c.dest, c.program)
		}
	}
	for _, bf := range d.model.files {
		known[bf.path] = true
		e, ok := fs[bf.path]
		for hops := 0; ok && bf.typ == 0 && e.hdr.Typeflag == tar.TypeSymlink && hops < 10; hops++ {
			target := e.hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(e.hdr.Name), target)
			}
			known[path.Clean("/"+target)] = true
			e, ok = fs[path.Clean("/"+target)]
		}
		switch {
		case !ok:
			bad("the base %s has %s (%s); the image does not", d.base, bf.path, bf.why)
			continue
		case bf.typ != 0 && (e.hdr.Typeflag != bf.typ || e.hdr.Mode != bf.mode || e.hdr.Uid != bf.owner || e.hdr.Gid != bf.owner):
			bad("%s (%s) is type %q mode %o owner %d:%d in the image; the base %s has type %q mode %o owner %d:%d",
				bf.path, bf.why, e.hdr.Typeflag, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid, d.base, bf.typ, bf.mode, bf.owner, bf.owner)
		}
		if bf.check != nil {
			if err := bf.check(e.data); err != nil {
				bad("%s (%s): %v", bf.path, bf.why, err)
			}
		}
	}
	// Nothing else: every path is one of the above, something else the base
	// has, or a directory holding one of those.
	dirs := map[string]bool{}
	for p := range fs {
		if known[p] || matchAny(d.model.extra, p) {
			for q := path.Dir(p); q != "/"; q = path.Dir(q) {
				dirs[q] = true
			}
		}
	}
	for p, e := range fs {
		if !known[p] && !matchAny(d.model.extra, p) && !(e.hdr.Typeflag == tar.TypeDir && dirs[p]) {
			bad("the image holds %s, which neither the Dockerfile nor its base %s has", p, d.base)
		}
		if e.hdr.Typeflag == tar.TypeReg && e.hdr.Mode&0o111 != 0 && !known[p] {
			bad("the image holds a program %s besides the Dockerfile's", p)
		}
		if e.hdr.Mode&0o6000 != 0 {
			bad("%s is setuid or setgid", p)
		}
		if e.hdr.Mode&0o002 != 0 && e.hdr.Typeflag != tar.TypeSymlink && p != "/tmp" {
			bad("%s is world-writable", p)
		}
		if strings.HasPrefix(path.Base(p), ".wh.") {
			bad("the image holds a whiteout %s", p)
		}
	}
	for _, sh := range shells {
		if _, ok := fs[sh]; ok {
			bad("the image has a shell at %s; the Dockerfile's has none", sh)
		}
	}
	return problems
}

// matchAny reports whether p matches one of the patterns; "/**" at the end
// matches everything below a directory.
func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if prefix, ok := strings.CutSuffix(pat, "/**"); ok {
			if p == prefix || strings.HasPrefix(p, prefix+"/") {
				return true
			}
			continue
		}
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func readDockerfile(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// checkAgainstDockerfile describes src with the test's VERSION and COMMIT and
// compares it with the stub image.
func checkAgainstDockerfile(t *testing.T, src string) []string {
	t.Helper()
	d, problems := describe(src, map[string]string{"VERSION": testVersion, "COMMIT": testCommit})
	if d == nil {
		return problems
	}
	res := sharedStubImage(t)
	programs := map[string][]byte{}
	for name, p := range stubBinaries(t) {
		programs[name] = readAll(t, p)
	}
	return append(problems, d.compare(res.Image, flatten(t, res.Image), programs, runtime.GOARCH)...)
}

func TestImageMatchesTheDockerfile(t *testing.T) {
	src := readDockerfile(t)
	d, _ := describe(src, nil)
	if d == nil || len(d.files) != 2 || len(d.config.Labels) < 5 {
		t.Fatalf("read too little from the Dockerfile to compare: %+v", d)
	}
	for _, p := range checkAgainstDockerfile(t, src) {
		t.Error(p)
	}
}

// TestDockerfileCheckNamesEachDifference changes the Dockerfile in ways the
// image target does not follow and expects each to be reported by name.
func TestDockerfileCheckNamesEachDifference(t *testing.T) {
	src := readDockerfile(t)
	entry := `ENTRYPOINT ["/manager"]`
	if !strings.Contains(src, entry) || !strings.Contains(src, "USER 65532:65532") {
		t.Fatalf("the Dockerfile no longer has %s and USER 65532:65532; update this test's edits", entry)
	}
	appendLine := func(line string) func(string) string {
		return func(s string) string { return s + "\n" + line + "\n" }
	}
	replace := func(old, new string) func(string) string {
		return func(s string) string { return strings.Replace(s, old, new, 1) }
	}
	for _, tc := range []struct {
		name string
		edit func(string) string
		want string
	}{
		{"an exposed port", appendLine("EXPOSE 8080"), "port 8080/tcp, the image exposes []"},
		{"an env var", appendLine("ENV GODEBUG=madvdontneed=1"), "env GODEBUG=madvdontneed=1, the image has \"\""},
		{"another user", replace("USER 65532:65532", "USER 65534:65534"), `USER 65534:65534: user "65534:65534", the image runs as "65532:65532"`},
		{"another label", appendLine(`LABEL org.opencontainers.image.vendor="Parley"`), `label org.opencontainers.image.vendor="Parley", the image has ""`},
		{"a changed label", replace(`image.licenses="Apache-2.0"`, `image.licenses="MIT"`), `label org.opencontainers.image.licenses="MIT", the image has "Apache-2.0"`},
		{"a working directory", appendLine("WORKDIR /srv"), `WORKDIR /srv: working directory "/srv", the image has "/home/nonroot"`},
		{"a command", appendLine(`CMD ["--leader-elect"]`), `cmd ["--leader-elect"], the image has []`},
		{"a shell entrypoint", replace(entry, "ENTRYPOINT /manager"), "the shell form runs /bin/sh"},
		{"a healthcheck", appendLine("HEALTHCHECK NONE"), "does not reproduce HEALTHCHECK"},
		{"a RUN in the runtime stage", appendLine("RUN ln -s /manager /usr/bin/manager"), "does not reproduce RUN"},
		{"a file from the context", appendLine("COPY LICENSE /LICENSE"), "COPY LICENSE /LICENSE: `make image` copies only programs built in an earlier stage"},
		{"a program moved", replace("/out/chatserver /chatserver", "/out/chatserver /usr/local/bin/chatserver"), "the image has no /usr/local/bin/chatserver"},
		{"a program not built", appendLine("COPY --from=builder /out/chatbench /chatbench"), "/out/chatbench is not a program `go build -o` makes in stage builder"},
		{"another base", replace("gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/base-debian12:nonroot"), "the runtime base gcr.io/distroless/base-debian12:nonroot is unknown to this test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := checkAgainstDockerfile(t, tc.edit(src))
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got:\n%s", tc.want, strings.Join(problems, "\n"))
		})
	}
}

// The image holds nothing the Dockerfile's does not; these are the things
// most worth never shipping, checked on the image as built.
func TestImageHasNoShellAndOnlyTheTwoPrograms(t *testing.T) {
	fs := flatten(t, sharedStubImage(t).Image)
	var programs []string
	for p, e := range fs {
		if e.hdr.Typeflag == tar.TypeReg && e.hdr.Mode&0o111 != 0 {
			programs = append(programs, p)
		}
	}
	sort.Strings(programs)
	if fmt.Sprint(programs) != "[/chatserver /manager]" {
		t.Errorf("executable files: %v, want only /chatserver and /manager", programs)
	}
	for _, sh := range shells {
		if _, ok := fs[sh]; ok {
			t.Errorf("the image has %s", sh)
		}
	}
	if len(fs) > 80 {
		t.Errorf("the image holds %d paths; the base should stay small (tzdata only on demand)", len(fs))
	}
}

// TestDockerfileCheckCatchesImageDrift changes the image instead: a run
// config, a base file or an added file the Dockerfile's image does not have.
func TestDockerfileCheckCatchesImageDrift(t *testing.T) {
	d, problems := describe(readDockerfile(t), map[string]string{"VERSION": testVersion, "COMMIT": testCommit})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	programs := map[string][]byte{}
	for name, p := range stubBinaries(t) {
		programs[name] = readAll(t, p)
	}
	built := sharedStubImage(t)
	baseFS := flatten(t, built.Image)
	// check compares the image built from spec (nil: Parley's, as built)
	// with its filesystem changed by edit.
	check := func(t *testing.T, spec *Spec, edit func(map[string]entry), want string) {
		t.Helper()
		res := built
		if spec != nil {
			var err error
			if res, err = Build(*spec, Options{Binaries: stubBinaries(t), Version: testVersion, Commit: testCommit, Created: testCreated}); err != nil {
				t.Fatal(err)
			}
		}
		fs := map[string]entry{}
		for k, v := range baseFS {
			fs[k] = v
		}
		if edit != nil {
			edit(fs)
		}
		problems := d.compare(res.Image, fs, programs, runtime.GOARCH)
		for _, p := range problems {
			if strings.Contains(p, want) {
				return
			}
		}
		t.Errorf("no problem mentions %q; got:\n%s", want, strings.Join(problems, "\n"))
	}
	spec := func(change func(*Spec)) *Spec {
		s := Parley
		s.Env = append([]string(nil), Parley.Env...)
		s.Labels = map[string]string{}
		for k, v := range Parley.Labels {
			s.Labels[k] = v
		}
		change(&s)
		return &s
	}
	withFile := func(p string, e entry) func(map[string]entry) {
		return func(fs map[string]entry) { fs[p] = e }
	}
	t.Run("working directory", func(t *testing.T) {
		check(t, spec(func(s *Spec) { s.WorkingDir = "/" }), nil, `the base gcr.io/distroless/static-debian12:nonroot: working directory "/home/nonroot", the image has "/"`)
	})
	t.Run("env", func(t *testing.T) {
		check(t, spec(func(s *Spec) { s.Env = s.Env[:1] }), nil, "env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt, the image has \"\"")
	})
	t.Run("entrypoint", func(t *testing.T) {
		check(t, spec(func(s *Spec) { s.Entrypoint = []string{"/chatserver"} }), nil, `ENTRYPOINT ["/manager"]: entrypoint ["/manager"], the image has ["/chatserver"]`)
	})
	t.Run("label", func(t *testing.T) {
		check(t, spec(func(s *Spec) { s.Labels["maintainer"] = "x" }), nil, `the image has label maintainer="x", which the Dockerfile does not set`)
	})
	t.Run("tmp not sticky", func(t *testing.T) {
		tmp := baseFS["/tmp"]
		h := *tmp.hdr
		h.Mode = 0o777
		check(t, nil, withFile("/tmp", entry{hdr: &h}), "/tmp (temporary files) is type '5' mode 777 owner 0:0 in the image; the base")
	})
	t.Run("no nsswitch.conf", func(t *testing.T) {
		check(t, nil, func(fs map[string]entry) { delete(fs, "/etc/nsswitch.conf") }, "has /etc/nsswitch.conf (Go's resolver reads /etc/hosts before DNS); the image does not")
	})
	t.Run("nonroot missing from passwd", func(t *testing.T) {
		p := baseFS["/etc/passwd"]
		check(t, nil, withFile("/etc/passwd", entry{hdr: p.hdr, data: bytes.ReplaceAll(p.data, []byte("nonroot"), []byte("someone"))}), "/etc/passwd (user names for root, nobody and nonroot): no entry for map[nonroot:65532:65532:]")
	})
	t.Run("a shell", func(t *testing.T) {
		check(t, nil, withFile("/bin/sh", entry{hdr: &tar.Header{Name: "bin/sh", Typeflag: tar.TypeReg, Mode: 0o755}}), "the image has a shell at /bin/sh")
	})
	t.Run("another file", func(t *testing.T) {
		check(t, nil, withFile("/etc/debug.conf", entry{hdr: &tar.Header{Name: "etc/debug.conf", Typeflag: tar.TypeReg, Mode: 0o644}}), "the image holds /etc/debug.conf, which neither the Dockerfile nor its base")
	})
	t.Run("a changed program", func(t *testing.T) {
		m := baseFS["/manager"]
		check(t, nil, withFile("/manager", entry{hdr: m.hdr, data: programs["chatserver"]}), "/manager in the image is not the manager program")
	})
}
