package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// The tests build small static Go programs instead of the real manager and
// chat server: they are real ELF Go binaries (so the image target inspects
// them as it would the real ones) but build in a second.
var stubSources = map[string]string{
	"manager":    `package main; import "fmt"; func main() { fmt.Println("manager stub") }`,
	"chatserver": `package main; import "fmt"; func main() { fmt.Println("chatserver stub") }`,
	// zones looks a zone up by name, as a program honouring a configured time zone would.
	"zones": `package main; import ("fmt"; "os"; "time"); func main() { fmt.Println(time.LoadLocation(os.Args[1])) }`,
	// zones-embedded carries its own zone database.
	"zones-embedded": `package main; import ("fmt"; "os"; "time"; _ "time/tzdata"); func main() { fmt.Println(time.LoadLocation(os.Args[1])) }`,
	// probe reports what a Go program finds at run time: the system CA
	// roots, its user, its working directory and whether /tmp takes a file.
	"probe": `package main
import ("crypto/x509"; "fmt"; "os"; "os/user")
func main() {
	pool, err := x509.SystemCertPool()
	if err != nil { fmt.Println("roots:", err); os.Exit(1) }
	u, err := user.Current()
	if err != nil { fmt.Println("user:", err); os.Exit(1) }
	wd, _ := os.Getwd()
	f, err := os.CreateTemp("", "probe")
	if err == nil { f.Close(); os.Remove(f.Name()) }
	fmt.Printf("roots=%d user=%s home=%s wd=%s args=%q tmp=%v\n", len(pool.Subjects()), u.Username, u.HomeDir, wd, os.Args[1:], err)
}`,
}

var (
	stubMu   sync.Mutex
	stubDir  string
	stubBins = map[string]string{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stubDir != "" {
		os.RemoveAll(stubDir)
	}
	os.Exit(code)
}

// stub returns the path of the named stub program, built once per test run
// the way `make build` builds (CGO_ENABLED=0, -ldflags "-s -w").
func stub(t testing.TB, name string) string {
	t.Helper()
	stubMu.Lock()
	defer stubMu.Unlock()
	if p, ok := stubBins[name]; ok {
		return p
	}
	src, ok := stubSources[name]
	if !ok {
		t.Fatalf("no stub program %q", name)
	}
	if stubDir == "" {
		d, err := os.MkdirTemp("", "parley-image-stubs-")
		if err != nil {
			t.Fatal(err)
		}
		stubDir = d
	}
	mod := filepath.Join(stubDir, "src-"+name)
	if err := os.MkdirAll(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module stub\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mod, "main.go"), []byte(src+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(stubDir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build stub %s: %v\n%s", name, err, msg)
	}
	stubBins[name] = out
	return out
}

// stubBinaries maps Parley's programs to the manager and chatserver stubs.
func stubBinaries(t testing.TB) map[string]string {
	return map[string]string{"manager": stub(t, "manager"), "chatserver": stub(t, "chatserver")}
}

const (
	testVersion = "v9.8.7-test"
	testCommit  = "feedc0de"
)

var testCreated = time.Unix(1_700_000_000, 0)

func buildStubImage(t testing.TB, binaries map[string]string) *Result {
	t.Helper()
	res, err := Build(Parley, Options{Binaries: binaries, Version: testVersion, Commit: testCommit, Created: testCreated})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

var (
	stubImageOnce sync.Once
	stubImage     *Result
	stubImageErr  error
)

// sharedStubImage is Parley's image around the two stubs, built once.
func sharedStubImage(t testing.TB) *Result {
	t.Helper()
	bins := stubBinaries(t)
	stubImageOnce.Do(func() {
		stubImage, stubImageErr = Build(Parley, Options{Binaries: bins, Version: testVersion, Commit: testCommit, Created: testCreated})
	})
	if stubImageErr != nil {
		t.Fatal(stubImageErr)
	}
	return stubImage
}

// entry is one path of an image's flattened filesystem.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// flatten reads the filesystem a container of img would see, keyed by
// absolute path.
func flatten(t testing.TB, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, tr); err != nil {
			t.Fatal(err)
		}
		out[path.Clean("/"+h.Name)] = entry{hdr: h, data: buf.Bytes()}
	}
}

func readAll(t testing.TB, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
