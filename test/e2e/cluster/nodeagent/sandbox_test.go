package nodeagent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func buildPodserver(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the node agent needs root (network and mount namespaces per pod)")
	}
	out := filepath.Join(t.TempDir(), "podserver")
	cmd := exec.Command("go", "build", "-o", out, "../testdata/podserver")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build podserver: %v\n%s", err, b)
	}
	return out
}

func startPodserver(t *testing.T, bin string, ip netip.Addr, env ...string) (*sandbox, *process, string) {
	t.Helper()
	dir := t.TempDir()
	sb, err := newSandbox(dir, "pod-"+ip.String(), ip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close)
	host := netip.AddrFrom4([4]byte{127, ip.As4()[1], ip.As4()[2], ip.As4()[3]})
	if err := sb.netns.Expose(host.String()+":8080", 8080); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p, err := sb.start(runSpec{
		name: "app", hostname: "pod-" + ip.String(), image: Image{Files: map[string]string{"/podserver": bin}},
		argv: []string{"/podserver"}, env: append([]string{"PORT=8080"}, env...), uid: 65532, gid: 65532, log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
	})
	return sb, p, "http://" + host.String() + ":8080"
}

func get(t *testing.T, url string) string {
	t.Helper()
	var err error
	for range 50 {
		var resp *http.Response
		resp, err = (&http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, err)
	return ""
}

// Two pods listen on the same port, each in its own network namespace, and
// each is reached through its own loopback address.
func TestPodsShareAPortInTheirOwnNamespaces(t *testing.T) {
	bin := buildPodserver(t)
	_, _, a := startPodserver(t, bin, netip.MustParseAddr("10.201.7.2"))
	_, _, b := startPodserver(t, bin, netip.MustParseAddr("10.201.7.3"))
	if got := get(t, a+"/id"); got != "uid=65532 gid=65532 groups=[]" {
		t.Errorf("pod a runs as %q", got)
	}
	if get(t, a+"/hostname") != "pod-10.201.7.2" || get(t, b+"/hostname") != "pod-10.201.7.3" {
		t.Error("each pod should see its own hostname")
	}
}

// A container that exits is noticed with its exit code; one that is killed
// reports 128+signal.
func TestProcessExitIsObserved(t *testing.T) {
	bin := buildPodserver(t)
	_, p, url := startPodserver(t, bin, netip.MustParseAddr("10.201.7.4"), "EXIT_CODE=3")
	get(t, url+"/hostname")
	resp, err := http.Post(url+"/exit", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("exit not observed")
	}
	if p.exitCode != 3 {
		t.Errorf("exit code %d, want 3", p.exitCode)
	}
	_, p2, url2 := startPodserver(t, bin, netip.MustParseAddr("10.201.7.5"))
	get(t, url2+"/hostname")
	if err := p2.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p2.done
	if p2.exitCode != 137 || p2.signal != "killed" {
		t.Errorf("exit %d signal %q, want 137 killed", p2.exitCode, p2.signal)
	}
}

// A pod reaches a shared host endpoint at the host's own address, and
// nothing else of the host.
func TestHostEndpointsAreTheOnlyWayOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("host says hi"))
			c.Close()
		}
	}()
	ns, err := newNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := ns.Dial(ctx, l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("pod reached an unshared host port")
	}
	if err := ns.ShareHostEndpoint(l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	c, err := ns.Dial(ctx, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(b), "host says hi") {
		t.Errorf("got %q", b)
	}
}
