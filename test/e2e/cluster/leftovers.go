package cluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A node changes the host in ways a process exit does not undo: the
// kubelet's and containerd's hard-coded directories, global sysctls the
// kubelet rewrites, cgroups, mounts, the network namespace, and container
// processes (their shims outlive containerd). Start writes a record of what
// it is about to change before changing it; Stop, and the next Start after a
// run that died (SIGKILL, a failed start), undo exactly that.

// runDir holds the machine-wide lock and the record of the running cluster.
const runDir = "/run/parley-cluster"

// Hard-coded host paths the kubelet and containerd create whatever their
// flags say (device plugin socket, log symlinks, CNI result cache, shim
// sockets and runc's root).
var hostPaths = []string{"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd"}

// Global sysctls the kubelet rewrites (protectKernelDefaults: false; with
// true it refuses to start on this kind of machine instead).
var kubeletSysctls = []string{"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops", "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes"}

// record is what a running cluster has changed on the host.
type record struct {
	// StateDir holds the cluster's files (mounts under it are the node's).
	StateDir string `json:"stateDir"`
	// Sysctls are the values before the kubelet started.
	Sysctls map[string]string `json:"sysctls"`
	// NewPaths are hostPaths that did not exist before.
	NewPaths []string `json:"newPaths"`
	// Owner is the PID that started the cluster.
	Owner int `json:"owner"`
}

func recordPath() string { return filepath.Join(runDir, "record.json") }

// lockMachine takes the machine-wide lock, waiting up to wait for a running
// cluster (another test package, a demo) to stop.
func lockMachine(wait time.Duration) (*os.File, error) {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(runDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			owner := ""
			if r, rerr := readRecord(); rerr == nil && r != nil {
				owner = fmt.Sprintf(" (held by pid %d, state in %s)", r.Owner, r.StateDir)
			}
			return nil, fmt.Errorf("another local cluster runs on this machine%s; waited %s: %w", owner, wait, err)
		}
		time.Sleep(time.Second)
	}
}

func readRecord() (*record, error) {
	data, err := os.ReadFile(recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := &record{}
	return r, json.Unmarshal(data, r)
}

// newRecord notes the host's state before a node starts and saves it.
func newRecord(stateDir string) (*record, error) {
	r := &record{StateDir: stateDir, Sysctls: map[string]string{}, Owner: os.Getpid()}
	for _, s := range kubeletSysctls {
		v, err := os.ReadFile(sysctlPath(s))
		if err == nil {
			r.Sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			r.NewPaths = append(r.NewPaths, p)
		}
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return r, os.WriteFile(recordPath(), data, 0o644)
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// cleanUp undoes everything a node may have left: it is safe to run on a
// clean host, on a live record, and again after a partial run. It returns
// what it found to undo (for a log line) and the first failure.
func cleanUp(r *record) (found []string, err error) {
	note := func(s string) { found = append(found, s) }
	keep := func(e error) {
		if e != nil && err == nil {
			err = e
		}
	}
	// 1. Processes: every process in the node's network namespace (control
	// plane, containerd, kubelet, shims) and every container (in the pods'
	// cgroups; a container's own network namespace is not the node's).
	if pids := processesInNetns(netnsName); len(pids) > 0 {
		note(fmt.Sprintf("%d node processes", len(pids)))
		killAll(pids)
	}
	for _, cg := range podCgroups() {
		if pids := cgroupProcs(cg); len(pids) > 0 {
			note(fmt.Sprintf("%d container processes in %s", len(pids), cg))
			killAll(pids)
		}
	}
	// 2. Mounts under the state directory (pod volumes, network namespace
	// bind mounts, the kubelet's rshared root), deepest first.
	if r != nil && r.StateDir != "" {
		mounts := mountsUnder(r.StateDir)
		if len(mounts) > 0 {
			note(fmt.Sprintf("%d mounts", len(mounts)))
		}
		for _, m := range mounts {
			if e := unix.Unmount(m, unix.MNT_DETACH); e != nil && !errors.Is(e, unix.EINVAL) && !errors.Is(e, unix.ENOENT) {
				keep(fmt.Errorf("unmount %s: %w", m, e))
			}
		}
	}
	// 3. Cgroups the kubelet made, deepest first (empty once their processes are gone).
	for _, cg := range podCgroups() {
		note("cgroup " + cg)
		keep(removeCgroupTree(cg))
	}
	// 4. The network namespace: deleting it removes the veth pair, the host's
	// routes through it, the CNI bridge and every iptables rule in it.
	if _, e := os.Stat(filepath.Join("/run/netns", netnsName)); e == nil {
		note("network namespace " + netnsName)
		if out, e := exec.Command("ip", "netns", "del", netnsName).CombinedOutput(); e != nil {
			keep(fmt.Errorf("ip netns del %s: %v: %s", netnsName, e, out))
		}
	}
	// The veth may survive its namespace for a moment; make sure.
	if _, e := os.Stat(filepath.Join("/sys/class/net", hostVeth)); e == nil {
		_ = exec.Command("ip", "link", "del", hostVeth).Run()
	}
	if r == nil {
		return found, err
	}
	// 5. Global sysctls back to their values.
	for k, v := range r.Sysctls {
		cur, e := os.ReadFile(sysctlPath(k))
		if e == nil && strings.TrimSpace(string(cur)) != v {
			note(fmt.Sprintf("sysctl %s=%s (was %s)", k, strings.TrimSpace(string(cur)), v))
			keep(os.WriteFile(sysctlPath(k), []byte(v), 0o644))
		}
	}
	// 6. Host paths that were not there before.
	for _, p := range r.NewPaths {
		if _, e := os.Lstat(p); e == nil {
			note(p)
			for _, m := range mountsUnder(p) {
				_ = unix.Unmount(m, unix.MNT_DETACH)
			}
			keep(os.RemoveAll(p))
		}
	}
	keep(os.Remove(recordPath()))
	return found, err
}

// processesInNetns lists processes whose network namespace is the named one.
func processesInNetns(name string) []int {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		return nil
	}
	var pids []int
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var ns syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &ns) == nil && ns.Ino == st.Ino && ns.Dev == st.Dev {
			pids = append(pids, pid)
		}
	}
	return pids
}

// podCgroups are the kubelet's cgroup trees (cgroup v1: one per controller
// hierarchy; v2: one), and containerd's own namespace tree.
func podCgroups() []string {
	var out []string
	for _, root := range cgroupRoots() {
		for _, t := range []string{"kubepods", "k8s.io"} {
			p := filepath.Join(root, t)
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				out = append(out, p)
			}
		}
	}
	return out
}

func cgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var roots []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			roots = append(roots, p)
		}
	}
	return roots
}

// cgroupProcs lists every process in the tree under dir.
func cgroupProcs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if pid, err := strconv.Atoi(strings.TrimSpace(s.Text())); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killAll sends SIGKILL and waits (bounded) for the processes to be gone.
func killAll(pids []int) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for time.Now().Before(deadline) {
			if err := syscall.Kill(p, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			// A zombie whose parent is us is reaped by its Wait; one whose
			// parent died is reaped by init. Either way it holds nothing.
			if st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "stat")); err == nil && zombie(st) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func zombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// removeCgroupTree removes a cgroup directory and its children, deepest first.
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var first error
	for _, d := range dirs {
		var e error
		for range 50 { // a just-killed process leaves its cgroup a moment later
			if e = syscall.Rmdir(d); e == nil || errors.Is(e, syscall.ENOENT) {
				e = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if e != nil && first == nil {
			first = fmt.Errorf("remove cgroup %s: %w", d, e)
		}
	}
	return first
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if dir == "/" || mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// CleanUp undoes what a local cluster that did not stop cleanly left on
// this machine (`localcluster clean`); it refuses while one is running.
func CleanUp() error {
	lock, err := lockMachine(0)
	if err != nil {
		return err
	}
	defer lock.Close()
	r, err := readRecord()
	if err != nil {
		return err
	}
	found, err := cleanUp(r)
	if len(found) > 0 {
		fmt.Println("cleaned up:", strings.Join(found, ", "))
	}
	return err
}
