package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports (the kernel fixes it for
// user space regardless of CONFIG_HZ).
const clockTicks = 100

// ProcSample is one reading of a process's CPU time and memory.
type ProcSample struct {
	PID int
	// CPU is utime+stime of all the process's threads; Sys is the stime part
	// (time in the kernel: for a chat server mostly socket writes).
	CPU time.Duration
	Sys time.Duration
	// RSS is the resident set size in bytes.
	RSS int64
}

// ParseStat extracts utime+stime from the contents of /proc/<pid>/stat. The
// command name (field 2) is parenthesised and may contain spaces and
// parentheses, so fields are counted from the last ')'.
func ParseStat(data []byte) (time.Duration, error) {
	u, s, err := ParseStatSplit(data)
	return u + s, err
}

// ParseStatSplit extracts utime and stime separately.
func ParseStatSplit(data []byte) (user, sys time.Duration, err error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("proc stat: no command name")
	}
	fields := strings.Fields(string(data[end+1:]))
	// After the name: state(3) ppid(4) ... utime(14) stime(15); index 0 is field 3.
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("proc stat: %d fields after the name, want at least 13", len(fields))
	}
	utime, err := strconv.ParseUint(fields[11], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("proc stat utime: %w", err)
	}
	stime, err := strconv.ParseUint(fields[12], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("proc stat stime: %w", err)
	}
	return time.Duration(utime) * time.Second / clockTicks, time.Duration(stime) * time.Second / clockTicks, nil
}

// ParseStatusRSS extracts VmRSS (in bytes) from the contents of /proc/<pid>/status.
func ParseStatusRSS(data []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc status: unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc status VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("proc status: no VmRSS line (kernel thread or zombie?)")
}

// ReadProc samples one process from /proc.
func ReadProc(pid int) (ProcSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, err
	}
	user, sys, err := ParseStatSplit(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, err
	}
	rss, err := ParseStatusRSS(status)
	if err != nil {
		return ProcSample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return ProcSample{PID: pid, CPU: user + sys, Sys: sys, RSS: rss}, nil
}

// ProcTotals sums CPU and RSS over a set of processes.
type ProcTotals struct {
	CPU time.Duration
	RSS int64
	// ByPID keeps each process's sample.
	ByPID map[int]ProcSample
}

// ReadProcs samples every pid; a process that is gone is an error.
func ReadProcs(pids []int) (ProcTotals, error) {
	t := ProcTotals{ByPID: map[int]ProcSample{}}
	for _, pid := range pids {
		s, err := ReadProc(pid)
		if err != nil {
			return ProcTotals{}, err
		}
		t.CPU += s.CPU
		t.RSS += s.RSS
		t.ByPID[pid] = s
	}
	return t, nil
}

// CPUDelta is the CPU time the processes spent between two samples. Processes
// that appear only in the later sample (started in between) count whole.
func CPUDelta(before, after ProcTotals) time.Duration {
	var d time.Duration
	for pid, a := range after.ByPID {
		d += a.CPU - before.ByPID[pid].CPU
	}
	return d
}

// SysDelta is the kernel part of CPUDelta.
func SysDelta(before, after ProcTotals) time.Duration {
	var d time.Duration
	for pid, a := range after.ByPID {
		d += a.Sys - before.ByPID[pid].Sys
	}
	return d
}

// PIDsByName lists the processes whose /proc/<pid>/comm is one of names
// (e.g. "postgres", "beam.smp", "redis-server"): the shared services behind a
// server, whose CPU is reported beside the server's own.
func PIDsByName(names ...string) ([]int, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		if want[strings.TrimSpace(string(comm))] {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// ReadProcsLenient samples the pids that still exist (processes of shared
// services come and go, e.g. PostgreSQL backends).
func ReadProcsLenient(pids []int) ProcTotals {
	t := ProcTotals{ByPID: map[int]ProcSample{}}
	for _, pid := range pids {
		if s, err := ReadProc(pid); err == nil {
			t.CPU += s.CPU
			t.RSS += s.RSS
			t.ByPID[pid] = s
		}
	}
	return t
}
