package install

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// goBuild is one `go build` invocation: where it runs, its environment, its
// -ldflags (variables normalised to ${NAME}) and the package it builds.
type goBuild struct {
	dir, pkg, ldflags string
	cgoDisabled       bool
}

// shellWords splits a command line on blanks, honouring double and single quotes.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

var makeVarRef = regexp.MustCompile(`\$\(([A-Z_]+)\)`)

// parseGoBuild reads one `[ENV=x ...] go build ...` command.
func parseGoBuild(t testing.TB, dir, command string, expand func(string) string) goBuild {
	t.Helper()
	b := goBuild{dir: dir}
	words := shellWords(command)
	i := 0
	for ; i < len(words) && strings.Contains(words[i], "="); i++ {
		if words[i] == "CGO_ENABLED=0" {
			b.cgoDisabled = true
		}
	}
	if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
		t.Fatalf("not a go build command: %q", command)
	}
	for j := i + 2; j < len(words); j++ {
		switch w := words[j]; {
		case w == "-ldflags":
			j++
			b.ldflags = expand(words[j])
		case w == "-o":
			j++
		case strings.HasPrefix(w, "-"):
			t.Errorf("go build flag %s in %q: add it to both the Makefile and the Dockerfile, and to this test", w, command)
		default:
			b.pkg = w
		}
	}
	return b
}

// makefileBuilds reads the `build` target's go build commands, expanding the
// chat server's `for d in cmd/*/` loop into one build per command directory.
func makefileBuilds(t testing.TB) []goBuild {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	recipe := regexp.MustCompile(`(?ms)^build:[^\n]*\n((?:\t[^\n]*\n)+)`).FindSubmatch(data)
	if recipe == nil {
		t.Fatal("Makefile has no build target")
	}
	ldflags := makeVariable(t, "LDFLAGS")
	expand := func(s string) string {
		s = strings.ReplaceAll(s, "$(LDFLAGS)", ldflags)
		return makeVarRef.ReplaceAllString(s, "$${$1}")
	}
	var builds []goBuild
	for _, line := range strings.Split(string(recipe[1]), "\n") {
		if !strings.Contains(line, "go build") {
			continue
		}
		dir := "."
		if strings.Contains(line, "cd chatserver") {
			dir = "chatserver"
		}
		// The command is the `;`/`&&`-separated part holding "go build".
		var cmd string
		for _, part := range regexp.MustCompile(`;|&&`).Split(line, -1) {
			if strings.Contains(part, "go build") {
				cmd = strings.TrimSpace(part)
				cmd = strings.TrimPrefix(cmd, "then ")
			}
		}
		b := parseGoBuild(t, dir, cmd, expand)
		if strings.Contains(b.pkg, "$$n") {
			dirs, _ := filepath.Glob(filepath.Join(root, dir, "cmd", "*"))
			for _, d := range dirs {
				c := b
				c.pkg = strings.ReplaceAll(b.pkg, "$$n", filepath.Base(d))
				builds = append(builds, c)
			}
			continue
		}
		builds = append(builds, b)
	}
	return builds
}

// dockerfile returns the Dockerfile's instructions with continuation lines joined.
func dockerfile(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		if cur.Len() > 0 {
			out = append(out, cur.String())
		}
		cur.Reset()
	}
	return out
}

func dockerfileBuilds(t testing.TB) []goBuild {
	t.Helper()
	var builds []goBuild
	for _, ins := range dockerfile(t) {
		if !strings.HasPrefix(ins, "RUN ") || !strings.Contains(ins, "go build") {
			continue
		}
		ld := regexp.MustCompile(`LDFLAGS="([^"]*)"`).FindStringSubmatch(ins)
		if ld == nil {
			t.Fatalf("the Dockerfile's build step sets no LDFLAGS: %s", ins)
		}
		expand := func(s string) string { return strings.ReplaceAll(s, "$LDFLAGS", ld[1]) }
		dir := "."
		for _, part := range strings.Split(ins, "&&") {
			part = strings.TrimSpace(part)
			switch {
			case part == "cd chatserver":
				dir = "chatserver"
			case strings.Contains(part, "go build"):
				builds = append(builds, parseGoBuild(t, dir, part, expand))
			}
		}
	}
	return builds
}

func TestDockerfileBuildsLikeTheMakefile(t *testing.T) {
	mk := makefileBuilds(t)
	df := dockerfileBuilds(t)
	if len(df) != 2 {
		t.Fatalf("the Dockerfile runs %d go builds, want 2 (manager and chatserver): %+v", len(df), df)
	}
	want := map[string]string{".": "./cmd/manager", "chatserver": "./cmd/chatserver"}
	for _, d := range df {
		if want[d.dir] != d.pkg {
			t.Errorf("Dockerfile builds %s in %s; want ./cmd/manager in the root module and ./cmd/chatserver in chatserver/", d.pkg, d.dir)
		}
		if !d.cgoDisabled {
			t.Errorf("Dockerfile build of %s is not CGO_ENABLED=0 (the runtime image is distroless static)", d.pkg)
		}
		if !slices.Contains(mk, d) {
			t.Errorf("Dockerfile build %+v has no identical build in the Makefile's build target:\n%+v", d, mk)
		}
		for _, x := range []string{"Version=${VERSION}", "Commit=${COMMIT}"} {
			if !strings.Contains(d.ldflags, x) {
				t.Errorf("ldflags %q do not stamp %s", d.ldflags, x)
			}
		}
	}
	checkStampTargets(t, df[0].ldflags)
}

// checkStampTargets makes sure every -X pkg.Var=... names a string variable
// that exists: the linker silently ignores a wrong one.
func checkStampTargets(t testing.TB, ldflags string) {
	t.Helper()
	words := strings.Fields(ldflags)
	for i, w := range words {
		if w != "-X" || i+1 >= len(words) {
			continue
		}
		sym, _, _ := strings.Cut(words[i+1], "=")
		dot := strings.LastIndex(sym, ".") // "github.com/.../version.Version"
		pkgPath, name := sym[:dot], sym[dot+1:]
		rel, ok := strings.CutPrefix(pkgPath, "github.com/parley-chat/parley/")
		if !ok {
			t.Errorf("-X %s: not a Parley package", sym)
			continue
		}
		dir := filepath.Join(root, filepath.FromSlash(rel))
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
		if err != nil {
			t.Errorf("-X %s: package %s: %v", sym, rel, err)
			continue
		}
		found := false
		for _, p := range pkgs {
			for _, f := range p.Files {
				for _, d := range f.Decls {
					g, ok := d.(*ast.GenDecl)
					if !ok || g.Tok != token.VAR {
						continue
					}
					for _, s := range g.Specs {
						vs := s.(*ast.ValueSpec)
						for _, n := range vs.Names {
							if n.Name == name {
								found = true
							}
						}
					}
				}
			}
		}
		if !found {
			t.Errorf("-X %s: package %s has no variable %s, so the stamp is silently dropped", sym, rel, name)
		}
	}
}

func TestDockerfileImage(t *testing.T) {
	ins := dockerfile(t)
	var froms, copies, users, entry []string
	var mounts string
	for _, i := range ins {
		switch {
		case strings.HasPrefix(i, "FROM "):
			froms = append(froms, i)
		case strings.HasPrefix(i, "COPY --from="):
			copies = append(copies, i)
		case strings.HasPrefix(i, "USER "):
			users = append(users, i)
		case strings.HasPrefix(i, "ENTRYPOINT "):
			entry = append(entry, i)
		case strings.HasPrefix(i, "RUN ") && strings.Contains(i, "go build"):
			mounts = i
		}
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	args := strings.Join(ins, "\n")
	if goVersion == nil || !strings.Contains(args, "ARG GO_VERSION="+string(goVersion[1])) || !strings.Contains(froms[0], "golang:${GO_VERSION}") {
		t.Errorf("the builder must be golang:<go.mod's go version %s>: %v", goVersion[1], froms)
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[1], "FROM gcr.io/distroless/static") || !strings.HasSuffix(froms[1], ":nonroot") {
		t.Errorf("the runtime stage must be distroless static nonroot: %v", froms)
	}
	for _, m := range []string{"--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
		if !strings.Contains(mounts, m) {
			t.Errorf("the build step lacks %s", m)
		}
	}
	if !slices.Equal(copies, []string{"COPY --from=builder /out/manager /manager", "COPY --from=builder /out/chatserver /chatserver"}) {
		t.Errorf("the image must hold /manager and /chatserver: %v", copies)
	}
	if len(users) != 1 || users[0] != "USER 65532:65532" {
		t.Errorf("the image must run as the numeric non-root user 65532: %v", users)
	}
	if len(entry) != 1 || entry[0] != `ENTRYPOINT ["/manager"]` {
		t.Errorf("entrypoint: %v", entry)
	}
}

// TestDockerignoreKeepsEveryBuildInput lists every file the two builds read
// (Go sources and embedded files of every package in the repository that
// cmd/manager and chatserver/cmd/chatserver depend on) and checks none is
// excluded from the Docker build context.
func TestDockerignoreKeepsEveryBuildInput(t *testing.T) {
	patterns := dockerignore(t)
	var inputs []string
	for _, m := range []struct{ dir, pkg string }{{".", "./cmd/manager"}, {"chatserver", "./cmd/chatserver"}} {
		if _, err := os.Stat(filepath.Join(root, m.dir, m.pkg)); err != nil {
			t.Errorf("%s/%s does not exist: %v", m.dir, m.pkg, err)
			continue
		}
		cmd := exec.Command("go", "list", "-deps", "-f", `{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`, m.pkg)
		cmd.Dir = filepath.Join(root, m.dir)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", m.pkg, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if rel, err := filepath.Rel(root, f); err == nil && !strings.HasPrefix(rel, "..") {
				inputs = append(inputs, filepath.ToSlash(rel))
			}
		}
	}
	inputs = append(inputs, "go.mod", "go.sum", "chatserver/go.mod", "chatserver/go.sum")
	for _, f := range inputs {
		if dockerignored(patterns, f) {
			t.Errorf(".dockerignore excludes %s, which the image build reads", f)
		}
	}
	if len(inputs) < 10 {
		t.Errorf("found only %d build inputs: %v", len(inputs), inputs)
	}
	for _, f := range []string{".git/HEAD", "bin/helm-" + helmVersion, "charts/parley/Chart.yaml", "test/install/image_test.go", "chatserver/hub/hub_test.go"} {
		if !dockerignored(patterns, f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

func dockerignore(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var p []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			p = append(p, line)
		}
	}
	return p
}

// dockerignored applies .dockerignore patterns the way Docker does for the
// forms used here: a pattern matches a path or any of its parent directories,
// "**/" matches any number of leading directories, "!" re-includes, last match wins.
func dockerignored(patterns []string, file string) bool {
	ignored := false
	for _, p := range patterns {
		negate := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		if matchesPathOrParent(p, file) {
			ignored = !negate
		}
	}
	return ignored
}

func matchesPathOrParent(pattern, file string) bool {
	parts := strings.Split(file, "/")
	for i := 1; i <= len(parts); i++ {
		prefix := strings.Join(parts[:i], "/")
		if ok, _ := path.Match(pattern, prefix); ok {
			return true
		}
		if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
			for j := 0; j < i; j++ {
				if ok, _ := path.Match(rest, strings.Join(parts[j:i], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}
