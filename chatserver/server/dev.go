package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-chat/parley/chatserver/config"
)

// Dev is a single-node development setup: in-memory broker and store,
// anonymous access, and a random HS256 key with a ready-made token.
type Dev struct {
	Config config.Config
	// Token is a connection token for user "dev", valid for a day.
	Token string
	dir   string
}

// NewDev builds the dev config with the public listener on address and the
// admin listener (HTTP API, metrics) on adminAddress. Call Cleanup when done.
func NewDev(address, adminAddress string) (*Dev, error) {
	dir, err := os.MkdirTemp("", "parley-dev-")
	if err != nil {
		return nil, err
	}
	var key [32]byte
	_, _ = rand.Read(key[:])
	secret := hex.EncodeToString(key[:])
	keyFile := filepath.Join(dir, "hmac")
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	apiKey := hex.EncodeToString(key[:8])
	apiKeyFile := filepath.Join(dir, "apikey")
	if err := os.WriteFile(apiKeyFile, []byte(apiKey), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cfg := config.Default()
	cfg.HTTP.Address = address
	cfg.HTTP.AdminAddress = adminAddress
	cfg.HTTP.APIKeyFile = apiKeyFile
	cfg.HTTP.ShutdownGracePeriod = config.Duration(5 * time.Second)
	cfg.HTTP.AllowedOrigins = []string{"*"}
	cfg.Auth = config.Auth{AllowAnonymous: true, HMACSecretFiles: []string{keyFile}}
	cfg.Log = config.Log{Level: "info", Format: "text"}
	room := cfg.Namespaces[0]
	room.AllowAnonymous = true
	cfg.Namespaces = []config.Namespace{
		room,
		{Name: "dm", History: config.History{Size: 1000, TTL: config.Duration(720 * time.Hour)}, Presence: true, JoinLeave: true, Recovery: true, Typing: true},
		{Name: "personal", Personal: true, AllowPublish: config.PublishNone, History: config.History{Size: 100, TTL: config.Duration(24 * time.Hour)}, Recovery: true},
		// Groups (docs/protocol.md): members post and read without subscribing.
		{Name: "group", Group: true, History: config.History{Size: 1000, TTL: config.Duration(720 * time.Hour)}, Presence: true, JoinLeave: true, Recovery: true, Typing: true,
			AllowPublish: config.PublishAuthenticated, AllowHistory: config.PublishAuthenticated, AllowPresence: config.PublishAuthenticated},
	}
	if err := cfg.Validate(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: "dev", ExpiresAt: jwt.NewNumericDate(time.Now().Add(24 * time.Hour)),
	}).SignedString([]byte(secret))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("sign dev token: %w", err)
	}
	return &Dev{Config: cfg, Token: tok, dir: dir}, nil
}

// APIKey returns the dev API key.
func (d *Dev) APIKey() string {
	data, _ := os.ReadFile(d.Config.HTTP.APIKeyFile)
	return string(data)
}

// Cleanup removes the dev key files.
func (d *Dev) Cleanup() { _ = os.RemoveAll(d.dir) }
