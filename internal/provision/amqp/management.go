package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/internal/provision"
)

// Backend is how the operator reaches one RabbitMQ as its admin.
type Backend struct {
	// URI is the admin's AMQP URI (amqp:// or amqps://user:pass@host:port/);
	// its vhost path is ignored by the tenant calls (each tenant has its own).
	URI string
	// ManagementURI is the management API base URL (http(s)://host:15672).
	// Credentials: its userinfo when present, else those of URI.
	ManagementURI string
	// CAPEM, when set, is the only CA trusted for amqps:// and https://
	// (verified, server name = the URI's host).
	CAPEM []byte
}

// BackendInfo is what Probe learns about a RabbitMQ.
type BackendInfo struct {
	// Version is RabbitMQ's version from the management overview ("3.10.8").
	Version string
}

// admin is a Backend resolved for one call: parsed URIs, TLS and a
// management client whose every request is bound to the call's context.
type admin struct {
	amqp    amqp091.URI
	amqpTLS *tls.Config // nil: plain amqp://, or amqps:// with the system roots
	mgmt    *rabbithole.Client
	close   func()
}

// errUnauthorized is a management API 401: rabbit-hole reports it as bare
// text, the transport below turns it into a value classify recognises.
var errUnauthorized = errors.New("the management API refused the credentials (401 Unauthorized)")

// boundTransport binds each management request to one call's context (so
// ctx's deadline and cancellation reach the HTTP layer, which rabbit-hole's
// context-free API would not) and types 401 answers.
type boundTransport struct {
	ctx  context.Context
	base *http.Transport
	// readTimeout, when set, bounds a GET until its body is closed: reads
	// answer at once on a healthy broker, so a server that accepts and never
	// answers is found out in the connect timeout, not the call timeout.
	readTimeout time.Duration
}

func (t boundTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := t.ctx, context.CancelFunc(func() {})
	if t.readTimeout > 0 && req.Method == http.MethodGet {
		ctx, cancel = context.WithTimeout(ctx, t.readTimeout)
	}
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, errUnauthorized
	}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// resolve validates b and builds the clients one call needs.
func (c *Client) resolve(ctx context.Context, b Backend) (*admin, error) {
	au, err := parseURI(b.URI)
	if err != nil {
		return nil, err
	}
	a := &admin{amqp: au}
	if b.ManagementURI == "" {
		return nil, &Error{Reason: ReasonInvalidURI, Op: "parse management URI", Err: errors.New("the management API URL is empty (want http(s)://host:15672)")}
	}
	mu, err := url.Parse(b.ManagementURI)
	if err != nil || (mu.Scheme != "http" && mu.Scheme != "https") || mu.Host == "" {
		// url.Parse errors quote the whole URL, password included.
		return nil, &Error{Reason: ReasonInvalidURI, Op: "parse management URI",
			Err: errors.New("invalid management API URL (want http(s)://[user:password@]host:15672, reserved characters percent-encoded)")}
	}
	user, pass := au.Username, au.Password
	if mu.User != nil {
		user = mu.User.Username()
		pass, _ = mu.User.Password()
	}
	// The endpoint never carries the credentials: it shows up in errors.
	endpoint := (&url.URL{Scheme: mu.Scheme, Host: mu.Host, Path: strings.TrimSuffix(mu.Path, "/")}).String()

	transport := http.DefaultTransport.(*http.Transport).Clone()
	if len(b.CAPEM) > 0 {
		if au.Scheme == "amqps" {
			if a.amqpTLS, err = provision.TLSConfig(b.CAPEM, au.Host); err != nil {
				return nil, &Error{Reason: ReasonTLS, Op: "load the backend CA", Err: err}
			}
		}
		if mu.Scheme == "https" {
			if transport.TLSClientConfig, err = provision.TLSConfig(b.CAPEM, mu.Hostname()); err != nil {
				return nil, &Error{Reason: ReasonTLS, Op: "load the backend CA", Err: err}
			}
		}
	}
	if c.ConnectTimeout > 0 {
		transport.DialContext = (&net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext
		transport.TLSHandshakeTimeout = c.ConnectTimeout
	}
	a.mgmt, err = rabbithole.NewTLSClient(endpoint, user, pass, boundTransport{ctx: ctx, base: transport, readTimeout: c.ConnectTimeout})
	if err != nil {
		return nil, &Error{Reason: ReasonInvalidURI, Op: "parse management URI", Err: errors.New("invalid management API URL")}
	}
	a.mgmt.SetTimeout(c.timeout())
	a.close = transport.CloseIdleConnections
	return a, nil
}

// managementReason classifies a management API answer.
func managementReason(err error) (Reason, bool) {
	if errors.Is(err, errUnauthorized) {
		return ReasonAccessRefused, true
	}
	var resp rabbithole.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return ReasonAccessRefused, true
		}
		return ReasonError, true
	}
	return "", false
}

// isMissing reports a management API 404.
func isMissing(err error) bool {
	var resp rabbithole.ErrorResponse
	return errors.As(err, &resp) && resp.StatusCode == http.StatusNotFound
}

// closeBody releases a management answer whose body nobody reads.
func closeBody(resp *http.Response) {
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
}
