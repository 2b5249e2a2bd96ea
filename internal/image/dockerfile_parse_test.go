package image

// Reading the Dockerfile the way `docker build` would: stages, ARG defaults
// and build args, variable expansion, LABEL, ENV, USER, WORKDIR, ENTRYPOINT,
// CMD, EXPOSE and COPY --from, into the image its runtime stage describes.
// Whatever it cannot map onto the image target is returned as a problem
// naming the instruction.

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
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
		if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(name) {
			return 0, "", fmt.Errorf("variable form ${%s} is not understood by this test", string(rs[i+2:end]))
		}
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

func TestWordsSplitsAndExpandsAsDockerDoes(t *testing.T) {
	env := map[string]string{"V": "1.2", "EMPTY": ""}
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`a="x y" b=$V c=${V}`, []string{"a=x y", "b=1.2", "c=1.2"}},
		{`k='$V "q"' l="\"$V\""`, []string{`k=$V "q"`, `l="1.2"`}},
		{`${EMPTY:-dflt} ${V:-dflt} ${V:+alt} ${NONE:+alt}x`, []string{"dflt", "1.2", "alt", "x"}},
		{`a\ b $ c`, []string{"a b", "$", "c"}},
	} {
		got, err := words(tc.in, env)
		if err != nil || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("words(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`"open`, `'open`, `${OPEN`, `${V/x/y}`} {
		if _, err := words(bad, env); err == nil {
			t.Errorf("words(%s) accepted", bad)
		}
	}
}
