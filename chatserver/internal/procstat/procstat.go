// Package procstat reads processes' CPU time and memory from /proc, for
// benchmarks that report what a server and the shared services behind it
// (PostgreSQL, RabbitMQ, Redis) spent per operation. The system benchmark
// (package bench) and the store and broker Go benchmarks share it.
package procstat

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

// Sample is one reading of a process's CPU time and memory.
type Sample struct {
	PID int
	// CPU is utime+stime of all the process's threads; Sys is the stime part
	// (time in the kernel: for a chat server mostly socket writes).
	CPU time.Duration
	Sys time.Duration
	// RSS is the resident set size in bytes.
	RSS int64
}

// ParseStatSplit extracts utime and stime from the contents of
// /proc/<pid>/stat. The command name
// (field 2) is parenthesised and may contain spaces and parentheses, so
// fields are counted from the last ')'.
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

// Read samples one process.
func Read(pid int) (Sample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Sample{}, err
	}
	user, sys, err := ParseStatSplit(stat)
	if err != nil {
		return Sample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Sample{}, err
	}
	rss, err := ParseStatusRSS(status)
	if err != nil {
		return Sample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return Sample{PID: pid, CPU: user + sys, Sys: sys, RSS: rss}, nil
}

// PIDsByName lists the processes whose /proc/<pid>/comm is one of names
// (e.g. "postgres", "beam.smp", "redis-server") that this user may read.
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

// CPU is the user+system CPU time of every process named name now. Processes
// that exit between two calls take their time with them, so a delta counts
// only long-lived processes exactly: enough for a server's connection
// processes during a benchmark, which live as long as its pool.
func CPU(name string) time.Duration {
	cpu, _ := Times(name)
	return cpu
}

// Times is CPU with its system (kernel) part: for PostgreSQL that part is
// mostly writing and flushing WAL, which no change to the SQL can shrink.
func Times(name string) (cpu, sys time.Duration) {
	pids, _ := PIDsByName(name)
	for _, pid := range pids {
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if u, s, err := ParseStatSplit(stat); err == nil {
				cpu += u + s
				sys += s
			}
		}
	}
	return cpu, sys
}
