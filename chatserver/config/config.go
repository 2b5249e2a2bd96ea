// Package config is the chat server's configuration: one JSON document, the
// contract between the operator (which renders it into a ConfigMap from a
// ChatCluster) and the server (which loads and validates it at start).
// Secrets never live here: the config names files (mounted Secrets) to read them from.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Config is the whole chat server configuration. Field names are the JSON keys
// in camelCase; validation errors name the key with its JSON path.
type Config struct {
	// HTTP holds the two listeners: the public one (WebSocket, web page,
	// health) and the admin one (HTTP API, metrics, detailed readiness).
	HTTP HTTP `json:"http"`
	// Auth controls how connections are authenticated.
	Auth Auth `json:"auth"`
	// Broker routes messages between replicas.
	Broker Broker `json:"broker"`
	// Store keeps history, offsets, receipts and presence.
	Store Store `json:"store"`
	// Namespaces are the kinds of rooms: a channel "room:42" belongs to namespace "room".
	// A channel without a namespace prefix belongs to the namespace named "" if one is configured.
	Namespaces []Namespace `json:"namespaces"`
	// Limits protect the server from clients.
	Limits Limits `json:"limits"`
	// Web serves the embedded web client at "/".
	Web Web `json:"web"`
	// Log configures structured logging.
	Log Log `json:"log"`
	// Groups are the limits of group namespaces (Namespace.Group); absent,
	// the defaults of config/groups.go apply.
	Groups Groups `json:"groups,omitzero"`
}

// HTTP listener settings.
type HTTP struct {
	// Address is the public listener, e.g. ":8000": what clients reach (the
	// WebSocket, the web page), plus /healthz and a /readyz that says only
	// "ok" or "not ready". It never serves /api/* or /metrics.
	Address string `json:"address"`
	// AdminAddress is the operator-facing listener, e.g. ":8001": the HTTP API
	// (/api/*, guarded by the API key), Prometheus /metrics, /healthz and a
	// /readyz that names what is not ready. Keep it off the internet; it must
	// differ from Address.
	AdminAddress string `json:"adminAddress"`
	// TLS, when set, serves wss:// and https:// with a certificate reloaded
	// when its files change, on both listeners.
	TLS *TLS `json:"tls,omitempty"`
	// ShutdownGracePeriod bounds draining on SIGTERM.
	ShutdownGracePeriod Duration `json:"shutdownGracePeriod"`
	// APIKeyFile holds the key guarding the server HTTP API (/api/...). Empty
	// (and no APIKeyFiles) disables the API.
	APIKeyFile string `json:"apiKeyFile,omitempty"`
	// APIKeyFiles are files holding API keys; the first is current, the rest
	// (the previous key during a rotation) are also accepted. Missing or empty
	// files beyond the first are ignored, so a rotation Secret may drop its
	// old key. Every file is re-read when it changes. Set this or APIKeyFile,
	// not both.
	APIKeyFiles []string `json:"apiKeyFiles,omitempty"`
	// AllowedOrigins for WebSocket upgrades; empty allows same-origin only, "*" any.
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
	// PingInterval is how often the server sends application pings (default 25s).
	PingInterval Duration `json:"pingInterval,omitempty"`
	// PongTimeout is how long the server waits for the client's pong after a
	// ping before disconnecting it (default 10s).
	PongTimeout Duration `json:"pongTimeout,omitempty"`
	// HTTPStream serves the HTTP-streaming fallback at
	// /connection/http_stream (default true; see HTTPStreamEnabled).
	HTTPStream *bool `json:"httpStream,omitempty"`
	// SSE serves the Server-Sent Events fallback at /connection/sse (default
	// true). /emulation is served while either fallback is on.
	SSE *bool `json:"sse,omitempty"`
}

// HTTPStreamEnabled says whether /connection/http_stream is served. On
// unless turned off: the fallbacks exist for clients whose network breaks
// WebSocket, who cannot ask for them, and they cost nothing until used (same
// port, same limits, same auth as the WebSocket).
func (h HTTP) HTTPStreamEnabled() bool { return h.HTTPStream == nil || *h.HTTPStream }

// SSEEnabled says whether /connection/sse is served (on unless turned off,
// as HTTPStreamEnabled).
func (h HTTP) SSEEnabled() bool { return h.SSE == nil || *h.SSE }

// APIKeyPaths returns the API key files, current first: APIKeyFiles, or
// APIKeyFile alone; none when the API is disabled.
func (h HTTP) APIKeyPaths() []string {
	if len(h.APIKeyFiles) > 0 {
		return h.APIKeyFiles
	}
	if h.APIKeyFile != "" {
		return []string{h.APIKeyFile}
	}
	return nil
}

// TLS certificate files.
type TLS struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// Auth settings.
type Auth struct {
	// AllowAnonymous lets connections without a token in as anonymous users.
	AllowAnonymous bool `json:"allowAnonymous"`
	// HMACSecretFiles are files holding HS256 keys; the first is current, the rest
	// (e.g. the previous key during rotation) are also accepted. Missing or empty
	// files beyond the first are ignored, so a rotation Secret may drop its old key.
	HMACSecretFiles []string `json:"hmacSecretFiles,omitempty"`
	// JWKSURL enables RS256/ES256 tokens verified with keys from this URL.
	JWKSURL string `json:"jwksURL,omitempty"`
	// AllowTokensWithoutExpiry accepts tokens without an exp claim, which
	// never expire. Off by default: a leaked token must not be good forever.
	AllowTokensWithoutExpiry bool `json:"allowTokensWithoutExpiry,omitempty"`
	// ExpiredCloseDelay is how long a connection (or a subscription) whose
	// token expired may still refresh it before it is closed with 3005
	// (3501 for a subscription). The SDKs refresh when the ttl of the
	// connect reply runs out, so without this grace any latency disconnects
	// them (Centrifugo's client_expired_close_delay). 0: DefaultExpiredCloseDelay.
	ExpiredCloseDelay Duration `json:"expiredCloseDelay,omitempty"`
	// Audience and Issuer, when set, must match the token's aud and iss claims.
	Audience string `json:"audience,omitempty"`
	Issuer   string `json:"issuer,omitempty"`
}

// DefaultExpiredCloseDelay is Auth.ExpiredCloseDelay when the key is absent
// (Centrifugo's default too).
const DefaultExpiredCloseDelay = 25 * time.Second

// CloseDelay is the grace after a token's expiry before the connection closes.
func (a Auth) CloseDelay() time.Duration {
	if a.ExpiredCloseDelay > 0 {
		return a.ExpiredCloseDelay.D()
	}
	return DefaultExpiredCloseDelay
}

// Broker selects and configures the broker.
type Broker struct {
	// Type is "memory" (single node) or "amqp" (RabbitMQ).
	Type string `json:"type"`
	// URLFile holds the AMQP URI; the PARLEY_BROKER_URL environment variable overrides it.
	URLFile string `json:"urlFile,omitempty"`
	// Exchange is the durable direct exchange the operator declared (a topic
	// exchange an earlier operator declared routes the same keys alike).
	Exchange string `json:"exchange,omitempty"`
	// ControlExchange is the durable fanout exchange for node-to-node commands.
	ControlExchange string `json:"controlExchange,omitempty"`
	// DeadLetterExchange, when set, is the durable exchange each node's queue
	// dead-letters to (x-dead-letter-exchange): messages a node cannot decode,
	// and the oldest messages dropped when its queue overflows.
	DeadLetterExchange string `json:"deadLetterExchange,omitempty"`
	// CAFile, when set, is a PEM file of the only CA trusted for an amqps://
	// URI (the broker's certificate must name the URI's host). Without it,
	// amqps:// trusts the system's roots.
	CAFile string `json:"caFile,omitempty"`
	// ReadinessGrace is how long the broker may be unreachable before this
	// replica reports not ready (default 5m). Within it the replica stays
	// ready: publications are committed in the store and re-sent, and a
	// broker outage is shared by every replica, so turning them all unready
	// would only empty the Service (docs/guarantees.md).
	ReadinessGrace Duration `json:"readinessGrace,omitempty"`
	// Routing says how publications of channels with history find the
	// replicas that have subscribers: "directory" (the default) sends each
	// to the replicas registered for its channel in the store, with no
	// RabbitMQ binding per channel; "bindings" also binds a routing key per
	// channel, as releases before the directory did, so that replicas of
	// such a release, running beside this one in a rolling update, are
	// heard (docs/upgrading.md). Channels without history always use
	// bindings.
	Routing string `json:"routing,omitempty"`
}

// Broker routing modes (broker.routing).
const (
	RoutingDirectory = "directory"
	RoutingBindings  = "bindings"
)

// DefaultBrokerReadinessGrace is broker.readinessGrace when unset.
const DefaultBrokerReadinessGrace = 5 * time.Minute

// ReadinessGraceOrDefault is broker.readinessGrace, or its default when unset.
func (b Broker) ReadinessGraceOrDefault() time.Duration {
	if b.ReadinessGrace > 0 {
		return b.ReadinessGrace.D()
	}
	return DefaultBrokerReadinessGrace
}

// Store selects and configures the store.
type Store struct {
	// Type is "memory" (single node, lost on restart) or "postgres".
	Type string `json:"type"`
	// URLFile holds the PostgreSQL URI; the PARLEY_STORE_URL environment variable overrides it.
	URLFile string `json:"urlFile,omitempty"`
	// MaxConns sizes the connection pool per replica.
	MaxConns int `json:"maxConns,omitempty"`
	// RetentionInterval is how often the background retention job runs.
	RetentionInterval Duration `json:"retentionInterval,omitempty"`
	// AppendBatch caps the publications one PostgreSQL commit carries (group
	// commit: appends arriving while a commit is in flight share the next
	// one). 0 takes the default (64); 1 commits every publication alone.
	AppendBatch int `json:"appendBatch,omitempty"`
}

// Publish permission values for Namespace.AllowPublish.
const (
	PublishSubscribers   = "subscribers"   // clients subscribed to the channel
	PublishAuthenticated = "authenticated" // any authenticated user, subscribed or not
	PublishNone          = "none"          // only the server HTTP API
)

// Namespace is a kind of room and its rules.
type Namespace struct {
	// Name is the channel prefix before ":" ("room" for "room:42").
	Name string `json:"name"`
	// History keeps the last Size publications for at most TTL; Size 0 keeps none.
	History History `json:"history"`
	// Presence lets subscribers ask who is in the channel.
	Presence bool `json:"presence"`
	// JoinLeave sends join and leave pushes to subscribers that ask for them
	// (the subscribe request's join_leave flag).
	JoinLeave bool `json:"joinLeave"`
	// AllowPublish: "subscribers" (default), "authenticated" or "none".
	AllowPublish string `json:"allowPublish,omitempty"`
	// AllowSubscribe: "authenticated" (default: any authenticated user) or "token"
	// (only with a channel grant in the connection token or a subscription token).
	AllowSubscribe string `json:"allowSubscribe,omitempty"`
	// AllowAnonymous lets anonymous connections subscribe and read history (if Auth.AllowAnonymous).
	AllowAnonymous bool `json:"allowAnonymous,omitempty"`
	// AllowAnonymousPublish lets anonymous connections publish as
	// subscribers do (they must be subscribed; never with allowPublish none).
	// Needs allowAnonymous.
	AllowAnonymousPublish bool `json:"allowAnonymousPublish,omitempty"`
	// AllowAnonymousPresence lets anonymous subscribers read presence and
	// presence_stats. Needs allowAnonymous.
	AllowAnonymousPresence bool `json:"allowAnonymousPresence,omitempty"`
	// Recovery lets clients recover missed publications on resubscribe.
	Recovery bool `json:"recovery"`
	// Typing enables typing indicators (never stored).
	Typing bool `json:"typing,omitempty"`
	// AllowHistory: who may read history, "subscribers" (default) or "authenticated".
	AllowHistory string `json:"allowHistory,omitempty"`
	// AllowPresence: who may see presence, "subscribers" (default) or "authenticated".
	AllowPresence string `json:"allowPresence,omitempty"`
	// AllowBinary lets publications carry any bytes (protobuf clients). Off,
	// the namespace is JSON-only: every publish path refuses data that is not
	// JSON. On, JSON clients never receive the publications they cannot carry
	// (live, history or recovery); they are skipped, never a disconnect.
	AllowBinary bool `json:"allowBinary,omitempty"`
	// AllowedDeltaTypes lists the delta compressions subscribers may ask for
	// (the subscribe request's delta): only "fossil" exists.
	AllowedDeltaTypes []string `json:"allowedDeltaTypes,omitempty"`
	// Personal makes this the personal namespace: every authenticated connection
	// of user U is subscribed by the server to "<name>:#U".
	Personal bool `json:"personal,omitempty"`
	// Group makes this a group namespace: its channels ("<name>:<id>") are
	// created by the groups RPCs and have persistent members with roles;
	// subscribe, publish, history and presence need membership on top of the
	// rules above (see Groups for the limits).
	Group bool `json:"group,omitempty"`
}

// History retention for a namespace.
type History struct {
	Size int      `json:"size"`
	TTL  Duration `json:"ttl"`
}

// Limits protect the server.
type Limits struct {
	MaxMessageBytes            int `json:"maxMessageBytes"`
	PublishesPerSecond         int `json:"publishesPerSecond"`
	ConnectionsPerUser         int `json:"connectionsPerUser"`
	SubscriptionsPerConnection int `json:"subscriptionsPerConnection"`
	// WriteQueueBytes bounds each connection's pending output; past it the
	// client is disconnected as a slow consumer.
	WriteQueueBytes int `json:"writeQueueBytes"`
	// CommandCostPerSecond is each connection's budget for commands, in cost
	// units (docs/protocol.md lists what each command costs), recovering at
	// this rate with bursts of ten seconds' worth. Over it a command is
	// answered 111 "too many requests". 0 disables it.
	CommandCostPerSecond int `json:"commandCostPerSecond"`
	// UserCommandCostPerSecond is the same budget shared by all of one user's
	// connections on a replica. 0 disables it.
	UserCommandCostPerSecond int `json:"userCommandCostPerSecond"`
}

// Web client settings.
type Web struct {
	Enabled bool `json:"enabled"`
}

// Log settings.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `json:"level"`
	// Format is json or text.
	Format string `json:"format"`
}

// Default returns a config for a single node with in-memory broker and store.
// Anonymous access stays off: a deployment opts into it.
func Default() Config {
	return Config{
		HTTP:   HTTP{Address: ":8000", AdminAddress: ":8001", ShutdownGracePeriod: Duration(25 * time.Second)},
		Broker: Broker{Type: "memory"},
		Store:  Store{Type: "memory", MaxConns: 10, RetentionInterval: Duration(time.Minute)},
		Namespaces: []Namespace{
			{Name: "room", History: History{Size: 1000, TTL: Duration(720 * time.Hour)}, Presence: true, JoinLeave: true, AllowPublish: PublishSubscribers, AllowSubscribe: "authenticated", Recovery: true, Typing: true},
		},
		Limits: Limits{
			MaxMessageBytes: 65536, PublishesPerSecond: 20, ConnectionsPerUser: 10, SubscriptionsPerConnection: 128, WriteQueueBytes: 1 << 20,
			CommandCostPerSecond: 100, UserCommandCostPerSecond: 300,
		},
		Web: Web{Enabled: true},
		Log: Log{Level: "info", Format: "json"},
	}
}

// Parse decodes a JSON config over the defaults, refusing unknown keys, and validates it.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	// Namespaces replace the default list rather than merging element by element.
	cfg.Namespaces = nil
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if cfg.Namespaces == nil {
		cfg.Namespaces = Default().Namespaces
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Load reads and parses a config file.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Marshal renders the config as indented JSON (what the operator writes to the ConfigMap).
func (c Config) Marshal() ([]byte, error) {
	return json.MarshalIndent(c, "", "  ")
}

// Validate checks the config; errors name the offending key.
func (c Config) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	checkAddress := func(key, addr string) {
		if addr == "" {
			bad(key, "must not be empty")
		} else if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port (e.g. \":8000\"): %v", addr, err)
		}
	}
	checkAddress("http.address", c.HTTP.Address)
	checkAddress("http.adminAddress", c.HTTP.AdminAddress)
	if sameListener(c.HTTP.Address, c.HTTP.AdminAddress) {
		bad("http.adminAddress", "%q must differ from http.address %q: the admin listener (HTTP API, metrics) is kept apart from the public one", c.HTTP.AdminAddress, c.HTTP.Address)
	}
	if c.HTTP.TLS != nil && (c.HTTP.TLS.CertFile == "" || c.HTTP.TLS.KeyFile == "") {
		bad("http.tls", "certFile and keyFile are both required")
	}
	if c.HTTP.ShutdownGracePeriod < 0 {
		bad("http.shutdownGracePeriod", "must not be negative")
	}
	if c.HTTP.PingInterval < 0 {
		bad("http.pingInterval", "must not be negative")
	}
	if c.HTTP.PongTimeout < 0 {
		bad("http.pongTimeout", "must not be negative")
	}
	if c.HTTP.APIKeyFile != "" && len(c.HTTP.APIKeyFiles) > 0 {
		bad("http.apiKeyFiles", "set http.apiKeyFile or http.apiKeyFiles, not both")
	}
	for i, f := range c.HTTP.APIKeyFiles {
		if strings.TrimSpace(f) == "" {
			bad(fmt.Sprintf("http.apiKeyFiles[%d]", i), "must not be empty")
		}
	}
	if !c.Auth.AllowAnonymous && len(c.Auth.HMACSecretFiles) == 0 && c.Auth.JWKSURL == "" {
		bad("auth", "no way to authenticate: set hmacSecretFiles or jwksURL, or allowAnonymous")
	}
	if c.Auth.ExpiredCloseDelay < 0 || c.Auth.ExpiredCloseDelay.D() > time.Hour {
		bad("auth.expiredCloseDelay", "must be between 0 (the default, %s) and 1h, got %s", DefaultExpiredCloseDelay, c.Auth.ExpiredCloseDelay.D())
	}
	switch c.Broker.Type {
	case "memory":
	case "amqp":
		if c.Broker.Exchange == "" {
			bad("broker.exchange", "required for type amqp")
		}
		if c.Broker.ControlExchange == "" {
			bad("broker.controlExchange", "required for type amqp")
		}
	default:
		bad("broker.type", "must be memory or amqp, got %q", c.Broker.Type)
	}
	switch c.Broker.Routing {
	case "", RoutingDirectory, RoutingBindings:
	default:
		bad("broker.routing", "must be directory or bindings, got %q", c.Broker.Routing)
	}
	if c.Broker.ReadinessGrace < 0 {
		bad("broker.readinessGrace", "must not be negative")
	}
	switch c.Store.Type {
	case "memory", "postgres":
	default:
		bad("store.type", "must be memory or postgres, got %q", c.Store.Type)
	}
	if c.Store.MaxConns < 0 {
		bad("store.maxConns", "must not be negative")
	}
	if c.Store.AppendBatch < 0 || c.Store.AppendBatch > 1000 {
		bad("store.appendBatch", "must be between 0 (the default, 64) and 1000")
	}
	seen := map[string]bool{}
	personal := 0
	for i, ns := range c.Namespaces {
		key := fmt.Sprintf("namespaces[%d]", i)
		if strings.ContainsAny(ns.Name, ":#$ ") {
			bad(key+".name", "%q must not contain ':', '#', '$' or spaces", ns.Name)
		}
		if seen[ns.Name] {
			bad(key+".name", "duplicate namespace %q", ns.Name)
		}
		seen[ns.Name] = true
		if ns.History.Size < 0 {
			bad(key+".history.size", "must not be negative")
		}
		if ns.History.TTL < 0 {
			bad(key+".history.ttl", "must not be negative")
		}
		if ns.History.Size > 0 && ns.History.TTL == 0 {
			bad(key+".history.ttl", "must be set when history.size > 0")
		}
		if ns.Recovery && ns.History.Size == 0 {
			bad(key+".recovery", "needs history.size > 0")
		}
		switch ns.AllowPublish {
		case "", PublishSubscribers, PublishAuthenticated, PublishNone:
		default:
			bad(key+".allowPublish", "must be subscribers, authenticated or none, got %q", ns.AllowPublish)
		}
		switch ns.AllowSubscribe {
		case "", "authenticated", "token":
		default:
			bad(key+".allowSubscribe", "must be authenticated or token, got %q", ns.AllowSubscribe)
		}
		for field, v := range map[string]string{"allowHistory": ns.AllowHistory, "allowPresence": ns.AllowPresence} {
			switch v {
			case "", PublishSubscribers, PublishAuthenticated:
			default:
				bad(key+"."+field, "must be subscribers or authenticated, got %q", v)
			}
		}
		if (ns.AllowAnonymousPublish || ns.AllowAnonymousPresence) && !ns.AllowAnonymous {
			bad(key+".allowAnonymous", "must be true when allowAnonymousPublish or allowAnonymousPresence is")
		}
		for j, d := range ns.AllowedDeltaTypes {
			if d != "fossil" {
				bad(fmt.Sprintf("%s.allowedDeltaTypes[%d]", key, j), "must be fossil, got %q", d)
			}
		}
		if ns.Personal && ns.Name == "" {
			bad(key+".personal", "the personal namespace needs a name")
		}
		if ns.Personal {
			personal++
			if personal > 1 {
				bad(key+".personal", "only one namespace may be personal")
			}
		}
	}
	c.validateGroups(bad)
	l := c.Limits
	for key, v := range map[string]int{
		"limits.maxMessageBytes": l.MaxMessageBytes, "limits.publishesPerSecond": l.PublishesPerSecond,
		"limits.connectionsPerUser": l.ConnectionsPerUser, "limits.subscriptionsPerConnection": l.SubscriptionsPerConnection,
		"limits.writeQueueBytes": l.WriteQueueBytes, "limits.commandCostPerSecond": l.CommandCostPerSecond,
		"limits.userCommandCostPerSecond": l.UserCommandCostPerSecond,
	} {
		if v < 0 {
			bad(key, "must not be negative")
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	if len(errs) > 0 {
		sortStrings(errs)
		return fmt.Errorf("invalid config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// sameListener reports whether two listen addresses would claim the same
// port: the same non-zero port on the same host, or on a wildcard host (""
// 0.0.0.0, ::) that covers the other. Port 0 asks the kernel for a free port,
// so two ":0" listeners never collide.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

// NamespaceOf returns the namespace config for a channel ("room:42" → "room"),
// and false when the channel's namespace is not configured.
func (c *Config) NamespaceOf(channel string) (Namespace, bool) {
	name := ""
	if i := strings.IndexByte(channel, ':'); i >= 0 {
		name = channel[:i]
	}
	for _, ns := range c.Namespaces {
		if ns.Name == name {
			return ns, true
		}
	}
	return Namespace{}, false
}
