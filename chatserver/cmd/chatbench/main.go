// Command chatbench is Parley's load generator: the same centrifuge-go
// clients drive Parley and Centrifugo. `chatbench suite` runs the side-by-side
// scenarios of `make bench`; `chatbench run` runs one scenario against servers
// already running; `chatbench worker` is the client process both spawn.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parley-chat/parley/chatserver/bench"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "worker":
		if _, err = bench.RaiseFileLimit(); err == nil {
			err = bench.Serve(os.Stdin, os.Stdout)
		}
	case "suite":
		err = suite(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	case "report":
		err = report(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  chatbench suite [flags]   run the side-by-side scenarios (make bench); -h for flags
  chatbench run [flags]     run one scenario against running servers; -h for flags
  chatbench report [flags]  re-render the report of a suite run from its results.json; -h for flags`)
	os.Exit(2)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func floats(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("rate %q: want a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func suite(args []string) error {
	d := bench.DefaultSuite()
	fs := flag.NewFlagSet("suite", flag.ExitOnError)
	parley := fs.String("parley", "bin/chatserver", "Parley chat server binary")
	centrifugo := fs.String("centrifugo", "bin/centrifugo", "Centrifugo binary")
	out := fs.String("out", "", "directory for results.json, logs and profiles (default: a new bench-out/<run id>)")
	doc := fs.String("doc", "docs/benchmarks.md", "markdown report to write (its analysis section is kept); empty to skip")
	plotPath := fs.String("plot", "docs/benchmarks-latency.png", "PNG plot of latency against load; empty to skip")
	targets := fs.String("targets", strings.Join(bench.AllTargets, ","), "systems to run")
	scenarios := fs.String("scenarios", strings.Join(bench.AllScenarios, ","), "scenarios to run")
	amqpURL := fs.String("amqp", envOr("PARLEY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ for Parley's 2 replicas")
	pgURL := fs.String("postgres", envOr("PARLEY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL (a database is created and dropped)")
	redis := fs.String("redis", "127.0.0.1:6379", "Redis for Centrifugo's 2 nodes")
	payload := fs.Int("payload", 100, "publication payload bytes")
	sources := fs.Int("source-addrs", 50, "client source addresses 127.0.0.2 … 127.0.0.(1+n)")
	perWorker := fs.Int("conns-per-worker", 5000, "client connections per worker process")
	scale := fs.Float64("scale", 1, "multiply connection counts (for a quick look: 0.1)")
	quick := fs.Bool("quick", false, "measurement windows a tenth as long (smoke test, numbers not meaningful)")
	idle := fs.Int("idle-conns", d.IdleConns, "idle connections")
	fixed := fs.Float64("fixed-rate", d.Fanout.FixedRate, "publications/s of the headline window in the one-room scenario")
	rates := fs.String("rates", joinFloats(d.Fanout.Rates), "rising publication rates of the one-room scenario")
	step := fs.Duration("step", d.Fanout.Window, "measured window per rate step")
	chatRate := fs.Float64("chat-rate", d.Chat.Reference, "publications/s of the many-rooms step the summary compares")
	chatRates := fs.String("chat-rates", joinFloats(d.Chat.Rates), "rising publication rates (in all) of the many-rooms scenario")
	chatRooms := fs.Int("chat-rooms", d.Chat.Rooms, "rooms of 10 users in the many-rooms scenario")
	chatWindow := fs.Duration("chat-window", d.Chat.Window, "measured window per many-rooms step")
	chatWarmup := fs.Duration("chat-warmup", d.Chat.Warmup, "warm-up before each many-rooms window")
	parleyBase := fs.String("parley-base", "", "baseline Parley binary (an earlier revision) for the "+bench.BaseTarget+" target")
	parleyBaseExchange := fs.String("parley-base-exchange", "topic", "the baseline's publication exchange kind: topic (as declared before the direct exchange) or direct")
	opScale := fs.String("operator-scale", "", "operator-scale.json from test/scale to include in the report")
	revision := fs.String("revision", "", "source revision of the servers under test, for the report")
	_ = fs.Parse(args)

	rs, err := floats(*rates)
	if err != nil {
		return err
	}
	runID := time.Now().UTC().Format("20060102t150405") + "-" + randomHex(2)
	if *out == "" {
		*out = filepath.Join("bench-out", runID)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	outAbs, _ := filepath.Abs(*out)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := bench.RaiseFileLimit(); err != nil {
		return fmt.Errorf("raise open-files limit: %w", err)
	}
	cfg := d
	cfg.Targets, cfg.Scenarios = splitList(*targets), splitList(*scenarios)
	bins := []string{*parley, *centrifugo}
	if slices.Contains(cfg.Targets, bench.BaseTarget) {
		if *parleyBase == "" {
			return fmt.Errorf("target %s needs -parley-base", bench.BaseTarget)
		}
		if *parleyBaseExchange != "topic" && *parleyBaseExchange != "direct" {
			return fmt.Errorf("-parley-base-exchange %q: want topic or direct", *parleyBaseExchange)
		}
		bins = append(bins, *parleyBase)
	}
	for _, b := range bins {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("server binary: %w", err)
		}
	}
	cfg.IdleConns = *idle
	crs, err := floats(*chatRates)
	if err != nil {
		return err
	}
	cfg.Chat.Reference, cfg.Chat.Rates, cfg.Chat.Rooms, cfg.Chat.Window, cfg.Chat.Warmup = *chatRate, crs, *chatRooms, *chatWindow, *chatWarmup
	cfg.Fanout.FixedRate, cfg.Fanout.Rates, cfg.Fanout.Window = *fixed, rs, *step
	cfg.Command = "chatbench suite " + strings.Join(args, " ")
	cfg.Revision = *revision
	cfg.Env = bench.Env{ParleyBin: abs(*parley), ParleyBaseBin: abs(*parleyBase), ParleyBaseExchange: *parleyBaseExchange, CentrifugoBin: abs(*centrifugo), Dir: outAbs, Secret: randomHex(32),
		AMQPURL: *amqpURL, PostgresURL: *pgURL, RedisAddr: *redis, RunID: runID, Log: os.Stderr}
	cfg.Options = bench.Options{WorkerExe: exe, WorkerArgs: []string{"worker"}, Secret: cfg.Env.Secret, RunID: runID, OutDir: outAbs,
		PayloadBytes: *payload, SourceAddrs: *sources, ConnsPerWorker: *perWorker, Log: os.Stderr, Scale: *scale, Quick: *quick}

	ctx, cancel := signalContext()
	defer cancel()
	res := bench.RunSuite(ctx, cfg)
	jsonPath := filepath.Join(*out, "results.json")
	if err := res.WriteJSON(jsonPath); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "results:", jsonPath)
	tops := res.ProfileTops(cfg.Env.ParleyBin, 25)
	for name, text := range tops {
		_ = os.WriteFile(filepath.Join(*out, name+".top.txt"), []byte(text), 0o644)
	}
	plotRef := ""
	if *plotPath != "" {
		if err := res.WritePlot(*plotPath); err != nil {
			fmt.Fprintln(os.Stderr, "plot:", err)
		} else if *doc != "" {
			plotRef, _ = filepath.Rel(filepath.Dir(*doc), *plotPath)
		}
	}
	var op *bench.OperatorScale
	if *opScale != "" {
		data, err := os.ReadFile(*opScale)
		if err == nil {
			op = &bench.OperatorScale{}
			err = json.Unmarshal(data, op)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "operator scale results not included:", err)
			op = nil
		}
	}
	if *doc != "" {
		if err := res.WriteMarkdown(*doc, plotRef, tops, op); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "report:", *doc)
	}
	fmt.Print(res.Markdown(plotRef, "", nil))
	if len(res.Errors) > 0 {
		return fmt.Errorf("%d scenario(s) failed; see the report", len(res.Errors))
	}
	return nil
}

// report re-renders docs/benchmarks.md and the plot from a finished run.
func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	results := fs.String("results", "", "results.json of a suite run (its directory holds the profiles and operator-scale.json)")
	parley := fs.String("parley", "bin/chatserver-bench", "the Parley binary the run used (symbols for the profiles)")
	doc := fs.String("doc", "docs/benchmarks.md", "markdown report to write (its analysis section is kept)")
	plotPath := fs.String("plot", "docs/benchmarks-latency.png", "PNG plot to write; empty to skip")
	_ = fs.Parse(args)
	data, err := os.ReadFile(*results)
	if err != nil {
		return err
	}
	res := &bench.SuiteResult{}
	if err := json.Unmarshal(data, res); err != nil {
		return fmt.Errorf("%s: %w", *results, err)
	}
	var op *bench.OperatorScale
	if data, err := os.ReadFile(filepath.Join(filepath.Dir(*results), "operator-scale.json")); err == nil {
		op = &bench.OperatorScale{}
		if err := json.Unmarshal(data, op); err != nil {
			return err
		}
	}
	plotRef := ""
	if *plotPath != "" {
		if err := res.WritePlot(*plotPath); err != nil {
			return err
		}
		plotRef, _ = filepath.Rel(filepath.Dir(*doc), *plotPath)
	}
	return res.WriteMarkdown(*doc, plotRef, res.ProfileTops(abs(*parley), 25), op)
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	scenario := fs.String("scenario", "fanout", "idle, fanout, chat or reconnect")
	urls := fs.String("url", "ws://127.0.0.1:8000/connection/websocket", "WebSocket endpoints, comma-separated (connections round-robin)")
	pids := fs.String("pids", "", "server process ids to measure, comma-separated")
	metrics := fs.String("metrics", "", "server /metrics URLs (on the admin listener, e.g. http://127.0.0.1:8001/metrics), comma-separated, in -url order")
	pprofs := fs.String("pprof", "", "server pprof base URLs (…/debug/pprof), comma-separated; profiles go to -out")
	secretFile := fs.String("secret-file", "", "file with the HS256 key the servers verify tokens with")
	conns := fs.Int("conns", 2000, "subscriber connections (reconnect: clients; chat: rooms × 10)")
	rooms := fs.Int("rooms", 1, "rooms (idle and chat)")
	pubs := fs.Int("publishers", 8, "publisher connections (fanout)")
	rate := fs.String("rate", "25", "publications/s (fanout: a comma-separated rising list; the first is the fixed-rate window)")
	payload := fs.Int("payload", 100, "publication payload bytes")
	duration := fs.Duration("duration", 10*time.Second, "measured window (per step)")
	sources := fs.Int("source-addrs", 50, "client source addresses 127.0.0.2 … 127.0.0.(1+n)")
	perWorker := fs.Int("conns-per-worker", 5000, "client connections per worker process")
	out := fs.String("out", "", "directory for profiles")
	asJSON := fs.Bool("json", false, "print the result as JSON instead of text")
	_ = fs.Parse(args)

	if *secretFile == "" {
		return fmt.Errorf("-secret-file is required")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return err
	}
	t := bench.Target{Name: "target", Endpoints: splitList(*urls), MetricsURLs: splitList(*metrics), PprofURLs: splitList(*pprofs)}
	for _, p := range splitList(*pids) {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("-pids: %q is not a process id", p)
		}
		t.PIDs = append(t.PIDs, pid)
	}
	if len(t.PIDs) == 0 {
		return fmt.Errorf("-pids is required (server CPU and memory come from /proc)")
	}
	for len(t.MetricsURLs) < len(t.Endpoints) {
		t.MetricsURLs = append(t.MetricsURLs, "")
	}
	rs, err := floats(*rate)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := bench.RaiseFileLimit(); err != nil {
		return err
	}
	o := bench.Options{WorkerExe: exe, WorkerArgs: []string{"worker"}, Secret: strings.TrimSpace(string(secret)),
		RunID: randomHex(3), OutDir: *out, PayloadBytes: *payload, SourceAddrs: *sources, ConnsPerWorker: *perWorker, Log: os.Stderr}
	if *out == "" {
		t.PprofURLs = nil
	}
	ctx, cancel := signalContext()
	defer cancel()
	var res any
	switch *scenario {
	case "idle":
		res, err = bench.Idle(ctx, o, t, *conns, *rooms)
	case "fanout":
		res, err = bench.Fanout(ctx, o, t, bench.FanoutConfig{Subscribers: *conns, Publishers: *pubs, FixedRate: rs[0], Rates: rs[1:],
			Warmup: 2 * time.Second, Window: *duration, MaxP50: 500 * time.Millisecond})
	case "chat":
		res, err = bench.Chat(ctx, o, t, bench.ChatConfig{Rooms: *rooms, UsersPerRoom: max(1, *conns / *rooms), Rates: rs, Reference: rs[0], Warmup: 3 * time.Second, Window: *duration})
	case "reconnect":
		res, err = bench.Reconnect(ctx, o, t, *conns, rs[0])
	default:
		return fmt.Errorf("unknown scenario %q", *scenario)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if *asJSON {
		return enc.Encode(res)
	}
	fmt.Println(bench.Text(res))
	return nil
}

func joinFloats(v []float64) string {
	var s []string
	for _, f := range v {
		s = append(s, strconv.FormatFloat(f, 'f', -1, 64))
	}
	return strings.Join(s, ",")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
