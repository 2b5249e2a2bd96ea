package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Provisioner declares and deletes a ChatCluster's topology. The controller
// depends on this interface, so its logic is testable without a broker; Client
// is the real implementation.
type Provisioner interface {
	// Declare creates whatever of t is missing and checks that what exists
	// matches (idempotent; run again on every resync to repair drift).
	Declare(ctx context.Context, uri string, t Topology) (Declared, error)
	// Delete removes t; objects that do not exist count as deleted.
	Delete(ctx context.Context, uri string, t Topology) error
}

// DeclareFunc and DeleteFunc adapt plain functions to Provisioner (tests).
type (
	DeclareFunc func(ctx context.Context, uri string, t Topology) (Declared, error)
	DeleteFunc  func(ctx context.Context, uri string, t Topology) error
)

// Funcs is a Provisioner made of two functions.
type Funcs struct {
	DeclareFunc DeclareFunc
	DeleteFunc  DeleteFunc
}

// Declare calls f.DeclareFunc.
func (f Funcs) Declare(ctx context.Context, uri string, t Topology) (Declared, error) {
	return f.DeclareFunc(ctx, uri, t)
}

// Delete calls f.DeleteFunc.
func (f Funcs) Delete(ctx context.Context, uri string, t Topology) error {
	return f.DeleteFunc(ctx, uri, t)
}

// Declared reports what a Declare did.
type Declared struct {
	// Created lists the objects that did not exist before ("exchange
	// parley.a.b.pub"): all of them the first time, the drifted ones later.
	Created []string
}

// DefaultTimeout bounds one Declare or Delete when the context has no deadline.
const DefaultTimeout = 15 * time.Second

// Client talks to RabbitMQ with one short-lived connection per call.
type Client struct {
	// Timeout bounds a call when ctx has no deadline (DefaultTimeout if 0).
	Timeout time.Duration
	// ConnectionName is shown in RabbitMQ's management UI ("parley-operator" if empty).
	ConnectionName string
	// ConnectTimeout, when set, bounds the dial and the AMQP handshake (and a
	// management API read) within the call's deadline, so a server that
	// accepts connections and never answers is given up on early.
	ConnectTimeout time.Duration
}

var _ Provisioner = (*Client)(nil)

// session is one connection and the channel currently in use. A channel
// exception (404 on a passive declare, 406 on a conflict) closes the channel,
// so the session reopens one when needed.
type session struct {
	conn *amqp091.Connection
	ch   *amqp091.Channel
}

func (s *session) channel() (*amqp091.Channel, error) {
	if s.ch != nil && !s.ch.IsClosed() {
		return s.ch, nil
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, err
	}
	s.ch = ch
	return ch, nil
}

// connect opens a connection bound to ctx: when ctx ends the connection is
// closed, so a blocked broker call returns instead of hanging.
// tlsConfig, when set, is used for amqps:// (nil: the system roots and the
// URI's host).
func (c *Client) connect(ctx context.Context, uri string, tlsConfig *tls.Config) (*session, func(), error) {
	if _, err := parseURI(uri); err != nil {
		return nil, nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.timeout())
	}
	if c.ConnectTimeout > 0 {
		if d := time.Now().Add(c.ConnectTimeout); d.Before(deadline) {
			deadline = d
		}
	}
	var raw net.Conn
	props := amqp091.NewConnectionProperties()
	name := c.ConnectionName
	if name == "" {
		name = "parley-operator"
	}
	props.SetClientConnectionName(name)
	if tlsConfig != nil {
		// amqp091 fills in ServerName on the config it is given.
		tlsConfig = tlsConfig.Clone()
	}
	cfg := amqp091.Config{
		TLSClientConfig: tlsConfig,
		Properties:      props,
		Heartbeat:       10 * time.Second,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Deadline: deadline}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake must finish before the deadline too; amqp091
			// clears it once the connection is open.
			if err := conn.SetDeadline(deadline); err != nil {
				conn.Close()
				return nil, err
			}
			raw = conn
			return conn, nil
		},
	}
	conn, err := amqp091.DialConfig(uri, cfg)
	if err != nil {
		if raw != nil {
			raw.Close()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, nil, classify("connect to broker", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	done := func() {
		stop()
		conn.Close()
	}
	return &session{conn: conn}, done, nil
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout())
}

// callErr classifies a failed call, preferring the context's reason when the
// connection was closed because ctx ended.
func callErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return classify(op, fmt.Errorf("%w (%v)", ctx.Err(), err))
	}
	return classify(op, err)
}

func isPreconditionFailed(err error) bool {
	var e *amqp091.Error
	return errors.As(err, &e) && e.Code == amqp091.PreconditionFailed
}

func isNotFound(err error) bool {
	var e *amqp091.Error
	return errors.As(err, &e) && e.Code == amqp091.NotFound
}

// object is one piece of topology: how to check it passively, how to declare it.
type object struct {
	desc    string
	passive func(ch *amqp091.Channel) error
	declare func(ch *amqp091.Channel) error
	// legacy, when set, re-declares the form an earlier operator version
	// created; an existing object of that form is kept as it is.
	legacy func(ch *amqp091.Channel) error
}

func (t Topology) objects() []object {
	exchange := func(name, kind string) object {
		return object{
			desc: "exchange " + name,
			passive: func(ch *amqp091.Channel) error {
				return ch.ExchangeDeclarePassive(name, kind, true, false, false, false, nil)
			},
			declare: func(ch *amqp091.Channel) error {
				return ch.ExchangeDeclare(name, kind, true, false, false, false, nil)
			},
		}
	}
	// The publication exchange is direct: every routing key is one literal
	// word (docs/topology.md), and RabbitMQ routes a direct exchange with a
	// table lookup instead of a topic trie walk (about a fifth less broker
	// CPU per publication, BenchmarkRabbitMQCost). Clusters provisioned
	// before kept a topic exchange, which routes the same keys the same way.
	publications := exchange(t.Exchange, amqp091.ExchangeDirect)
	publications.legacy = exchange(t.Exchange, amqp091.ExchangeTopic).declare
	dlq := object{
		desc: "queue " + t.DeadLetterQueue,
		passive: func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive(t.DeadLetterQueue, true, false, false, false, nil)
			return err
		},
		declare: func(ch *amqp091.Channel) error {
			if _, err := ch.QueueDeclare(t.DeadLetterQueue, true, false, false, false, deadLetterQueueArgs()); err != nil {
				return err
			}
			return ch.QueueBind(t.DeadLetterQueue, "", t.DeadLetterExchange, false, nil)
		},
	}
	// The dead-letter target first: a node queue pointing at a missing DLX
	// would drop what it rejects.
	return []object{
		exchange(t.DeadLetterExchange, amqp091.ExchangeFanout),
		dlq,
		publications,
		exchange(t.ControlExchange, amqp091.ExchangeFanout),
	}
}

func deadLetterQueueArgs() amqp091.Table {
	return amqp091.Table{
		"x-max-length":  int64(DeadLetterMaxLength),
		"x-overflow":    "drop-head",
		"x-message-ttl": DeadLetterTTL.Milliseconds(),
	}
}

// Declare creates the missing parts of t and re-declares the existing ones, so
// a conflicting object (say, an exchange of another type) is reported as
// ReasonConflict.
func (c *Client) Declare(ctx context.Context, uri string, t Topology) (Declared, error) {
	return c.declare(ctx, uri, nil, t)
}

func (c *Client) declare(ctx context.Context, uri string, tlsConfig *tls.Config, t Topology) (Declared, error) {
	var out Declared
	if err := t.Validate(); err != nil {
		return out, &Error{Reason: ReasonError, Op: "declare topology", Err: err}
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	s, done, err := c.connect(ctx, uri, tlsConfig)
	if err != nil {
		return out, err
	}
	defer done()
	for _, o := range t.objects() {
		ch, err := s.channel()
		if err != nil {
			return out, callErr(ctx, "open channel", err)
		}
		if err := o.passive(ch); err != nil {
			if !isNotFound(err) {
				return out, callErr(ctx, "check "+o.desc, err)
			}
			out.Created = append(out.Created, o.desc)
			if ch, err = s.channel(); err != nil {
				return out, callErr(ctx, "open channel", err)
			}
		}
		if err := o.declare(ch); err != nil {
			if o.legacy != nil && isPreconditionFailed(err) {
				// The declare closed the channel; the legacy form gets a new one.
				if lch, cerr := s.channel(); cerr == nil && o.legacy(lch) == nil {
					continue
				}
			}
			return out, callErr(ctx, "declare "+o.desc, err)
		}
	}
	return out, nil
}

// Missing returns the objects of t that do not exist (passive declares only;
// it changes nothing).
func (c *Client) Missing(ctx context.Context, uri string, t Topology) ([]string, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	s, done, err := c.connect(ctx, uri, nil)
	if err != nil {
		return nil, err
	}
	defer done()
	var missing []string
	for _, o := range t.objects() {
		ch, err := s.channel()
		if err != nil {
			return nil, callErr(ctx, "open channel", err)
		}
		if err := o.passive(ch); err != nil {
			if !isNotFound(err) {
				return nil, callErr(ctx, "check "+o.desc, err)
			}
			missing = append(missing, o.desc)
		}
	}
	return missing, nil
}

// Delete removes t's exchanges and dead-letter queue (with whatever it
// holds). Not-found counts as done, so a retry after a partial failure
// finishes the job.
func (c *Client) Delete(ctx context.Context, uri string, t Topology) error {
	if err := t.Validate(); err != nil {
		return &Error{Reason: ReasonError, Op: "delete topology", Err: err}
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	s, done, err := c.connect(ctx, uri, nil)
	if err != nil {
		return err
	}
	defer done()
	steps := []struct {
		desc string
		do   func(ch *amqp091.Channel) error
	}{
		{"exchange " + t.Exchange, func(ch *amqp091.Channel) error { return ch.ExchangeDelete(t.Exchange, false, false) }},
		{"exchange " + t.ControlExchange, func(ch *amqp091.Channel) error { return ch.ExchangeDelete(t.ControlExchange, false, false) }},
		{"queue " + t.DeadLetterQueue, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete(t.DeadLetterQueue, false, false, false)
			return err
		}},
		{"exchange " + t.DeadLetterExchange, func(ch *amqp091.Channel) error { return ch.ExchangeDelete(t.DeadLetterExchange, false, false) }},
	}
	for _, st := range steps {
		ch, err := s.channel()
		if err != nil {
			return callErr(ctx, "open channel", err)
		}
		if err := st.do(ch); err != nil && !isNotFound(err) {
			return callErr(ctx, "delete "+st.desc, err)
		}
	}
	return nil
}
