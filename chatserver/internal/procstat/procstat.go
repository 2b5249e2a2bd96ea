// Package procstat reads the CPU time of processes by name from /proc, for
// benchmarks that report what a shared service (PostgreSQL, RabbitMQ) spent
// per operation beside the Go process's own time.
package procstat

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU is the user+system CPU time of every process whose command name is
// name (/proc/<pid>/stat's comm: "postgres", "beam.smp", "redis-server")
// that this user may read.
func CPU(name string) time.Duration {
	var ticks int64
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: utime and stime are fields 14 and 15,
		// the 12th and 13th after the ")" that ends comm.
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != name {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
