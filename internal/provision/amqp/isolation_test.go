package amqp

import (
	"errors"
	"net/url"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Two ChatClusters on one RabbitMQ: what one tenant's credentials can and
// cannot do. Every refusal is checked for its AMQP code, so a test cannot
// pass because of an unrelated failure.

func amqpCode(err error) int {
	var e *amqp091.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// channelOf opens a fresh channel on conn (a refusal closes the channel).
func channelOf(t *testing.T, conn *amqp091.Connection) *amqp091.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func twoTenants(t *testing.T) (a, b Tenant, ra, rb TenantResult) {
	t.Helper()
	a, b = newTenant(t), newTenant(t)
	ra = ensureTenant(t, a, "pw-a-"+a.VHost)
	rb = ensureTenant(t, b, "pw-b-"+b.VHost)
	return a, b, ra, rb
}

func TestTenantCannotOpenAnotherTenantsVhost(t *testing.T) {
	a, b, ra, _ := twoTenants(t)
	u, err := url.Parse(ra.URI)
	if err != nil {
		t.Fatal(err)
	}
	u.Path, u.RawPath = "/"+b.VHost, "/"+url.PathEscape(b.VHost)
	conn, err := amqp091.Dial(u.String())
	if err == nil {
		conn.Close()
		t.Fatalf("user %s opened vhost %s", a.User, b.VHost)
	}
	if c := amqpCode(err); c != amqp091.AccessRefused && c != amqp091.NotAllowed {
		t.Fatalf("open another tenant's vhost: %v; want 403 ACCESS_REFUSED or 530 NOT_ALLOWED", err)
	}
	// Nor the default vhost, where the admin works.
	u.Path, u.RawPath = "/", ""
	if conn, err := amqp091.Dial(u.String()); err == nil {
		conn.Close()
		t.Fatalf("user %s opened the default vhost", a.User)
	}
}

func TestTenantCannotReachAnotherTenantsObjectsByName(t *testing.T) {
	_, b, ra, rb := twoTenants(t)
	conn := dialAs(t, ra.URI)
	bTop := b.Topology
	// Inside its own vhost, A tries B's names: refused by the permission
	// regexes (403), before RabbitMQ even looks for the object.
	for _, tc := range []struct {
		what string
		do   func(ch *amqp091.Channel) error
	}{
		{"declare B's exchange", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare(bTop.Exchange, "topic", true, false, false, false, nil)
		}},
		{"declare a node queue under B's exchange", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare(bTop.Exchange+".node.x.1", false, true, true, false, nil)
			return err
		}},
		{"consume B's dead-letter queue", func(ch *amqp091.Channel) error {
			_, err := ch.Consume(bTop.DeadLetterQueue, "", false, false, false, false, nil)
			return err
		}},
		{"publish to B's exchange", func(ch *amqp091.Channel) error {
			// A refused publish closes the channel asynchronously.
			closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
			if err := ch.PublishWithContext(ctxT(t), bTop.Exchange, "c.x", false, false, amqp091.Publishing{Body: []byte("x")}); err != nil {
				return err
			}
			select {
			case e := <-closed:
				if e == nil {
					return errors.New("channel closed without an error")
				}
				return e
			case <-time.After(5 * time.Second):
				return errors.New("publish was not refused")
			}
		}},
	} {
		err := tc.do(channelOf(t, conn))
		if amqpCode(err) != amqp091.AccessRefused {
			t.Errorf("%s: %v; want 403 ACCESS_REFUSED", tc.what, err)
		}
	}
	// B's objects are untouched and its user still works.
	missing, err := (&Client{}).Missing(ctxT(t), TenantURI(mustParse(t, rb.URI), "guest", "guest", b.VHost), bTop)
	if err != nil || len(missing) != 0 {
		t.Fatalf("B's topology after A's attempts: missing %v, %v", missing, err)
	}
	dialAs(t, rb.URI)
}

func mustParse(t *testing.T, uri string) amqp091.URI {
	t.Helper()
	u, err := amqp091.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestTenantCannotConfigureItsDurableTopology(t *testing.T) {
	a := newTenant(t)
	res := ensureTenant(t, a, "pw")
	conn := dialAs(t, res.URI)
	top := a.Topology
	for _, tc := range []struct {
		what string
		do   func(ch *amqp091.Channel) error
	}{
		{"delete the publications exchange", func(ch *amqp091.Channel) error { return ch.ExchangeDelete(top.Exchange, false, false) }},
		{"delete the control exchange", func(ch *amqp091.Channel) error { return ch.ExchangeDelete(top.ControlExchange, false, false) }},
		{"re-declare the publications exchange", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare(top.Exchange, "topic", true, false, false, false, nil)
		}},
		{"declare another exchange", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare(top.Exchange+"-mine", "fanout", false, true, false, false, nil)
		}},
		{"delete the dead-letter queue", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete(top.DeadLetterQueue, false, false, false)
			return err
		}},
		{"read the dead-letter queue", func(ch *amqp091.Channel) error {
			_, _, err := ch.Get(top.DeadLetterQueue, true)
			return err
		}},
		{"declare a queue outside <exchange>.node.*", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("mine", false, true, true, false, nil)
			return err
		}},
	} {
		err := tc.do(channelOf(t, conn))
		if amqpCode(err) != amqp091.AccessRefused {
			t.Errorf("%s: %v; want 403 ACCESS_REFUSED", tc.what, err)
		}
	}
	missing, err := (&Client{}).Missing(ctxT(t), TenantURI(mustParse(t, res.URI), "guest", "guest", a.VHost), top)
	if err != nil || len(missing) != 0 {
		t.Fatalf("topology after the attempts: missing %v, %v", missing, err)
	}
}

// TestTenantRunsTheChatServersPatternWithLeastPrivilege does with A's
// credentials what chatserver/broker/amqp does (docs/topology.md): passive
// checks, its exclusive node queue with the documented arguments, bindings,
// publish, consume, reject to the dead-letter exchange, delete its queue.
func TestTenantRunsTheChatServersPatternWithLeastPrivilege(t *testing.T) {
	a := newTenant(t)
	res := ensureTenant(t, a, "pw")
	top := a.Topology
	conn := dialAs(t, res.URI)
	ch := channelOf(t, conn)
	for _, ex := range []struct{ name, kind string }{{top.Exchange, "topic"}, {top.ControlExchange, "fanout"}, {top.DeadLetterExchange, "fanout"}} {
		if err := ch.ExchangeDeclarePassive(ex.name, ex.kind, true, false, false, false, nil); err != nil {
			t.Fatalf("passive check of %s: %v", ex.name, err)
		}
	}
	q := top.Exchange + ".node.pod-0.1"
	if _, err := ch.QueueDeclare(q, false, true, true, false, amqp091.Table{
		"x-queue-type":           "classic",
		"x-max-length":           int64(100000),
		"x-overflow":             "drop-head",
		"x-dead-letter-exchange": top.DeadLetterExchange,
	}); err != nil {
		t.Fatalf("declare the node queue: %v", err)
	}
	for _, bnd := range []struct{ key, ex string }{{"", top.ControlExchange}, {"probe.pod-0", top.Exchange}, {"c.0123456789abcdef0123456789abcdef", top.Exchange}} {
		if err := ch.QueueBind(q, bnd.key, bnd.ex, false, nil); err != nil {
			t.Fatalf("bind %s to %s %q: %v", q, bnd.ex, bnd.key, err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q, "", false, true, false, false, nil)
	if err != nil {
		t.Fatalf("consume the node queue: %v", err)
	}
	for _, p := range []struct{ ex, key, body string }{
		{top.Exchange, "c.0123456789abcdef0123456789abcdef", "publication"},
		{top.Exchange, "probe.pod-0", "probe"},
		{top.ControlExchange, "", "control"},
		{top.Exchange, "c.0123456789abcdef0123456789abcdef", "poison"},
	} {
		c, err := ch.PublishWithDeferredConfirm(p.ex, p.key, false, false, amqp091.Publishing{Body: []byte(p.body)})
		if err != nil {
			t.Fatalf("publish %s: %v", p.body, err)
		}
		if ok, err := c.WaitContext(ctxT(t)); !ok || err != nil {
			t.Fatalf("publish %s not confirmed: %v, %v", p.body, ok, err)
		}
	}
	for _, want := range []string{"publication", "probe", "control", "poison"} {
		select {
		case d := <-deliveries:
			if string(d.Body) != want {
				t.Fatalf("received %q, want %q", d.Body, want)
			}
			if want == "poison" {
				err = d.Reject(false)
			} else {
				err = d.Ack(false)
			}
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never arrived", want)
		}
	}
	// The rejected message reached the dead-letter queue (read as admin: the
	// tenant may not read it).
	admin := dialAs(t, TenantURI(mustParse(t, res.URI), "guest", "guest", a.VHost))
	ach := channelOf(t, admin)
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, ok, err := ach.Get(top.DeadLetterQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(d.Body) != "poison" {
				t.Fatalf("dead-lettered %q", d.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rejected message never reached the dead-letter queue")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := ch.QueueUnbind(q, "c.0123456789abcdef0123456789abcdef", top.Exchange, nil); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatalf("delete its own queue: %v", err)
	}
}
