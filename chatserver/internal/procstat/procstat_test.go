package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCountsFieldsAfterTheLastParenthesis(t *testing.T) {
	// comm "(weird) name)" has spaces and parentheses; utime=250 stime=50 ticks.
	stat := "4242 ((weird) name)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 123456789 2048 18446744073709551615\n"
	user, sys, err := ParseStatSplit([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if got := user + sys; got != 3*time.Second || sys != 500*time.Millisecond {
		t.Fatalf("cpu %v (sys %v), want 3s (300 ticks, 50 of them sys)", got, sys)
	}
	for _, bad := range []string{"", "12 (x) S 1 2", "12 (x) S 1 2 3 4 5 6 7 8 9 10 x 5 0"} {
		if _, _, err := ParseStatSplit([]byte(bad)); err == nil {
			t.Errorf("ParseStatSplit(%q) gave no error", bad)
		}
	}
}

func TestParseStatusRSS(t *testing.T) {
	status := "Name:\tchatserver\nVmPeak:\t  99999 kB\nVmRSS:\t   51200 kB\nThreads:\t8\n"
	got, err := ParseStatusRSS([]byte(status))
	if err != nil || got != 51200*1024 {
		t.Fatalf("rss %d, %v; want %d", got, err, 51200*1024)
	}
	if _, err := ParseStatusRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Fatal("no VmRSS line gave no error")
	}
}

func TestReadThisProcess(t *testing.T) {
	s, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS < 1<<20 {
		t.Fatalf("rss %d is implausibly small", s.RSS)
	}
	name, _ := os.ReadFile("/proc/self/comm")
	pids, err := PIDsByName(string(name[:len(name)-1]))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pids {
		found = found || p == os.Getpid()
	}
	if !found {
		t.Fatalf("PIDsByName(%q) = %v misses this process %d", name, pids, os.Getpid())
	}
	// Spin until the time shows; the bound only catches a CPU that never moves.
	comm := string(name[:len(name)-1])
	before := CPU(comm)
	for deadline := time.Now().Add(10 * time.Second); CPU(comm) < before+30*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatalf("CPU(%q) stayed near %v over 10 s of spinning", comm, before)
		}
	}
}
