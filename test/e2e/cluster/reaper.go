package cluster

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// envtest starts etcd and kube-apiserver without a parent-death signal, so a
// test binary killed by a timeout would leave them running. The reaper is a
// small child (this binary, re-executed) that holds a pipe from us: when we
// exit for any reason the pipe closes and it kills the processes we told it
// about, if they are still the same processes (same start time).
const reaperEnv = "PARLEY_CLUSTER_REAPER"

func init() {
	if os.Getenv(reaperEnv) != "1" {
		return
	}
	type proc struct {
		pid   int
		start string
	}
	var procs []proc
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			pid, _ := strconv.Atoi(f[0])
			procs = append(procs, proc{pid, f[1]})
		}
	}
	for _, p := range procs {
		if startTime(p.pid) == p.start {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	os.Exit(0)
}

type reaper struct {
	cmd *exec.Cmd
	w   *os.File
}

func startReaper() (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{reaperEnv + "=1"}
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	r.Close()
	go func() { _ = cmd.Wait() }()
	return &reaper{cmd: cmd, w: w}, nil
}

// watchChildren registers our child processes whose command line mentions dir.
func (r *reaper) watchChildren(dir string) {
	if r == nil {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parentPID(pid) != os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), dir) {
			fmt.Fprintf(r.w, "%d %s\n", pid, startTime(pid))
		}
	}
}

// release tells the reaper the processes ended normally.
func (r *reaper) release() {
	if r == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.w.Close()
}

// statFields returns the fields of /proc/<pid>/stat after the command name.
func statFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func parentPID(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return -1
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func startTime(pid int) string {
	f := statFields(pid)
	if len(f) < 20 {
		return ""
	}
	return f[19]
}
