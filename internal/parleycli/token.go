package parleycli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-chat/parley/chatserver/auth"
)

const tokenHelp = `token --user USER (--key-file FILE | --cluster NAME) [flags]

Mints an HS256 connection token for development and demos. The key comes
from a file (the chat server's auth.hmacSecretFiles) or from a ChatCluster's
JWT Secret (<name>-jwt, key "current") read with your kubeconfig, which then
also supplies the cluster's audience and issuer. The token goes to stdout.`

// MaxTokenTTL bounds what this development tool mints.
const MaxTokenTTL = 30 * 24 * time.Hour

// TokenRequest is what a minted token says.
type TokenRequest struct {
	User     string
	TTL      time.Duration
	Audience string
	Issuer   string
	// Channels are grants ("room:42", "secret:*").
	Channels []string
	// Info is attached to the connection and shown to others (JSON object).
	Info json.RawMessage
}

// Mint signs a connection token with an HS256 key, in the claims the chat
// server verifies (chatserver/auth.ConnectionClaims).
func Mint(key []byte, r TokenRequest, now time.Time) (string, error) {
	if len(key) == 0 {
		return "", errors.New("empty key")
	}
	if r.User == "" {
		return "", errors.New("no user")
	}
	claims := auth.ConnectionClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   r.User,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(r.TTL)),
			Issuer:    r.Issuer,
		},
		Channels: r.Channels,
		Info:     r.Info,
	}
	if r.Audience != "" {
		claims.Audience = jwt.ClaimStrings{r.Audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
}

// ReadKeyFile reads an HS256 key the way the chat server does (surrounding
// whitespace trimmed, so a trailing newline does not change the key).
func ReadKeyFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	key := bytes.TrimSpace(data)
	if len(key) == 0 {
		return nil, fmt.Errorf("key file %s is empty", path)
	}
	return key, nil
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runToken(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("token", tokenHelp, env)
	var (
		r        TokenRequest
		channels stringList
		info     string
		keyFile  string
		kf       kubeFlags
	)
	fs.StringVar(&r.User, "user", "", "the token's user (sub claim); required")
	fs.DurationVar(&r.TTL, "ttl", time.Hour, "how long the token is valid (at most 720h)")
	fs.StringVar(&r.Audience, "audience", "", "aud claim (default: the ChatCluster's spec.auth.audience)")
	fs.StringVar(&r.Issuer, "issuer", "", "iss claim (default: the ChatCluster's spec.auth.issuer)")
	fs.Var(&channels, "channel", "grant a channel or a namespace (\"secret:*\"); repeatable")
	fs.StringVar(&info, "info", "", "JSON object attached to the connection and shown to others, e.g. '{\"name\":\"Alice\"}'")
	fs.StringVar(&keyFile, "key-file", "", "file holding the HS256 key")
	kf.register(fs)
	jsonOut := fs.Bool("json", false, "print {\"token\", \"user\", \"expires_at\"} instead of the bare token")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErr("unexpected arguments %q", pos)
	}
	if r.User == "" {
		return usageErr("--user is required")
	}
	if r.TTL <= 0 || r.TTL > MaxTokenTTL {
		return usageErr("--ttl must be between 1s and %s", MaxTokenTTL)
	}
	if info != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(info), &obj); err != nil {
			return usageErr("--info must be a JSON object: %v", err)
		}
		r.Info = json.RawMessage(info)
	}
	r.Channels = channels
	for _, c := range r.Channels {
		if c == "" || strings.ContainsAny(c, " \t\n") {
			return usageErr("--channel %q: a channel name without spaces", c)
		}
	}

	var key []byte
	switch {
	case keyFile != "" && kf.cluster != "":
		return usageErr("give --key-file or --cluster, not both")
	case keyFile != "":
		if key, err = ReadKeyFile(keyFile); err != nil {
			return err
		}
	case kf.cluster != "":
		ck, err := kf.clusterKey(ctx, env)
		if err != nil {
			return err
		}
		for _, w := range ck.Warnings {
			fmt.Fprintf(env.Stderr, "parley token: warning: %s\n", w)
		}
		key = ck.Key
		if r.Audience == "" {
			r.Audience = ck.Audience
		}
		if r.Issuer == "" {
			r.Issuer = ck.Issuer
		}
	default:
		return usageErr("give --key-file FILE or --cluster NAME")
	}
	now := time.Now()
	token, err := Mint(key, r, now)
	if err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(env.Stdout).Encode(map[string]any{
			"token": token, "user": r.User, "expires_at": now.Add(r.TTL).UTC().Format(time.RFC3339),
		})
	}
	_, err = fmt.Fprintln(env.Stdout, token)
	return err
}

// kubeFlags select a ChatCluster through a kubeconfig.
type kubeFlags struct {
	cluster    string
	namespace  string
	kubeconfig string
	context    string
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.cluster, "cluster", "", "ChatCluster whose JWT Secret holds the key")
	fs.StringVar(&k.namespace, "namespace", "", "the ChatCluster's namespace (default: the kubeconfig context's)")
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&k.context, "context", "", "kubeconfig context (default: the current one)")
}
