package image

// This file reads the repository's Dockerfile the way `docker build` would
// (stages, ARG defaults and build args, variable expansion, LABEL, ENV, USER,
// WORKDIR, ENTRYPOINT, CMD, EXPOSE, COPY --from) into the image it describes,
// using a model of its runtime base (distroless static-debian12:nonroot), and
// compares that with the image `make image` builds. Any instruction it cannot
// map onto the image target is reported by name, so a Dockerfile change that
// the image target does not follow fails the test.

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts
	cmd  string // upper-case keyword
	args string
}

func (i instruction) String() string {
	return fmt.Sprintf("Dockerfile:%d %s %s", i.line, i.cmd, i.args)
}

func parseDockerfile(src string) ([]instruction, error) {
	var out []instruction
	var cur strings.Builder
	start := 0
	for n, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if regexp.MustCompile(`^#\s*escape\s*=`).MatchString(trimmed) && len(out) == 0 {
			return nil, fmt.Errorf("Dockerfile:%d: the escape directive is not understood by this test", n+1)
		}
		// Comment lines are dropped, also inside a continued instruction.
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n + 1
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		kw, args, _ := strings.Cut(text, " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(kw), args: strings.TrimSpace(args)})
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("Dockerfile:%d: the last instruction ends with a line continuation", start)
	}
	return out, nil
}

// words splits an instruction's arguments as BuildKit's shell lexer does:
// blanks separate words, quotes group them (single quotes literally), a
// backslash escapes the next character, and $VAR, ${VAR}, ${VAR:-default}
// and ${VAR:+alternative} expand outside single quotes.
func words(s string, env map[string]string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; {
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			inWord = true
		case r == '\'':
			end := strings.IndexRune(string(rs[i+1:]), '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated single quote in %q", s)
			}
			quoted := []rune(string(rs[i+1:])[:end])
			cur.WriteString(string(quoted))
			i += len(quoted) + 1
			inWord = true
		case r == '"':
			inWord = true
			i++
			for ; i < len(rs) && rs[i] != '"'; i++ {
				switch {
				case rs[i] == '\\' && i+1 < len(rs) && strings.ContainsRune(`"\$`, rs[i+1]):
					i++
					cur.WriteRune(rs[i])
				case rs[i] == '$':
					end, v, err := expandVar(rs, i, env)
					if err != nil {
						return nil, err
					}
					cur.WriteString(v)
					i = end
				default:
					cur.WriteRune(rs[i])
				}
			}
			if i >= len(rs) {
				return nil, fmt.Errorf("unterminated double quote in %q", s)
			}
		case r == '$':
			end, v, err := expandVar(rs, i, env)
			if err != nil {
				return nil, err
			}
			cur.WriteString(v)
			i = end
			inWord = true
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// expandVar reads the reference at rs[i] ('$') and returns the index of its
// last rune and its value.
func expandVar(rs []rune, i int, env map[string]string) (int, string, error) {
	if i+1 < len(rs) && rs[i+1] == '{' {
		end := i + 2
		for end < len(rs) && rs[end] != '}' {
			end++
		}
		if end >= len(rs) {
			return 0, "", fmt.Errorf("unterminated ${ in %q", string(rs))
		}
		name, mod, modified := strings.Cut(string(rs[i+2:end]), ":")
		v, set := env[name]
		switch {
		case !modified:
		case strings.HasPrefix(mod, "-"):
			if !set || v == "" {
				v = mod[1:]
			}
		case strings.HasPrefix(mod, "+"):
			if set && v != "" {
				v = mod[1:]
			} else {
				v = ""
			}
		default:
			return 0, "", fmt.Errorf("variable form ${%s} is not understood by this test", string(rs[i+2:end]))
		}
		return end, v, nil
	}
	end := i + 1
	for end < len(rs) && (rs[end] == '_' || unicode.IsLetter(rs[end]) || unicode.IsDigit(rs[end])) {
		end++
	}
	if end == i+1 {
		return i, "$", nil
	}
	return end - 1, env[string(rs[i+1:end])], nil
}

// execForm reads ENTRYPOINT/CMD: a JSON array is run as is; anything else is
// the shell form, which Docker runs with /bin/sh -c.
func execForm(args string) (argv []string, shell bool) {
	if strings.HasPrefix(args, "[") && json.Unmarshal([]byte(args), &argv) == nil {
		return argv, false
	}
	return []string{"/bin/sh", "-c", args}, true
}

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

// stage is one FROM ... of the Dockerfile.
type stage struct {
	name    string
	ins     []instruction
	outputs map[string]string // go build -o path → program
}

// described is the image a Dockerfile describes.
type described struct {
	base   string
	model  baseModel
	config v1.Config
	ports  map[string]string // "8080/tcp" → instruction
	origin map[string]string // "User", "Env FOO", "Label k", ... → where it was set
	files  []copied
}

// copied is a program a COPY --from puts into the image.
type copied struct {
	dest, program string
	mode          int64
	uid, gid      int
	from          instruction
}

// describe reads the Dockerfile's runtime (last) stage with build args.
func describe(src string, buildArgs map[string]string) (*described, []string) {
	ins, err := parseDockerfile(src)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var problems []string
	globals := map[string]string{}
	var stages []*stage
	var froms []instruction
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			stages = append(stages, &stage{outputs: map[string]string{}})
			froms = append(froms, in)
		case len(stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			if given, ok := buildArgs[k]; ok {
				v = given
			}
			globals[k] = v
		case len(stages) == 0:
			problems = append(problems, fmt.Sprintf("%s: only ARG may come before the first FROM", in))
		default:
			s := stages[len(stages)-1]
			s.ins = append(s.ins, in)
		}
	}
	if len(stages) == 0 {
		return nil, []string{"the Dockerfile has no FROM"}
	}
	for i, s := range stages {
		ws, err := words(froms[i].args, globals)
		if err != nil {
			return nil, []string{fmt.Sprintf("%s: %v", froms[i], err)}
		}
		for j := 0; j+2 < len(ws); j++ {
			if strings.EqualFold(ws[j+1], "AS") {
				s.name = ws[j+2]
			}
		}
		for _, in := range s.ins {
			if in.cmd != "RUN" {
				continue
			}
			for _, part := range regexp.MustCompile(`&&|;`).Split(in.args, -1) {
				w := strings.Fields(part)
				for k := 0; k+1 < len(w); k++ {
					if w[k] == "go" && w[k+1] == "build" {
						out := ""
						for m := k + 2; m+1 < len(w); m++ {
							if w[m] == "-o" {
								out = w[m+1]
							}
						}
						if out != "" {
							s.outputs[out] = path.Base(w[len(w)-1])
						}
					}
				}
			}
		}
	}
	last := len(stages) - 1
	fromWords, _ := words(froms[last].args, globals)
	var base string
	for _, w := range fromWords {
		if !strings.HasPrefix(w, "--") {
			base = w
			break
		}
	}
	d := &described{base: base, ports: map[string]string{}, origin: map[string]string{}}
	if i := strings.Index(base, "@"); i >= 0 {
		base = base[:i] // a digest pin does not change what the base is
	}
	model, ok := baseModels[base]
	if !ok {
		return nil, append(problems, fmt.Sprintf("%s: the runtime base %s is unknown to this test: model what it gives the programs in baseModels, and the image target's base to match", froms[last], base))
	}
	d.model = model
	d.config = model.config
	d.config.Env = append([]string(nil), model.config.Env...)
	d.config.Labels = map[string]string{}
	for _, k := range []string{"User", "WorkingDir", "Entrypoint", "Cmd"} {
		d.origin[k] = "the base " + d.base
	}
	for _, e := range d.config.Env {
		k, _, _ := strings.Cut(e, "=")
		d.origin["Env "+k] = "the base " + d.base
	}

	env := map[string]string{}
	for _, e := range d.config.Env {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	setEnv := func(in instruction, k, v string) {
		env[k] = v
		d.origin["Env "+k] = in.String()
		for i, e := range d.config.Env {
			if strings.HasPrefix(e, k+"=") {
				d.config.Env[i] = k + "=" + v
				return
			}
		}
		d.config.Env = append(d.config.Env, k+"="+v)
	}
	stageByName := func(n string) *stage {
		for i, s := range stages[:last] {
			if s.name == n || strconv.Itoa(i) == n {
				return s
			}
		}
		return nil
	}
	cmdSet := false
	for _, in := range stages[last].ins {
		ws, err := words(in.args, env)
		if err != nil && in.cmd != "ENTRYPOINT" && in.cmd != "CMD" {
			problems = append(problems, fmt.Sprintf("%s: %v", in, err))
			continue
		}
		switch in.cmd {
		case "ARG":
			for _, w := range ws {
				k, v, hasDefault := strings.Cut(w, "=")
				switch given, ok := buildArgs[k]; {
				case ok:
					env[k] = given
				case hasDefault:
					env[k] = v
				default:
					env[k] = globals[k]
				}
			}
		case "LABEL", "ENV":
			pairs := map[string]string{}
			var order []string
			if len(ws) >= 2 && !strings.Contains(ws[0], "=") {
				// The old `ENV key value` form: the rest of the line is the value.
				pairs[ws[0]], order = strings.Join(ws[1:], " "), []string{ws[0]}
			} else {
				for _, w := range ws {
					k, v, ok := strings.Cut(w, "=")
					if !ok {
						problems = append(problems, fmt.Sprintf("%s: %q is not key=value", in, w))
						continue
					}
					pairs[k] = v
					order = append(order, k)
				}
			}
			for _, k := range order {
				if in.cmd == "ENV" {
					setEnv(in, k, pairs[k])
				} else {
					d.config.Labels[k] = pairs[k]
					d.origin["Label "+k] = in.String()
				}
			}
		case "USER":
			d.config.User, d.origin["User"] = strings.Join(ws, " "), in.String()
		case "WORKDIR":
			wd := strings.Join(ws, " ")
			if !path.IsAbs(wd) {
				wd = path.Join(d.config.WorkingDir, wd)
			}
			d.config.WorkingDir, d.origin["WorkingDir"] = wd, in.String()
		case "ENTRYPOINT", "CMD":
			argv, shell := execForm(in.args)
			if shell {
				problems = append(problems, fmt.Sprintf("%s: the shell form runs /bin/sh, which the image does not have (and must not)", in))
			}
			if in.cmd == "ENTRYPOINT" {
				d.config.Entrypoint, d.origin["Entrypoint"] = argv, in.String()
				if !cmdSet {
					// Docker drops a CMD inherited from the base when ENTRYPOINT is set.
					d.config.Cmd = nil
				}
			} else {
				d.config.Cmd, d.origin["Cmd"], cmdSet = argv, in.String(), true
			}
		case "EXPOSE":
			for _, p := range ws {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				d.ports[strings.ToLower(p)] = in.String()
			}
		case "COPY":
			problems = append(problems, d.copyInstruction(in, ws, stageByName)...)
		default:
			problems = append(problems, fmt.Sprintf("%s: `make image` (internal/image) does not reproduce %s; add it to image.Parley and teach this test", in, in.cmd))
		}
	}
	return d, problems
}

// copyInstruction records the programs a COPY --from=<stage> copies; any
// other COPY is something the image target does not do.
func (d *described) copyInstruction(in instruction, ws []string, stageByName func(string) *stage) []string {
	var from, chown, chmod string
	for len(ws) > 0 && strings.HasPrefix(ws[0], "--") {
		k, v, _ := strings.Cut(strings.TrimPrefix(ws[0], "--"), "=")
		switch k {
		case "from":
			from = v
		case "chown":
			chown = v
		case "chmod":
			chmod = v
		case "link":
		default:
			return []string{fmt.Sprintf("%s: COPY --%s is not understood by this test", in, k)}
		}
		ws = ws[1:]
	}
	if strings.HasPrefix(strings.Join(ws, " "), "[") {
		if err := json.Unmarshal([]byte(strings.Join(ws, " ")), &ws); err != nil {
			return []string{fmt.Sprintf("%s: %v", in, err)}
		}
	}
	if len(ws) < 2 {
		return []string{fmt.Sprintf("%s: want sources and a destination", in)}
	}
	st := stageByName(from)
	if from == "" || st == nil {
		return []string{fmt.Sprintf("%s: `make image` copies only programs built in an earlier stage (it has no build context or other images)", in)}
	}
	srcs, dest := ws[:len(ws)-1], ws[len(ws)-1]
	if !path.IsAbs(dest) {
		dest = path.Join(d.config.WorkingDir, dest)
	}
	mode := int64(0o755) // go build's output
	if chmod != "" {
		m, err := strconv.ParseInt(chmod, 8, 32)
		if err != nil {
			return []string{fmt.Sprintf("%s: --chmod=%s: %v", in, chmod, err)}
		}
		mode = m
	}
	uid, gid := 0, 0
	if chown != "" {
		u, g, _ := strings.Cut(chown, ":")
		var err1, err2 error
		uid, err1 = strconv.Atoi(u)
		gid, err2 = strconv.Atoi(g)
		if g == "" {
			gid, err2 = uid, nil
		}
		if err1 != nil || err2 != nil {
			return []string{fmt.Sprintf("%s: --chown=%s: this test understands numeric ids only", in, chown)}
		}
	}
	var problems []string
	for _, src := range srcs {
		prog, ok := st.outputs[src]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: %s is not a program `go build -o` makes in stage %s; `make image` copies only programs from bin/", in, src, from))
			continue
		}
		to := dest
		if strings.HasSuffix(dest, "/") || len(srcs) > 1 {
			to = path.Join(dest, path.Base(src))
		}
		d.files = append(d.files, copied{dest: to, program: prog, mode: mode, uid: uid, gid: gid, from: in})
	}
	return problems
}

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
