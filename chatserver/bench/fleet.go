package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// RaiseFileLimit lifts the soft open-files limit to the hard limit (this
// machine caps both at 20,000 per process, hence clients spread over processes).
func RaiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

// Serve runs a worker process: the first line of in is its Job, each further
// line a Command; each Command gets one Reply line on out. It returns after
// the close command or when in ends.
func Serve(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	var job Job
	if err := dec.Decode(&job); err != nil {
		return fmt.Errorf("read job: %w", err)
	}
	w, err := NewWorker(job)
	if err != nil {
		_ = enc.Encode(Reply{Op: "job", Error: err.Error()})
		return err
	}
	if err := enc.Encode(Reply{Op: "job"}); err != nil {
		return err
	}
	for {
		var cmd Command
		if err := dec.Decode(&cmd); err != nil {
			w.Close()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read command: %w", err)
		}
		r := w.Handle(cmd)
		if err := enc.Encode(r); err != nil {
			w.Close()
			return err
		}
		if cmd.Op == "close" {
			return nil
		}
	}
}

// Fleet is the coordinator's handle on its workers.
type Fleet struct {
	workers []*remote
	Jobs    []Job
}

type remote struct {
	cmd *exec.Cmd
	enc *json.Encoder
	dec *json.Decoder
	in  io.Closer
}

// StartFleet starts one worker per job. exe and args start a process that
// calls Serve (chatbench's hidden "worker" subcommand); nil exe runs the
// workers in this process (tests).
func StartFleet(exe string, args []string, jobs []Job) (*Fleet, error) {
	f := &Fleet{Jobs: jobs}
	for _, job := range jobs {
		r, err := startRemote(exe, args)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.workers = append(f.workers, r)
		if err := r.enc.Encode(job); err != nil {
			f.Close()
			return nil, fmt.Errorf("send job: %w", err)
		}
		var rep Reply
		if err := r.dec.Decode(&rep); err != nil {
			f.Close()
			return nil, fmt.Errorf("worker %d start: %w", job.Worker, err)
		}
		if rep.Error != "" {
			f.Close()
			return nil, fmt.Errorf("worker %d: %s", job.Worker, rep.Error)
		}
	}
	return f, nil
}

func startRemote(exe string, args []string) (*remote, error) {
	if exe == "" {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		go func() {
			err := Serve(inR, outW)
			_ = outW.CloseWithError(err)
			_ = inR.Close()
		}()
		return &remote{enc: json.NewEncoder(inW), dec: json.NewDecoder(outR), in: inW}, nil
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	return &remote{cmd: cmd, enc: json.NewEncoder(stdin), dec: json.NewDecoder(bufio.NewReader(stdout)), in: stdin}, nil
}

// Do sends cmds[i] to worker i (one command for all when len(cmds) == 1) and
// returns their replies; it fails on the first worker error.
func (f *Fleet) Do(cmds ...Command) ([]Reply, error) {
	replies := make([]Reply, len(f.workers))
	errs := make([]error, len(f.workers))
	var wg sync.WaitGroup
	for i, r := range f.workers {
		cmd := cmds[0]
		if len(cmds) > 1 {
			cmd = cmds[i]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.enc.Encode(cmd); err != nil {
				errs[i] = fmt.Errorf("worker %d %s: %w", i, cmd.Op, err)
				return
			}
			if err := r.dec.Decode(&replies[i]); err != nil {
				errs[i] = fmt.Errorf("worker %d %s: %w", i, cmd.Op, err)
				return
			}
			if replies[i].Error != "" {
				errs[i] = fmt.Errorf("worker %d %s: %s", i, cmd.Op, replies[i].Error)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(DoTimeout):
		// A worker that never answers would hold the run (and a test) until
		// its timeout with nothing said: say where every goroutine of this
		// process is (in-process workers live here), then stop the worker
		// processes, which ends the reads waiting for them.
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "bench: workers did not answer %q within %v; goroutines:\n%s\n", cmds[0].Op, DoTimeout, buf)
		for _, r := range f.workers {
			if r.cmd != nil && r.cmd.Process != nil {
				_ = r.cmd.Process.Kill()
			}
		}
		return replies, fmt.Errorf("workers did not answer %q within %v", cmds[0].Op, DoTimeout)
	}
	return replies, errors.Join(errs...)
}

// DoTimeout bounds one command to the workers; the longest, a connect
// phase of tens of thousands of clients, takes well under a minute.
var DoTimeout = 5 * time.Minute

// Snapshot merges every worker's stats.
func (f *Fleet) Snapshot(reset bool) (*Stats, error) {
	reps, err := f.Do(Command{Op: "snapshot", Reset: reset})
	if err != nil {
		return nil, err
	}
	total := &Stats{}
	for _, r := range reps {
		if r.Stats != nil {
			total.Add(r.Stats)
		}
	}
	return total, nil
}

// SetRate spreads rate publications per second over the workers in
// proportion to weights (publishers or subscribers per worker).
func (f *Fleet) SetRate(rate float64, weights []int) error {
	sum := 0
	for _, w := range weights {
		sum += w
	}
	cmds := make([]Command, len(f.workers))
	for i := range cmds {
		cmds[i] = Command{Op: "rate"}
		if sum > 0 {
			cmds[i].Rate = rate * float64(weights[i]) / float64(sum)
		}
	}
	_, err := f.Do(cmds...)
	return err
}

// Close asks every worker to close and waits for the processes.
func (f *Fleet) Close() {
	var wg sync.WaitGroup
	for _, r := range f.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() {
				defer close(done)
				if r.enc.Encode(Command{Op: "close"}) == nil {
					var rep Reply
					_ = r.dec.Decode(&rep)
				}
				_ = r.in.Close()
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
			}
			if r.cmd != nil {
				if r.cmd.ProcessState == nil {
					select {
					case <-done:
					default:
						_ = r.cmd.Process.Kill()
					}
				}
				_ = r.cmd.Wait()
			}
		}()
	}
	wg.Wait()
	f.workers = nil
}

// PIDs lists the worker processes (empty for in-process workers).
func (f *Fleet) PIDs() []int {
	var pids []int
	for _, r := range f.workers {
		if r.cmd != nil && r.cmd.Process != nil {
			pids = append(pids, r.cmd.Process.Pid)
		}
	}
	return pids
}
