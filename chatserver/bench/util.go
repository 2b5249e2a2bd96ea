package bench

import (
	"context"
	"os"
	"os/exec"
	"time"
)

func pidSelf() int { return os.Getpid() }

// execOutput runs a short command and returns its standard output.
func execOutput(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	return string(out), err
}
