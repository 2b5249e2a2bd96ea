package bench

import (
	"time"

	"github.com/parley-chat/parley/chatserver/internal/procstat"
)

// ProcSample is one reading of a process's CPU time and memory.
type ProcSample = procstat.Sample

// ReadProc samples one process from /proc.
func ReadProc(pid int) (ProcSample, error) { return procstat.Read(pid) }

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
func PIDsByName(names ...string) ([]int, error) { return procstat.PIDsByName(names...) }

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
