package amqp

import (
	"context"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/internal/testenv"
)

// These tests talk to the real RabbitMQ (testenv.AMQPURL) with names unique
// to each test, deleted afterwards.

func newTopology(t *testing.T) Topology {
	t.Helper()
	top := TopologyFor("test", testenv.UniqueName(t, "amqp"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := (&Client{}).Delete(ctx, testenv.AMQPURL(), top); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return top
}

// rawChannel is a plain amqp091 connection for checking what exists,
// independent of the code under test.
func rawChannel(t *testing.T) (*amqp091.Connection, func() *amqp091.Channel) {
	t.Helper()
	conn, err := amqp091.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatalf("connect to RabbitMQ (run `make services` or set PARLEY_TEST_AMQP_URL): %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, func() *amqp091.Channel {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
}

// exists checks an exchange (kind != "") or queue (kind == "") with a passive declare.
func exists(t *testing.T, channel func() *amqp091.Channel, name, kind string) bool {
	t.Helper()
	ch := channel()
	defer ch.Close()
	var err error
	if kind == "" {
		_, err = ch.QueueDeclarePassive(name, true, false, false, false, nil)
	} else {
		err = ch.ExchangeDeclarePassive(name, kind, true, false, false, false, nil)
	}
	if err == nil {
		return true
	}
	if !isNotFound(err) {
		t.Fatalf("passive declare %s: %v", name, err)
	}
	return false
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDeclareCreatesTheDurableTopology(t *testing.T) {
	top := newTopology(t)
	c := &Client{}
	got, err := c.Declare(ctxT(t), testenv.AMQPURL(), top)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sorted(got.Created), sorted(top.Objects())) {
		t.Errorf("Created = %v, want every object %v", got.Created, top.Objects())
	}
	_, channel := rawChannel(t)
	for _, c := range []struct{ name, kind string }{
		{top.Exchange, "topic"}, {top.ControlExchange, "fanout"}, {top.DeadLetterExchange, "fanout"}, {top.DeadLetterQueue, ""},
	} {
		if !exists(t, channel, c.name, c.kind) {
			t.Errorf("%s does not exist after Declare", c.name)
		}
	}

	again, err := c.Declare(ctxT(t), testenv.AMQPURL(), top)
	if err != nil {
		t.Fatalf("second Declare: %v", err)
	}
	if len(again.Created) != 0 {
		t.Errorf("second Declare created %v; it should be a no-op", again.Created)
	}
	missing, err := c.Missing(ctxT(t), testenv.AMQPURL(), top)
	if err != nil || len(missing) != 0 {
		t.Errorf("Missing = %v, %v; want none", missing, err)
	}
}

func TestDeadLetterExchangeRoutesToTheBoundedQueue(t *testing.T) {
	top := newTopology(t)
	if _, err := (&Client{}).Declare(ctxT(t), testenv.AMQPURL(), top); err != nil {
		t.Fatal(err)
	}
	_, channel := rawChannel(t)
	ch := channel()
	// A node queue that dead-letters to the DLX, as a chat server declares it.
	q, err := ch.QueueDeclare("", false, true, true, false, amqp091.Table{"x-dead-letter-exchange": top.DeadLetterExchange})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctxT(t), "", q.Name, false, false, amqp091.Publishing{Body: []byte("poison")}); err != nil {
		t.Fatal(err)
	}
	var d amqp091.Delivery
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		d, ok, err = ch.Get(q.Name, false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("published message never arrived in the node queue")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		dl, ok, err := ch.Get(top.DeadLetterQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(dl.Body) != "poison" {
				t.Fatalf("dead-lettered body = %q", dl.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("rejected message never reached the dead-letter queue")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDeclareRepairsDrift(t *testing.T) {
	top := newTopology(t)
	c := &Client{}
	if _, err := c.Declare(ctxT(t), testenv.AMQPURL(), top); err != nil {
		t.Fatal(err)
	}
	_, channel := rawChannel(t)
	ch := channel()
	if err := ch.ExchangeDelete(top.Exchange, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(top.DeadLetterQueue, false, false, false); err != nil {
		t.Fatal(err)
	}
	missing, err := c.Missing(ctxT(t), testenv.AMQPURL(), top)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"exchange " + top.Exchange, "queue " + top.DeadLetterQueue}
	if !slices.Equal(sorted(missing), sorted(want)) {
		t.Errorf("Missing = %v, want %v", missing, want)
	}
	got, err := c.Declare(ctxT(t), testenv.AMQPURL(), top)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sorted(got.Created), sorted(want)) {
		t.Errorf("Created = %v, want %v", got.Created, want)
	}
	if !exists(t, channel, top.Exchange, "topic") || !exists(t, channel, top.DeadLetterQueue, "") {
		t.Error("drifted objects were not re-created")
	}
}

func TestDeleteRemovesTopologyAndTreatsNotFoundAsDone(t *testing.T) {
	top := newTopology(t)
	c := &Client{}
	if _, err := c.Declare(ctxT(t), testenv.AMQPURL(), top); err != nil {
		t.Fatal(err)
	}
	_, channel := rawChannel(t)
	// One object already gone: Delete must still finish.
	if err := channel().ExchangeDelete(top.ControlExchange, false, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctxT(t), testenv.AMQPURL(), top); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, kind string }{
		{top.Exchange, "topic"}, {top.ControlExchange, "fanout"}, {top.DeadLetterExchange, "fanout"}, {top.DeadLetterQueue, ""},
	} {
		if exists(t, channel, c.name, c.kind) {
			t.Errorf("%s still exists after Delete", c.name)
		}
	}
	if err := c.Delete(ctxT(t), testenv.AMQPURL(), top); err != nil {
		t.Fatalf("Delete of a deleted topology: %v", err)
	}
}

// TestDeclareKeepsALegacyTopicExchange: clusters provisioned before the
// publication exchange became direct keep their topic exchange (it routes
// the same literal keys); everything else is declared around it.
func TestDeclareKeepsALegacyTopicExchange(t *testing.T) {
	top := newTopology(t)
	_, channel := rawChannel(t)
	if err := channel().ExchangeDeclare(top.Exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Client{}).Declare(ctxT(t), testenv.AMQPURL(), top); err != nil {
		t.Fatalf("Declare over the legacy topic exchange: %v", err)
	}
	// Still a topic exchange: declaring it as topic again is accepted, as
	// direct refused.
	if err := channel().ExchangeDeclare(top.Exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("the legacy exchange was replaced: %v", err)
	}
	if !exists(t, channel, top.ControlExchange, "fanout") || !exists(t, channel, top.DeadLetterQueue, "") {
		t.Error("the rest of the topology was not declared")
	}
	fresh := newTopology(t)
	if _, err := (&Client{}).Declare(ctxT(t), testenv.AMQPURL(), fresh); err != nil {
		t.Fatal(err)
	}
	if err := channel().ExchangeDeclare(fresh.Exchange, "direct", true, false, false, false, nil); err != nil {
		t.Fatalf("a new publication exchange is not direct: %v", err)
	}
}

func TestDeclareConflictIsClassified(t *testing.T) {
	top := newTopology(t)
	_, channel := rawChannel(t)
	// Someone already made our topic exchange a fanout.
	if err := channel().ExchangeDeclare(top.Exchange, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err := (&Client{}).Declare(ctxT(t), testenv.AMQPURL(), top)
	if ReasonOf(err) != ReasonConflict {
		t.Fatalf("Declare over a conflicting exchange: reason %q, err %v; want %q", ReasonOf(err), err, ReasonConflict)
	}
	if !strings.Contains(err.Error(), top.Exchange) || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Errorf("error should name the exchange and the broker's reply: %v", err)
	}
}

func withUserinfo(t *testing.T, raw string, user *url.Userinfo) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = user
	return u.String()
}

func TestWrongPasswordIsAccessRefused(t *testing.T) {
	top := newTopology(t)
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	bad := withUserinfo(t, testenv.AMQPURL(), url.UserPassword(u.User.Username(), "wrong-pa55word"))
	_, err = (&Client{}).Declare(ctxT(t), bad, top)
	if ReasonOf(err) != ReasonAccessRefused {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonAccessRefused)
	}
	if strings.Contains(err.Error(), "wrong-pa55word") {
		t.Errorf("error leaks the password: %v", err)
	}
	if err := (&Client{}).Delete(ctxT(t), bad, top); ReasonOf(err) != ReasonAccessRefused {
		t.Errorf("Delete with a wrong password: reason %q, err %v", ReasonOf(err), err)
	}
}

func TestUnknownVhostIsAccessRefused(t *testing.T) {
	top := newTopology(t)
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + testenv.UniqueName(t, "no-such-vhost")
	_, err = (&Client{}).Declare(ctxT(t), u.String(), top)
	if ReasonOf(err) != ReasonAccessRefused {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonAccessRefused)
	}
}

func TestClosedPortIsUnreachable(t *testing.T) {
	top := TopologyFor("test", "never-declared")
	uri := "amqp://guest:guest@" + testenv.ClosedAddr(t) + "/"
	_, err := (&Client{}).Declare(ctxT(t), uri, top)
	if ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonUnreachable)
	}
	if err := (&Client{}).Delete(ctxT(t), uri, top); ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("Delete: reason %q, err %v; want %q", ReasonOf(err), err, ReasonUnreachable)
	}
}

func TestSilentPeerTimesOutAsUnreachable(t *testing.T) {
	// Accepts TCP but never speaks AMQP: the handshake must time out, not hang.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = (&Client{}).Declare(ctx, "amqp://guest:guest@"+l.Addr().String()+"/", TopologyFor("test", "silent"))
	if ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonUnreachable)
	}
}

func TestInvalidURIIsClassified(t *testing.T) {
	_, err := (&Client{}).Declare(ctxT(t), "rabbitmq:5672", TopologyFor("test", "x"))
	if ReasonOf(err) != ReasonInvalidURI {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonInvalidURI)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// BenchmarkDeclareExisting is the cost of one drift check of an unchanged
// topology (connect, passive + active declare of four objects, close): what
// every check interval costs per ChatCluster.
func BenchmarkDeclareExisting(b *testing.B) {
	top := TopologyFor("bench", testenv.UniqueName(b, "amqp"))
	c := &Client{}
	ctx := context.Background()
	if _, err := c.Declare(ctx, testenv.AMQPURL(), top); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Delete(context.Background(), testenv.AMQPURL(), top) })
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Declare(ctx, testenv.AMQPURL(), top); err != nil {
			b.Fatal(err)
		}
	}
}
