package parleycli

// Groups, the inbox and search from a terminal: each subcommand is one rpc
// of the chat server (docs/protocol.md, "Groups, inbox, moderation, search").

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

const groupsHelp = `groups [flags] ACTION GROUP [ARGS]

Actions (GROUP is a group channel, "group:team"; a bare "team" means "group:team"):
  create [--title T] [--topic T] [NAME]   make a group (NAME: its id, random when left out)
  info GROUP                              settings, owner, member count and your role
  members GROUP                           members with their roles
  add GROUP USER                          add a member by user id
  remove GROUP USER [--reason R]          remove a member (admins)
  ban GROUP USER [--reason R]             remove and bar from rejoining (admins)
  unban GROUP USER
  mute GROUP USER DURATION                no posting for DURATION ("10m"; "0" lifts it)
  role GROUP USER admin|member            (the owner)
  transfer GROUP USER                     make USER the owner (you become an admin)
  leave GROUP
  delete GROUP                            (the owner)
  audit GROUP                             who did what (admins)`

const inviteHelp = `invite [flags] GROUP

Prints an invite code for GROUP; others join with "parley join CODE".`

const joinHelp = `join [flags] CODE`

const inboxHelp = `inbox [flags]

Lists your conversations (groups, and DMs with a message), the latest first,
with unread and mention counts.`

const searchHelp = `search [flags] WORDS...

Searches the messages of your conversations (words, "a phrase", -not, or).`

// groupChannel turns what a person types into a group channel.
func groupChannel(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || strings.ContainsAny(name, " \t\r\n") {
		return "", usageErr("group %q: give a group channel without spaces", name)
	}
	if !strings.Contains(name, ":") {
		name = "group:" + name
	}
	return name, nil
}

// call runs one rpc on a fresh connection and returns its JSON result.
func call(ctx context.Context, cf connFlags, env Env, method string, params any) (json.RawMessage, error) {
	endpoint, token, err := cf.resolve(env)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	s, err := dial(ctx, endpoint, token, cf.timeout, nil)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	res, err := s.client.RPC(rctx, method, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, describe(err))
	}
	return res.Data, nil
}

// rpcCommand parses flags, builds the params from the positionals, runs the
// rpc and prints its result: raw with --json, else through text.
func rpcCommand(ctx context.Context, name, help string, args []string, env Env,
	extra func(fs stringFlags) func(pos []string) (string, any, error),
	text func(w io.Writer, res json.RawMessage) error) error {
	fs := newFlagSet(name, help, env)
	var cf connFlags
	cf.register(fs)
	jsonOut := fs.Bool("json", false, "print the server's JSON result")
	build := extra(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	method, params, err := build(pos)
	if err != nil {
		return err
	}
	res, err := call(ctx, cf, env, method, params)
	if err != nil {
		return err
	}
	if *jsonOut || text == nil {
		_, err = fmt.Fprintf(env.Stdout, "%s\n", res)
		return err
	}
	return text(env.Stdout, res)
}

// stringFlags is the part of a flag set a command's params builder uses.
type stringFlags = interface {
	String(name, value, usage string) *string
}

func runGroups(ctx context.Context, args []string, env Env) error {
	var printer func(w io.Writer, res json.RawMessage) error
	build := func(fs stringFlags) func(pos []string) (string, any, error) {
		title := fs.String("title", "", "create: the group's title")
		topic := fs.String("topic", "", "create: the group's topic")
		reason := fs.String("reason", "", "remove, ban, mute: why (recorded in the audit log)")
		return func(pos []string) (string, any, error) {
			if len(pos) == 0 {
				return "", nil, usageErr("give an action (create, info, members, add, remove, ban, unban, mute, role, transfer, leave, delete, audit)")
			}
			action, rest := pos[0], pos[1:]
			want := func(n int, what string) error {
				if len(rest) != n {
					return usageErr("%s takes %s", action, what)
				}
				return nil
			}
			if action == "create" {
				if len(rest) > 1 {
					return "", nil, usageErr("create takes at most a NAME")
				}
				p := map[string]any{"title": *title, "topic": *topic}
				if len(rest) == 1 {
					p["id"] = rest[0]
				}
				printer = printField("channel")
				return "group.create", p, nil
			}
			if len(rest) == 0 {
				return "", nil, usageErr("%s needs a GROUP", action)
			}
			ch, err := groupChannel(rest[0])
			if err != nil {
				return "", nil, err
			}
			p := map[string]any{"channel": ch}
			switch action {
			case "info", "leave", "delete":
				if err := want(1, "GROUP"); err != nil {
					return "", nil, err
				}
				if action == "info" {
					printer = printGroup
				}
				return map[string]string{"info": "group.get", "leave": "group.leave", "delete": "group.delete"}[action], p, nil
			case "members":
				printer = printMembers
				return "group.members", p, want(1, "GROUP")
			case "audit":
				printer = printAudit
				return "group.audit", p, want(1, "GROUP")
			case "add", "remove", "ban", "unban", "transfer":
				if err := want(2, "GROUP USER"); err != nil {
					return "", nil, err
				}
				p["user"] = rest[1]
				if *reason != "" && (action == "remove" || action == "ban") {
					p["reason"] = *reason
				}
				return "group." + action, p, nil
			case "role":
				if err := want(3, "GROUP USER admin|member"); err != nil {
					return "", nil, err
				}
				p["user"], p["role"] = rest[1], rest[2]
				return "group.role", p, nil
			case "mute":
				if err := want(3, "GROUP USER DURATION"); err != nil {
					return "", nil, err
				}
				d, err := time.ParseDuration(rest[2])
				if rest[2] == "0" {
					d, err = 0, nil
				}
				if err != nil || d < 0 {
					return "", nil, usageErr("DURATION %q: give a duration such as 10m or 0", rest[2])
				}
				p["user"], p["duration"] = rest[1], int(d/time.Second)
				if *reason != "" {
					p["reason"] = *reason
				}
				return "group.mute", p, nil
			}
			return "", nil, usageErr("unknown action %q", action)
		}
	}
	return rpcCommand(ctx, "groups", groupsHelp, args, env, build, func(w io.Writer, res json.RawMessage) error {
		if printer == nil {
			_, err := fmt.Fprintln(w, "ok")
			return err
		}
		return printer(w, res)
	})
}

func runInvite(ctx context.Context, args []string, env Env) error {
	return rpcCommand(ctx, "invite", inviteHelp, args, env, func(fs stringFlags) func([]string) (string, any, error) {
		ttl := fs.String("ttl", "24h", "how long the code works")
		uses := fs.String("uses", "0", "how many may join with it (0: any number)")
		return func(pos []string) (string, any, error) {
			if len(pos) != 1 {
				return "", nil, usageErr("give exactly one GROUP")
			}
			ch, err := groupChannel(pos[0])
			if err != nil {
				return "", nil, err
			}
			d, err := time.ParseDuration(*ttl)
			if err != nil || d < time.Second {
				return "", nil, usageErr("--ttl %q: give a duration such as 24h", *ttl)
			}
			var n int
			if _, err := fmt.Sscan(*uses, &n); err != nil || n < 0 {
				return "", nil, usageErr("--uses must be a number, 0 or more")
			}
			return "group.invite", map[string]any{"channel": ch, "ttl": int(d / time.Second), "max_uses": n}, nil
		}
	}, printField("code"))
}

func runJoin(ctx context.Context, args []string, env Env) error {
	return rpcCommand(ctx, "join", joinHelp, args, env, func(stringFlags) func([]string) (string, any, error) {
		return func(pos []string) (string, any, error) {
			if len(pos) != 1 {
				return "", nil, usageErr("give exactly one CODE")
			}
			return "group.join", map[string]any{"code": pos[0]}, nil
		}
	}, printField("channel"))
}

func runInbox(ctx context.Context, args []string, env Env) error {
	return rpcCommand(ctx, "inbox", inboxHelp, args, env, func(fs stringFlags) func([]string) (string, any, error) {
		limit := fs.String("limit", "50", "how many conversations")
		return func(pos []string) (string, any, error) {
			var n int
			if _, err := fmt.Sscan(*limit, &n); err != nil || len(pos) != 0 {
				return "", nil, usageErr("inbox takes no arguments and a numeric --limit")
			}
			return "inbox", map[string]any{"limit": n}, nil
		}
	}, printInbox)
}

func runSearch(ctx context.Context, args []string, env Env) error {
	return rpcCommand(ctx, "search", searchHelp, args, env, func(fs stringFlags) func([]string) (string, any, error) {
		in := fs.String("in", "", "search only this conversation")
		return func(pos []string) (string, any, error) {
			if len(pos) == 0 {
				return "", nil, usageErr("give the WORDS to search for")
			}
			p := map[string]any{"query": strings.Join(pos, " ")}
			if *in != "" {
				p["channel"] = *in
			}
			return "search", p, nil
		}
	}, printHits)
}

func printField(name string) func(w io.Writer, res json.RawMessage) error {
	return func(w io.Writer, res json.RawMessage) error {
		var m map[string]any
		if err := json.Unmarshal(res, &m); err != nil {
			return err
		}
		_, err := fmt.Fprintln(w, m[name])
		return err
	}
}
