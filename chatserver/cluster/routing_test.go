package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// legacy hides its broker's directed routing, so its replica routes as
// releases before the subscription directory did: a binding per channel,
// publications sent by channel key only.
type legacy struct{ broker.Broker }

// TestRollingUpgradeFromBindings: a replica of an older release (legacy)
// and one of this release, in one channel, hear each other live, whether
// the new one is told so (broker.routing: bindings) or finds out (a client
// of the database that does not name itself as this release's replicas
// do, as an older release's pool would not). Each side publishes alone and
// the other side's subscriber must get every publication without
// publishing anything itself, so no gap fill can hide a publication that
// was never routed to it. Once the old client is gone, the new replica
// unbinds its channels.
//
// The old client comes in two kinds: one that sets no application_name
// (releases before the directory) and one calling itself
// "parley-chatserver", as the first directory release did, which cannot
// read packs and must get none either.
func TestRollingUpgradeFromBindings(t *testing.T) {
	for _, variant := range []string{"bindings", "detected", "detected-directory-release"} {
		forced := variant == "bindings"
		t.Run(variant, func(t *testing.T) {
			c := startCluster(t, 2)
			var oldClient *pgx.Conn
			if !forced {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cfg, err := pgx.ParseConfig(c.db.URL)
				if err != nil {
					t.Fatal(err)
				}
				if variant == "detected-directory-release" {
					cfg.RuntimeParams["application_name"] = "parley-chatserver"
				}
				if oldClient, err = pgx.ConnectConfig(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				defer oldClient.Close(context.Background())
			}
			c.nodes[0].srv.Stop(t)
			c.nodes[0] = c.startNodeWith(0, func(b broker.Broker) broker.Broker { return legacy{b} })
			c.nodes[1].srv.Stop(t)
			c.unbindLinger = -1 // Bindings counts what is bound, not what lingers
			c.nodes[1] = c.startNodeConfigured(1, nil, func(cfg *config.Config) {
				if forced {
					cfg.Broker.Routing = config.RoutingBindings
				}
			})
			c.waitReady(0)
			c.waitReady(1)
			ch := channel(t)
			old := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "old"), "sub@legacy", ch)
			cur := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "new"), "sub@new", ch)
			tl := newTally()
			for i := range 20 {
				if !tl.publish(old.sub, fmt.Sprint("from-legacy-", i)) {
					t.Fatalf("publish on the legacy replica: %v", tl.errs)
				}
			}
			cur.waitFor(t, "the legacy replica's publications", func() bool { return len(cur.publications()) == 20 })
			for i := range 20 {
				if !tl.publish(cur.sub, fmt.Sprint("from-new-", i)) {
					t.Fatalf("publish on the new replica: %v", tl.errs)
				}
			}
			old.waitFor(t, "the new replica's publications", func() bool { return len(old.publications()) == 40 })
			report(t, tl, old, cur)
			if forced {
				return
			}
			// The old client leaves: after two clean heartbeats the new
			// replica routes by the directory alone.
			if err := oldClient.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			nd := c.nodes[1]
			if nd.broker.Bindings() == 0 {
				t.Fatal("the new replica bound nothing while the old client was connected")
			}
			deadline := time.Now().Add(wait)
			t0 := time.Now()
			defer func() { t.Logf("unbound after %v", time.Since(t0)) }()
			for nd.broker.Bindings() > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("still %d bindings after the old client left", nd.broker.Bindings())
				}
				nd.srv.Node.DirectoryHeartbeat(context.Background())
				time.Sleep(50 * time.Millisecond)
			}
			// Unbound but still tracked: a third replica's publications
			// reach it through the directory alone.
			c.nodes = append(c.nodes, c.startNode(2))
			c.waitReady(2)
			third := subscribe(t, client(t, c.nodes[2].srv.WS, "json", "third"), "sub@third", ch)
			for i := range 5 {
				if !tl.publish(third.sub, fmt.Sprint("from-third-", i)) {
					t.Fatalf("publish on the third replica: %v", tl.errs)
				}
			}
			cur.waitFor(t, "the third replica's publications", func() bool { return len(cur.publications()) == 45 })
			check(t, tl, cur)
		})
	}
}

// TestDirectoryRoutesOnlyToOtherReplicas: with the default routing a
// publication goes through RabbitMQ only when another replica has
// subscribers in its channel; the publisher's own subscribers get it at
// commit either way.
func TestDirectoryRoutesOnlyToOtherReplicas(t *testing.T) {
	c := startCluster(t, 2)
	alone, shared := channel(t), channel(t)
	local := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "local"), "alone@node0", alone)
	pubs := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "pub"), "shared@node0", shared)
	remote := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "remote"), "shared@node1", shared)
	skipped := func() float64 { return testutil.ToFloat64(c.nodes[0].srv.Node.Metrics().DirectedSkipped) }
	before := skipped()
	tlAlone, tlShared := newTally(), newTally()
	for i := range 10 {
		if !tlAlone.publish(local.sub, fmt.Sprint("alone-", i)) || !tlShared.publish(pubs.sub, fmt.Sprint("shared-", i)) {
			t.Fatalf("publish: %v %v", tlAlone.errs, tlShared.errs)
		}
	}
	remote.waitFor(t, "the shared channel's publications", func() bool { return len(remote.publications()) == 10 })
	local.waitFor(t, "its own publications", func() bool { return len(local.publications()) == 10 })
	if got := skipped() - before; got != 10 {
		t.Errorf("%v publications went out to nobody through the broker, want the 10 of the channel only node 0 holds", got)
	}
	check(t, tlAlone, local)
	for _, col := range []*collector{pubs, remote} {
		check(t, tlShared, col)
	}
}

// TestSweptReplicaRegistersAgain: a replica the directory took for dead
// (its heartbeats lost for longer than the TTL, here removed by hand) is
// sent nothing; at its next heartbeat it registers its channels again and
// delivers from history what it was not sent.
func TestSweptReplicaRegistersAgain(t *testing.T) {
	c := startCluster(t, 2)
	ch := channel(t)
	pub := subscribe(t, client(t, c.nodes[0].srv.WS, "json", "pub"), "pub@node0", ch)
	sub := subscribe(t, client(t, c.nodes[1].srv.WS, "protobuf", "sub"), "sub@node1", ch)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The node's first heartbeat, so that it knows it was alive.
	c.nodes[1].srv.Node.DirectoryHeartbeat(ctx)
	conn, err := pgx.Connect(ctx, c.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	id := c.nodes[1].srv.Node.ID()
	_, err = conn.Exec(ctx, `DELETE FROM parley_nodes WHERE node = $1`, id)
	if err == nil {
		_, err = conn.Exec(ctx, `UPDATE parley_channels SET nodes = array_remove(nodes, $1)`, id)
	}
	// Closed before the heartbeat: its connection would count as a client
	// of an older release.
	if cerr := conn.Close(ctx); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	tl := newTally()
	for i := range 5 {
		if !tl.publish(pub.sub, fmt.Sprint("unsent-", i)) {
			t.Fatalf("publish: %v", tl.errs)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(sub.publications()); n != 0 {
		t.Fatalf("a swept replica got %d publications", n)
	}
	c.nodes[1].srv.Node.DirectoryHeartbeat(ctx)
	sub.waitFor(t, "what it was not sent, from history", func() bool { return len(sub.publications()) == 5 })
	for i := range 5 {
		if !tl.publish(pub.sub, fmt.Sprint("live-", i)) {
			t.Fatalf("publish: %v", tl.errs)
		}
	}
	sub.waitFor(t, "live publications", func() bool { return len(sub.publications()) == 10 })
	report(t, tl, pub, sub)
}

// TestPackedFanOutManyRooms: many small rooms spread over two replicas,
// every member publishing at once, as the many-rooms benchmark does. The
// replicas pack what piles up for each other (broker.Directed.SendTo),
// and every subscriber still gets every publication of its room once, in
// the room's one order.
func TestPackedFanOutManyRooms(t *testing.T) {
	c := startCluster(t, 2)
	const rooms, each = 8, 15
	type room struct {
		members []*collector
		tl      *tally
	}
	var all []room
	for r := range rooms {
		ch := channel(t)
		rm := room{tl: newTally()}
		for i, nd := range c.nodes {
			for j := range 2 {
				name := fmt.Sprintf("r%d-n%d-%d", r, i, j)
				rm.members = append(rm.members, subscribe(t, client(t, nd.srv.WS, servertest.Protocols[j], name), name, ch))
			}
		}
		all = append(all, rm)
	}
	var wg sync.WaitGroup
	for r, rm := range all {
		for _, m := range rm.members {
			wg.Go(func() {
				for i := range each {
					rm.tl.publish(m.sub, fmt.Sprintf("%d/%s/%d", r, m.name, i))
				}
			})
		}
	}
	wg.Wait()
	for _, rm := range all {
		if n := rm.tl.acked.Load(); n != int64(len(rm.members)*each) {
			t.Fatalf("%d of %d publishes acknowledged: %v", n, len(rm.members)*each, rm.tl.errs)
		}
		for _, m := range rm.members {
			m.waitFor(t, "its room's publications", func() bool { return len(m.publications()) == len(rm.members)*each })
			check(t, rm.tl, m)
		}
		want := rm.members[0].publications()
		for _, m := range rm.members[1:] {
			got := m.publications()
			if len(got) != len(want) {
				t.Fatalf("%s saw %d publications, %s %d", m.name, len(got), rm.members[0].name, len(want))
			}
			for i := range got {
				if got[i].Offset != want[i].Offset || string(got[i].Data) != string(want[i].Data) {
					t.Fatalf("%s saw another order than %s", m.name, rm.members[0].name)
				}
			}
		}
	}
	var packs, packed int64
	for _, nd := range c.nodes {
		p, n := nd.broker.Packed()
		packs, packed = packs+p, packed+n
		// The replica's metrics say the same as its broker.
		m := nd.srv.Node.Metrics()
		if mp, mn := testutil.ToFloat64(m.BrokerPacks), testutil.ToFloat64(m.BrokerPacked); mp != float64(p) || mn != float64(n) {
			t.Errorf("metrics count %v packs of %v publications, the broker %d of %d", mp, mn, p, n)
		}
		// Every publication sent to the other replica has its confirm timed,
		// as its whole send is (so the two stages count the same).
		if sent, confirmed := observations(t, m.BrokerPublishSeconds), observations(t, m.ConfirmSeconds); confirmed == 0 || confirmed != sent {
			t.Errorf("%d publications timed in the broker stage, %d in the confirm stage", sent, confirmed)
		}
	}
	t.Logf("%d publications; the replicas sent %d of them to each other in %d packs", rooms*4*each, packed, packs)
	if packs == 0 {
		t.Error("no pack: the replicas sent each publication alone")
	}
}

// observations is how many times a histogram child observed.
func observations(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}
