// Command parley is the Parley chat client for terminals and scripts:
// `parley chat`, `parley history`, `parley token`. See internal/parleycli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/parley-chat/parley/internal/parleycli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := parleycli.Main(ctx, os.Args[1:], parleycli.OSEnv())
	stop()
	os.Exit(code)
}
