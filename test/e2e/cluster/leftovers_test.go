package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/testenv"
)

// The child half of TestSIGKILLedClusterIsCleanedUpByTheNext: start a node,
// say so, and wait to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PARLEY_TEST_NODE_CHILD"); dir != "" {
		lockHeldByParent = true // the parent holds it, and keeps it after our death
		c, err := Start(context.Background(), Options{Assets: os.Getenv("PARLEY_TEST_ASSETS"), RepoRoot: testenv.RepoRoot(), StateDir: dir, LockWait: time.Minute})
		if err != nil {
			fmt.Println("start failed:", err)
			os.Exit(1)
		}
		fmt.Println("node ready", c.StateDir)
		select {}
	}
	os.Exit(m.Run())
}

// TestSIGKILLedClusterIsCleanedUpByTheNext kills a process that runs a node
// (SIGKILL: no deferred cleanup runs) and checks that what it changed on the
// host is undone by the cleanup the next Start runs first: processes (the
// containers' shims outlive containerd), mounts, cgroups, the network
// namespace with its routes, sysctls, the kubelet's hard-coded directories.
func TestSIGKILLedClusterIsCleanedUpByTheNext(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the local cluster needs root")
	}
	assets, err := DefaultAssets(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	// Hold the machine lock for the child and after its death, so no other
	// package's cluster starts (and cleans up) between the kill and the check.
	lock, err := lockMachine(20 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := cleanUp(mustRecord(t)); err != nil {
		t.Fatal(err)
	}
	before := snapshotHost()
	state := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PARLEY_TEST_NODE_CHILD="+state, "PARLEY_TEST_ASSETS="+assets)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Whatever fails below, the child dies and its node is undone.
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_, _ = cleanUp(mustRecord(t))
	}()
	ready := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			ready <- s.Text()
		}
		close(ready)
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "node ready") {
			t.Fatalf("child: %s", line)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the child's node was not ready in time")
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	during := snapshotHost()
	if !during.netns || during.podCgroups == 0 || during.mounts(state) == 0 {
		t.Fatalf("the running node shows no netns/pod cgroups/mounts (%+v): the check below would prove nothing", during)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	time.Sleep(time.Second)
	dead := snapshotHost()
	if !dead.netns || dead.podCgroups == 0 {
		t.Fatalf("after SIGKILL nothing was left (%+v); the kill did not test the cleanup", dead)
	}
	t.Logf("left by the killed run: netns %v, %d pod cgroups, %d container processes, %d mounts", dead.netns, dead.podCgroups, dead.podProcs, dead.mounts(state))

	if _, err := cleanUp(mustRecord(t)); err != nil {
		t.Fatal(err)
	}
	after := snapshotHost()
	if after.netns || after.podCgroups != 0 || after.podProcs != 0 || after.mounts(state) != 0 || after.veth {
		t.Errorf("left after cleanup: %+v (mounts under state: %d)", after, after.mounts(state))
	}
	for k, v := range before.sysctls {
		if after.sysctls[k] != v {
			t.Errorf("sysctl %s = %s after cleanup, was %s", k, after.sysctls[k], v)
		}
	}
	for p, existed := range before.paths {
		if !existed && after.paths[p] {
			t.Errorf("%s was created by the node and is still there", p)
		}
	}
	if _, err := os.Stat(recordPath()); err == nil {
		t.Error("the record of the killed run is still there")
	}
}

func mustRecord(t *testing.T) *record {
	t.Helper()
	r, err := readRecord()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type hostState struct {
	netns, veth          bool
	podCgroups, podProcs int
	sysctls              map[string]string
	paths                map[string]bool
	mountList            []string
}

func (h hostState) mounts(dir string) int {
	n := 0
	for _, m := range h.mountList {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			n++
		}
	}
	return n
}

func snapshotHost() hostState {
	h := hostState{sysctls: map[string]string{}, paths: map[string]bool{}}
	_, err := os.Stat(filepath.Join("/run/netns", netnsName))
	h.netns = err == nil
	_, err = os.Stat(filepath.Join("/sys/class/net", hostVeth))
	h.veth = err == nil
	for _, cg := range podCgroups() {
		h.podCgroups++
		h.podProcs += len(cgroupProcs(cg))
	}
	for _, s := range kubeletSysctls {
		v, _ := os.ReadFile(sysctlPath(s))
		h.sysctls[s] = strings.TrimSpace(string(v))
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		h.paths[p] = err == nil
	}
	h.mountList = mountsUnder("/")
	return h
}

func TestZombieAndMountParsing(t *testing.T) {
	if !zombie([]byte("123 (a (b) c) Z 1 2 3")) || zombie([]byte("123 (sleep) S 1 2")) {
		t.Error("zombie() misreads /proc/<pid>/stat")
	}
	if got := unescapeMount(`/tmp/a\040b`); got != "/tmp/a b" {
		t.Errorf("unescapeMount = %q", got)
	}
}
