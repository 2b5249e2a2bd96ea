package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/config"
)

// Env is what the servers under test need: binaries, a work directory for
// configs and logs, the shared services' addresses, and the HS256 key.
type Env struct {
	ParleyBin string
	// ParleyBaseBin is the baseline Parley (an earlier revision) the
	// parley-2r-base target runs, for before/after figures in one run.
	ParleyBaseBin string
	// ParleyBaseExchange is the publication exchange's kind for the baseline:
	// "topic" (the default: what operators declared before the direct
	// exchange) or "direct" (a baseline of the current topology).
	ParleyBaseExchange string
	CentrifugoBin      string
	Dir                string
	Secret             string
	AMQPURL            string
	PostgresURL        string
	RedisAddr          string
	// RunID makes the names of exchanges, databases and Redis keys unique.
	RunID string
	Log   io.Writer
}

// Server is one system under test: one or more processes (nodes).
type Server struct {
	Name    string // e.g. parley-2r
	Kind    string // parley or centrifugo
	Backend string // what routes between nodes and keeps history
	Nodes   []*Node
	cleanup []func()
}

// Node is one server process.
type Node struct {
	Addr       string // host:port of its HTTP listener
	WS         string // WebSocket endpoint
	MetricsURL string
	PprofURL   string // base URL of net/http/pprof, empty when not served
	LogPath    string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// PID is the node's process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Endpoints lists the nodes' WebSocket URLs.
func (s *Server) Endpoints() []string {
	var out []string
	for _, n := range s.Nodes {
		out = append(out, n.WS)
	}
	return out
}

// PIDs lists the nodes' process ids.
func (s *Server) PIDs() []int {
	var out []int
	for _, n := range s.Nodes {
		out = append(out, n.PID())
	}
	return out
}

// Alive reports an error for a node that exited.
func (s *Server) Alive() error {
	for i, n := range s.Nodes {
		select {
		case <-n.exited:
			return fmt.Errorf("%s node %d exited (%v); see %s", s.Name, i, n.cmd.ProcessState, n.LogPath)
		default:
		}
	}
	return nil
}

// Stop terminates the nodes (SIGTERM, then SIGKILL after 20s) and removes
// what was created for them.
func (s *Server) Stop() {
	for _, n := range s.Nodes {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range s.Nodes {
		n.awaitExit(20 * time.Second)
	}
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
	s.cleanup = nil
}

func (e *Env) logf(format string, args ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", args...)
	}
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (e *Env) startNode(name, logName string, args []string, extraEnv []string) (*Node, error) {
	logPath := filepath.Join(e.Dir, logName+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	bin := e.ParleyBin
	switch {
	case name == "redis-server":
		bin = "redis-server"
	case strings.HasPrefix(name, "centrifugo"):
		bin = e.CentrifugoBin
	case name == "parley-base":
		bin = e.ParleyBaseBin
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	n := &Node{LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(n.exited)
	}()
	return n, nil
}

// awaitExit waits for a signalled node to exit, killing it after grace.
func (n *Node) awaitExit(grace time.Duration) {
	select {
	case <-n.exited:
	case <-time.After(grace):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// waitReady polls ready every 100 ms until it holds, the node exits or the
// timeout passes; the errors end with the node's log.
func waitReady(n *Node, what string, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			tail, _ := os.ReadFile(n.LogPath)
			return fmt.Errorf("server exited: %s", lastLines(string(tail), 15))
		default:
		}
		if ready() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	tail, _ := os.ReadFile(n.LogPath)
	return fmt.Errorf("%s not ready within %v: %s", what, timeout, lastLines(string(tail), 15))
}

// waitHTTP waits until url answers 200.
func waitHTTP(n *Node, url string, timeout time.Duration) error {
	return waitReady(n, url, timeout, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *Env) writeFile(name, content string) (string, error) {
	p := filepath.Join(e.Dir, name)
	return p, os.WriteFile(p, []byte(content), 0o600)
}

// StartParley starts Parley with n replicas: distributed through RabbitMQ
// and PostgreSQL (a fresh exchange pair and database, removed on Stop), or a
// single in-memory node.
func (e *Env) StartParley(ctx context.Context, name string, n int, distributed bool) (_ *Server, err error) {
	srv := &Server{Name: name, Kind: "parley", Backend: "memory"}
	defer func() {
		if err != nil {
			srv.Stop()
		}
	}()
	keyFile, err := e.writeFile("hmac", e.Secret)
	if err != nil {
		return nil, err
	}
	var backends *ParleyBackends
	if distributed {
		srv.Backend = "RabbitMQ + PostgreSQL"
		id := strings.ReplaceAll(e.RunID+"_"+name, "-", "_")
		b := &ParleyBackends{Exchange: "parleybench." + id, ControlExchange: "parleybench." + id + ".control"}
		// As the operator declares it; the baseline build gets the topic
		// exchange operators declared before.
		kind := "direct"
		if strings.HasSuffix(name, "-base") {
			kind = cmp.Or(e.ParleyBaseExchange, "topic")
		}
		if err := declareExchanges(ctx, e.AMQPURL, kind, b.Exchange, b.ControlExchange); err != nil {
			return nil, err
		}
		srv.cleanup = append(srv.cleanup, func() {
			if err := deleteExchanges(context.Background(), e.AMQPURL, b.Exchange, b.ControlExchange); err != nil {
				e.logf("cleanup: %v", err)
			}
		})
		db := "parleybench_" + id
		dbURL, err := createDatabase(ctx, e.PostgresURL, db)
		if err != nil {
			return nil, err
		}
		srv.cleanup = append(srv.cleanup, func() {
			if err := dropDatabase(context.Background(), e.PostgresURL, db); err != nil {
				e.logf("cleanup: %v", err)
			}
		})
		if b.BrokerURLFile, err = e.writeFile(name+"-amqp-url", e.AMQPURL); err != nil {
			return nil, err
		}
		if b.StoreURLFile, err = e.writeFile(name+"-pg-url", dbURL); err != nil {
			return nil, err
		}
		backends = b
	}
	for i := 0; i < n; i++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dport, err := freePort()
		if err != nil {
			return nil, err
		}
		aport, err := freePort()
		if err != nil {
			return nil, err
		}
		addr, admin := "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(aport)
		cfg := ParleyConfig(addr, admin, keyFile, backends)
		data, err := cfg.Marshal()
		if err != nil {
			return nil, err
		}
		cfgPath, err := e.writeFile(fmt.Sprintf("%s-%d.json", name, i), string(data))
		if err != nil {
			return nil, err
		}
		daddr := "127.0.0.1:" + strconv.Itoa(dport)
		kind := "parley"
		if strings.HasSuffix(name, "-base") {
			kind = "parley-base"
		}
		node, err := e.startNode(kind, fmt.Sprintf("%s-%d", name, i), []string{"--config", cfgPath, "--debug-address", daddr}, nil)
		if err != nil {
			return nil, err
		}
		node.Addr, node.WS = addr, "ws://"+addr+"/connection/websocket"
		// Metrics and the readiness reason are on the admin listener only.
		node.MetricsURL = "http://" + admin + "/metrics"
		node.PprofURL = "http://" + daddr + "/debug/pprof"
		srv.Nodes = append(srv.Nodes, node)
		if err := waitHTTP(node, "http://"+admin+"/readyz", 60*time.Second); err != nil {
			return nil, fmt.Errorf("%s node %d: %w", name, i, err)
		}
	}
	return srv, nil
}

// CentrifugoConfig is the Centrifugo v6 config the benchmarks run: defaults
// but for the same namespace rules as Parley's (history 1,000 for ten
// minutes, recovery, publishing by any client, Parley's connections-per-user
// limit), Prometheus metrics and pprof.
func CentrifugoConfig(port int, secret, redisAddr, redisPrefix string) map[string]any {
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"client": map[string]any{
			"token":           map[string]any{"hmac_secret_key": secret},
			"allowed_origins": []string{"*"},
			// Connections per user, as Parley's default limit: both pay for
			// the check as deployed. Centrifugo's counts one node's
			// connections (in memory); Parley's counts the cluster's.
			"user_connection_limit": config.Default().Limits.ConnectionsPerUser,
		},
		"channel": map[string]any{
			// Stream metadata would otherwise stay in the shared Redis for 30 days.
			"history_meta_ttl": "1h",
			"namespaces": []map[string]any{{
				"name": Namespace, "history_size": 1000, "history_ttl": "10m", "force_recovery": true,
				"allow_subscribe_for_client": true, "allow_publish_for_client": true,
			}},
		},
		"prometheus": map[string]any{"enabled": true},
		"health":     map[string]any{"enabled": true},
		"debug":      map[string]any{"enabled": true},
		"log":        map[string]any{"level": "warn"},
	}
	if redisAddr != "" {
		cfg["engine"] = map[string]any{"type": "redis", "redis": map[string]any{"address": []string{"redis://" + redisAddr}, "prefix": redisPrefix}}
	}
	return cfg
}

// RedisMode is where a Centrifugo target keeps its history and routes
// between nodes.
type RedisMode int

const (
	// NoRedis: Centrifugo's memory engine (one node).
	NoRedis RedisMode = iota
	// SharedRedis: the machine's Redis, as installed here (it keeps nothing
	// on disk: a restart loses every stream).
	SharedRedis
	// DurableRedis: a Redis of the target's own with the append-only file
	// fsynced before every reply (appendfsync always), so an acknowledged
	// publication is on disk, as Parley's PostgreSQL commit makes it.
	DurableRedis
)

// Backends, as reported and as TargetOf picks the shared services' processes by.
const (
	backendRedis        = "Redis"
	backendDurableRedis = "Redis, appendfsync always"
)

// StartCentrifugo starts Centrifugo with n nodes: with its Redis engine (keys
// under a per-run prefix; they expire with the history TTL, metadata within
// the hour), or a single node
// with its memory engine.
func (e *Env) StartCentrifugo(ctx context.Context, name string, n int, mode RedisMode) (_ *Server, err error) {
	srv := &Server{Name: name, Kind: "centrifugo", Backend: "memory"}
	defer func() {
		if err != nil {
			srv.Stop()
		}
	}()
	redisAddr := ""
	switch mode {
	case SharedRedis:
		srv.Backend = backendRedis
		redisAddr = e.RedisAddr
	case DurableRedis:
		srv.Backend = backendDurableRedis
		if redisAddr, err = e.startDurableRedis(srv); err != nil {
			return nil, err
		}
	}
	for i := 0; i < n; i++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		data, err := json.MarshalIndent(CentrifugoConfig(port, e.Secret, redisAddr, "parleybench."+e.RunID+"."+name), "", "  ")
		if err != nil {
			return nil, err
		}
		cfgPath, err := e.writeFile(fmt.Sprintf("%s-%d.json", name, i), string(data))
		if err != nil {
			return nil, err
		}
		node, err := e.startNode("centrifugo", fmt.Sprintf("%s-%d", name, i), []string{"--config", cfgPath}, nil)
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		node.Addr, node.WS = addr, "ws://"+addr+"/connection/websocket"
		node.MetricsURL = "http://" + addr + "/metrics"
		node.PprofURL = "http://" + addr + "/debug/pprof"
		srv.Nodes = append(srv.Nodes, node)
		if err := waitHTTP(node, "http://"+addr+"/health", 60*time.Second); err != nil {
			return nil, fmt.Errorf("%s node %d: %w", name, i, err)
		}
	}
	return srv, nil
}

// startDurableRedis starts the Redis a DurableRedis target uses, on a free
// port with its files under the run's directory, and has srv stop it and
// remove them. Only that target's Centrifugo nodes use it, so its CPU in the
// backing services' column is theirs (the machine's Redis idles meanwhile).
func (e *Env) startDurableRedis(srv *Server) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(e.Dir, srv.Name+"-redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	node, err := e.startNode("redis-server", srv.Name+"-redis", []string{
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir, "--daemonize", "no",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
	}, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	srv.cleanup = append(srv.cleanup, func() {
		_ = node.cmd.Process.Signal(syscall.SIGTERM)
		node.awaitExit(20 * time.Second)
		_ = os.RemoveAll(dir)
	})
	if err := waitRedis(node, addr, 30*time.Second); err != nil {
		return "", fmt.Errorf("durable redis: %w", err)
	}
	return addr, nil
}

// waitRedis waits until Redis at addr answers PING with PONG.
func waitRedis(n *Node, addr string, timeout time.Duration) error {
	return waitReady(n, "redis-server at "+addr, timeout, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 7)
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return false
		}
		_, err = io.ReadFull(c, buf)
		return err == nil && string(buf) == "+PONG\r\n"
	})
}

func declareExchanges(ctx context.Context, uri, kind, topic, control string) error {
	conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	if err := ch.ExchangeDeclare(topic, kind, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", topic, err)
	}
	if err := ch.ExchangeDeclare(control, "fanout", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", control, err)
	}
	return nil
}

func deleteExchanges(ctx context.Context, uri string, names ...string) error {
	conn, err := amqp.DialConfig(uri, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer conn.Close()
	var errs []error
	for _, name := range names {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("rabbitmq: %w", err)
		}
		if err := ch.ExchangeDelete(name, false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete exchange %q: %w", name, err))
		}
		_ = ch.Close()
	}
	return errors.Join(errs...)
}

// createDatabase creates db and returns a URL for it (same server and user as adminURL).
func createDatabase(ctx context.Context, adminURL, db string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %q: %w", db, err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("postgres url: %w", err)
	}
	u.Path = "/" + db
	return u.String(), nil
}

func dropDatabase(ctx context.Context, adminURL, db string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %q: %w", db, err)
	}
	return nil
}

// FetchProfile saves a CPU profile of seconds from a node's pprof endpoint.
func FetchProfile(ctx context.Context, pprofURL string, seconds int, path string) error {
	return fetchPprof(ctx, pprofURL+"/profile?seconds="+strconv.Itoa(seconds), time.Duration(seconds+30)*time.Second, path)
}

// FetchHeapProfile saves a node's heap profile (in-use and allocated memory).
func FetchHeapProfile(ctx context.Context, pprofURL, path string) error {
	return fetchPprof(ctx, pprofURL+"/heap", 60*time.Second, path)
}

func fetchPprof(ctx context.Context, url string, timeout time.Duration, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
