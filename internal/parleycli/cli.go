// Package parleycli is the `parley` command line: chat in a room from a
// terminal or a script, read a room's history, run groups, read the inbox,
// search, and mint development tokens
// from a key file or from a ChatCluster's JWT Secret through the kubeconfig.
// cmd/parley is a thin main around Main.
//
// It lives in the operator's module rather than the chat server's because
// `parley token --cluster` talks to Kubernetes with client-go (every kubeconfig
// auth method: client certificates, bearer tokens, exec plugins, OIDC) and
// reuses the operator's own definitions of the Secret's name and layout; the
// chat server module must never import Kubernetes libraries.
package parleycli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Env holds the process's streams and environment, so tests run Main in-process.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// OSEnv is the real process environment.
func OSEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

const usage = `parley: the Parley chat client.

Usage:
  parley chat [flags] ROOM        chat in ROOM: lines from stdin are sent, messages are printed as they arrive
  parley history [flags] ROOM     print ROOM's history
  parley token [flags]            mint a connection token (HS256) for development
  parley groups [flags] ACTION    create and run groups: info, members, add, remove, ban, mute, role, …
  parley invite [flags] GROUP     print an invite code; parley join CODE joins with it
  parley inbox [flags]            your conversations with unread and mention counts
  parley search [flags] WORDS...  search the messages of your conversations
  parley help [COMMAND]

ROOM is a channel ("room:lobby", "dm:#alice,bob"); a bare name means "room:NAME".
Connection flags (every command but token): --url (or $PARLEY_URL), --token-file, --token (or $PARLEY_TOKEN).
Run "parley help COMMAND" for the flags of a command.
`

// errUsage marks a command line mistake: exit status 2 and the usage shown.
var errUsage = errors.New("usage")

// errFlags is a usage error the flag package already printed with the usage.
var errFlags = fmt.Errorf("%w: bad flags", errUsage)

// Main runs one command line and returns the process exit status:
// 0 success, 1 failure, 2 bad usage.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "chat":
		err = runChat(ctx, rest, env)
	case "history":
		err = runHistory(ctx, rest, env)
	case "token":
		err = runToken(ctx, rest, env)
	case "groups":
		err = runGroups(ctx, rest, env)
	case "invite":
		err = runInvite(ctx, rest, env)
	case "join":
		err = runJoin(ctx, rest, env)
	case "inbox":
		err = runInbox(ctx, rest, env)
	case "search":
		err = runSearch(ctx, rest, env)
	case "help", "-h", "--help":
		if len(rest) == 1 {
			return Main(ctx, []string{rest[0], "-h"}, env)
		}
		fmt.Fprint(env.Stdout, usage)
		return 0
	default:
		fmt.Fprintf(env.Stderr, "parley: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlags):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(env.Stderr, "parley %s: %v\n", cmd, err)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "parley %s: %v\n", cmd, err)
		return 1
	}
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("parley chat lobby --json"), returning the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errFlags
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name, synopsis string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet("parley "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: parley %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// usageErr wraps a message as a usage error.
func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// ChannelFor turns what a person types into a channel: "lobby" → "room:lobby".
// The web client applies the same rule.
func ChannelFor(room string) (string, error) {
	room = strings.TrimSpace(room)
	if room == "" || strings.ContainsAny(room, " \t\r\n") {
		return "", usageErr("room %q: give a channel name without spaces", room)
	}
	if !strings.Contains(room, ":") {
		room = "room:" + room
	}
	return room, nil
}
