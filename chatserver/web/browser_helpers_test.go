package web_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// artifactsDir is where the browser scripts leave screenshots:
// PARLEY_ARTIFACTS, or artifacts/<name> at the repository root.
func artifactsDir(t *testing.T, name string) string {
	t.Helper()
	if dir := os.Getenv("PARLEY_ARTIFACTS"); dir != "" {
		return dir
	}
	abs, err := filepath.Abs(filepath.Join("../../artifacts", name))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// removeOldScreenshots deletes the numbered screenshots of an earlier run,
// which would otherwise be mistaken for this run's.
func removeOldScreenshots(dir string) {
	for _, pattern := range []string{"[0-9][0-9]-*.png", "failure-*.png"} {
		if old, err := filepath.Glob(filepath.Join(dir, pattern)); err == nil {
			for _, f := range old {
				_ = os.Remove(f)
			}
		}
	}
}

// runBrowserScript runs a node script of test/ with env added, logs its
// output line by line and fails the test unless it exits 0 having printed
// exactly wantSteps "ok <step>" lines (a script that stops early, or skips
// a step, fails).
func runBrowserScript(t *testing.T, node, script string, timeout time.Duration, wantSteps int, env ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	steps := 0
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if strings.HasPrefix(line, "ok ") {
			steps++
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s failed after %d steps: %v", script, steps, err)
	}
	if steps != wantSteps {
		t.Fatalf("%s passed %d steps, want %d", script, steps, wantSteps)
	}
}

// profileToken is a connection token for user whose profile name (claim
// "name") is name, valid for an hour.
func profileToken(t *testing.T, user, name string) string {
	t.Helper()
	c := servertest.TokenClaims(user, time.Hour)
	c.Name = name
	return servertest.Sign(t, c, servertest.Secret)
}
