package amqp

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/internal/testenv"
)

// These tests create vhosts and users on the real RabbitMQ (testenv.AMQPURL
// and its management API) with names unique to each test, deleted afterwards
// whatever state the test left them in.

func testBackend() Backend {
	return Backend{URI: testenv.AMQPURL(), ManagementURI: testenv.AMQPManagementURL()}
}

// mgmt is a management client independent of the code under test, for
// checking and for tampering.
func mgmt(t *testing.T) *rabbithole.Client {
	t.Helper()
	au, err := amqp091.ParseURI(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	mu, err := url.Parse(testenv.AMQPManagementURL())
	if err != nil {
		t.Fatal(err)
	}
	user, pass := au.Username, au.Password
	if mu.User != nil {
		user = mu.User.Username()
		pass, _ = mu.User.Password()
		mu.User = nil
	}
	c, err := rabbithole.NewClient(mu.String(), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(15 * time.Second)
	return c
}

// newTenant names a tenant after the test and removes its vhost and user
// when the test ends, marked or not.
func newTenant(t *testing.T) Tenant {
	t.Helper()
	name := testenv.UniqueName(t, "t")
	ten := Tenant{
		VHost:    "parley.test." + name,
		User:     "parley.test." + name,
		Owner:    "test/" + name,
		Topology: TopologyFor("test", name),
	}
	forgetTenant(t, ten)
	return ten
}

func forgetTenant(t *testing.T, ten Tenant) {
	t.Cleanup(func() {
		m := mgmt(t)
		if resp, err := m.DeleteVhost(ten.VHost); err != nil {
			t.Errorf("cleanup: delete vhost %s: %v", ten.VHost, err)
		} else {
			resp.Body.Close()
		}
		if resp, err := m.DeleteUser(ten.User); err != nil {
			t.Errorf("cleanup: delete user %s: %v", ten.User, err)
		} else {
			resp.Body.Close()
		}
	})
}

func ensureTenant(t *testing.T, ten Tenant, password string) TenantResult {
	t.Helper()
	res, err := (&Client{}).EnsureTenant(ctxT(t), testBackend(), ten, password)
	if err != nil {
		t.Fatalf("EnsureTenant(%s): %v", ten.VHost, err)
	}
	return res
}

// dialAs opens an AMQP connection with uri, closed when the test ends.
func dialAs(t *testing.T, uri string) *amqp091.Connection {
	t.Helper()
	conn, err := amqp091.Dial(uri)
	if err != nil {
		t.Fatalf("connect with the tenant's URI: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func permissionsOf(t *testing.T, vhost, user string) Permissions {
	t.Helper()
	p, err := mgmt(t).GetPermissionsIn(vhost, user)
	if err != nil {
		t.Fatalf("permissions of %s in %s: %v", user, vhost, err)
	}
	return Permissions{Configure: p.Configure, Write: p.Write, Read: p.Read}
}

func TestEnsureTenantCreatesVhostUserPermissionsAndTopology(t *testing.T) {
	ten := newTenant(t)
	pw := "pa:ss/w@rd?#" + testenv.UniqueName(t, "p")
	res := ensureTenant(t, ten, pw)

	want := append([]string{"vhost " + ten.VHost, "user " + ten.User}, ten.Topology.Objects()...)
	if !slices.Equal(sorted(res.Created), sorted(want)) {
		t.Errorf("Created = %v, want %v", res.Created, want)
	}
	u, err := amqp091.ParseURI(res.URI)
	if err != nil {
		t.Fatalf("tenant URI does not parse: %v", err)
	}
	if u.Username != ten.User || u.Password != pw || u.Vhost != ten.VHost || u.Host != "127.0.0.1" || u.Port != 5672 {
		t.Errorf("tenant URI names user %q vhost %q host %s:%d; want %q, %q on the backend's host", u.Username, u.Vhost, u.Host, u.Port, ten.User, ten.VHost)
	}
	if strings.Contains(res.URI, "guest") {
		t.Errorf("tenant URI carries the admin's credentials: %s", res.URI)
	}

	m := mgmt(t)
	v, err := m.GetVhost(ten.VHost)
	if err != nil {
		t.Fatal(err)
	}
	if v.Description != ten.marker() || !slices.Contains(v.Tags, ten.ownerTag()) {
		t.Errorf("vhost description %q tags %v: not marked for %s", v.Description, v.Tags, ten.Owner)
	}
	user, err := m.GetUser(ten.User)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(nonEmpty(user.Tags), []string{ten.ownerTag()}) {
		t.Errorf("user tags %v, want only the owner tag", user.Tags)
	}
	if got := permissionsOf(t, ten.VHost, ten.User); got != ChatServerPermissions(ten.Topology) {
		t.Errorf("user permissions %+v, want %+v", got, ChatServerPermissions(ten.Topology))
	}
	if got := permissionsOf(t, ten.VHost, "guest"); got != fullPermissions {
		t.Errorf("admin permissions on the tenant vhost %+v, want full", got)
	}
	perms, err := m.ListPermissionsOf(ten.User)
	if err != nil {
		t.Fatal(err)
	}
	if len(perms) != 1 || perms[0].Vhost != ten.VHost {
		t.Errorf("the tenant user has permissions %+v; want its own vhost only", perms)
	}
	// The topology is in the tenant's vhost, checked with its own credentials.
	ch, err := dialAs(t, res.URI).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclarePassive(ten.Topology.Exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("exchange %s is not in the tenant vhost: %v", ten.Topology.Exchange, err)
	}

	before := user.PasswordHash
	again := ensureTenant(t, ten, pw)
	if len(again.Created) != 0 || len(again.Repaired) != 0 {
		t.Errorf("second EnsureTenant changed something: created %v repaired %v", again.Created, again.Repaired)
	}
	if again.URI != res.URI {
		t.Errorf("second EnsureTenant URI %q, first %q", again.URI, res.URI)
	}
	if after, _ := m.GetUser(ten.User); after == nil || after.PasswordHash != before {
		t.Error("an unchanged password was rewritten")
	}
}

func TestChatServerPermissionsAreDocTopologysRegexes(t *testing.T) {
	p := ChatServerPermissions(TopologyFor("chat", "team-chat"))
	want := Permissions{
		Configure: `^parley\.chat\.team-chat\.pub\.node\..*$`,
		Write:     `^(parley\.chat\.team-chat\.pub|parley\.chat\.team-chat\.control|parley\.chat\.team-chat\.dlx|parley\.chat\.team-chat\.pub\.node\..*)$`,
		Read:      `^(parley\.chat\.team-chat\.pub|parley\.chat\.team-chat\.control|parley\.chat\.team-chat\.pub\.node\..*)$`,
	}
	if p != want {
		t.Fatalf("ChatServerPermissions =\n%+v\nwant\n%+v", p, want)
	}
}

func TestEnsureTenantRepairsDrift(t *testing.T) {
	ten := newTenant(t)
	pw := testenv.UniqueName(t, "pw")
	ensureTenant(t, ten, pw)
	m := mgmt(t)
	// Widened by hand, a tag added, access to another vhost, an exchange gone.
	for _, step := range []func() (*http.Response, error){
		func() (*http.Response, error) {
			return m.UpdatePermissionsIn(ten.VHost, ten.User, rabbithole.Permissions{Configure: ".*", Write: ".*", Read: ".*"})
		},
		func() (*http.Response, error) {
			return m.UpdatePermissionsIn("/", ten.User, rabbithole.Permissions{Configure: ".*", Write: ".*", Read: ".*"})
		},
		func() (*http.Response, error) {
			return m.PutUser(ten.User, rabbithole.UserSettings{Password: pw, Tags: rabbithole.UserTags{ten.ownerTag(), "administrator"}})
		},
		func() (*http.Response, error) { return m.DeleteExchange(ten.VHost, ten.Topology.ControlExchange) },
	} {
		resp, err := step()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	res := ensureTenant(t, ten, pw)
	if got := permissionsOf(t, ten.VHost, ten.User); got != ChatServerPermissions(ten.Topology) {
		t.Errorf("widened permissions not narrowed back: %+v", got)
	}
	perms, err := m.ListPermissionsOf(ten.User)
	if err != nil {
		t.Fatal(err)
	}
	if len(perms) != 1 || perms[0].Vhost != ten.VHost {
		t.Errorf("permissions on other vhosts were kept: %+v", perms)
	}
	if u, err := m.GetUser(ten.User); err != nil || !slices.Equal(nonEmpty(u.Tags), []string{ten.ownerTag()}) {
		t.Errorf("user tags not restored: %+v, %v", u, err)
	}
	if !slices.Equal(res.Created, []string{"exchange " + ten.Topology.ControlExchange}) {
		t.Errorf("Created = %v, want the deleted exchange only", res.Created)
	}
	if len(res.Repaired) != 3 {
		t.Errorf("Repaired = %v; want permissions, tags and the other vhost's permissions", res.Repaired)
	}
	// The user may still log in with the same password (tags were rewritten with it).
	dialAs(t, res.URI)
}

func TestEnsureTenantAppliesAPasswordChange(t *testing.T) {
	ten := newTenant(t)
	first := ensureTenant(t, ten, "first-"+testenv.UniqueName(t, "pw"))
	second := ensureTenant(t, ten, "second-"+testenv.UniqueName(t, "pw"))
	if !slices.Equal(second.Repaired, []string{"password of user " + ten.User}) {
		t.Errorf("Repaired = %v, want the password", second.Repaired)
	}
	dialAs(t, second.URI)
	if conn, err := amqp091.Dial(first.URI); err == nil {
		conn.Close()
		t.Fatal("the old password still opens the vhost")
	} else if !isAccessRefused(err) {
		t.Fatalf("old password: %v; want access refused", err)
	}
}

func isAccessRefused(err error) bool {
	return ReasonOf(classify("connect", err)) == ReasonAccessRefused
}

func TestEnsureTenantRefusesForeignVhostOrUser(t *testing.T) {
	m := mgmt(t)
	c := &Client{}

	// A vhost someone else made, with the name we would pick.
	ten := newTenant(t)
	resp, err := m.PutVhost(ten.VHost, rabbithole.VhostSettings{Description: "the payments team's"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := c.EnsureTenant(ctxT(t), testBackend(), ten, "pw"); ReasonOf(err) != ReasonConflict || !strings.Contains(err.Error(), ten.VHost) {
		t.Fatalf("EnsureTenant over a foreign vhost: reason %q, err %v", ReasonOf(err), err)
	}
	if _, err := m.GetUser(ten.User); !isMissing(err) {
		t.Errorf("a user was created next to a foreign vhost: %v", err)
	}
	if err := c.DeleteTenant(ctxT(t), testBackend(), ten); ReasonOf(err) != ReasonConflict {
		t.Fatalf("DeleteTenant of a foreign vhost: reason %q, err %v", ReasonOf(err), err)
	}
	if v, err := m.GetVhost(ten.VHost); err != nil || v.Description != "the payments team's" {
		t.Fatalf("the foreign vhost was deleted or changed: %+v, %v", v, err)
	}

	// A user someone else made.
	other := newTenant(t)
	resp, err = m.PutUser(other.User, rabbithole.UserSettings{Password: "theirs", Tags: rabbithole.UserTags{"monitoring"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := c.EnsureTenant(ctxT(t), testBackend(), other, "pw"); ReasonOf(err) != ReasonConflict || !strings.Contains(err.Error(), other.User) {
		t.Fatalf("EnsureTenant over a foreign user: reason %q, err %v", ReasonOf(err), err)
	}
	if err := c.DeleteTenant(ctxT(t), testBackend(), other); ReasonOf(err) != ReasonConflict {
		t.Fatalf("DeleteTenant of a foreign user: reason %q, err %v", ReasonOf(err), err)
	}
	if u, err := m.GetUser(other.User); err != nil || !passwordMatches(u.PasswordHash, string(u.HashingAlgorithm), "theirs") {
		t.Fatalf("the foreign user was deleted or its password changed: %v", err)
	}
	if _, err := m.GetVhost(other.VHost); !isMissing(err) {
		t.Errorf("a vhost was created next to a foreign user: %v", err)
	}

	// Another ChatCluster's tenant under the same names.
	mine := newTenant(t)
	ensureTenant(t, mine, "pw")
	theirs := mine
	theirs.Owner = "elsewhere/" + mine.Owner[strings.IndexByte(mine.Owner, '/')+1:]
	if _, err := c.EnsureTenant(ctxT(t), testBackend(), theirs, "pw2"); ReasonOf(err) != ReasonConflict {
		t.Fatalf("EnsureTenant of another owner: reason %q, err %v", ReasonOf(err), err)
	}
	if err := c.DeleteTenant(ctxT(t), testBackend(), theirs); ReasonOf(err) != ReasonConflict {
		t.Fatalf("DeleteTenant of another owner: reason %q, err %v", ReasonOf(err), err)
	}
}

func TestDeleteTenantRemovesVhostAndUserAndIsIdempotent(t *testing.T) {
	ten := newTenant(t)
	res := ensureTenant(t, ten, "pw-"+testenv.UniqueName(t, "x"))
	conn := dialAs(t, res.URI)
	c := &Client{}
	if err := c.DeleteTenant(ctxT(t), testBackend(), ten); err != nil {
		t.Fatal(err)
	}
	m := mgmt(t)
	if _, err := m.GetVhost(ten.VHost); !isMissing(err) {
		t.Errorf("vhost still there: %v", err)
	}
	if _, err := m.GetUser(ten.User); !isMissing(err) {
		t.Errorf("user still there: %v", err)
	}
	select {
	case <-conn.NotifyClose(make(chan *amqp091.Error, 1)):
	case <-time.After(10 * time.Second):
		t.Error("the tenant's connection survived the deletion of its vhost")
	}
	if err := c.DeleteTenant(ctxT(t), testBackend(), ten); err != nil {
		t.Fatalf("second DeleteTenant: %v", err)
	}
}

func TestEnsureTenantValidatesItsInput(t *testing.T) {
	ok := Tenant{VHost: "parley.a.b", User: "parley.a.b", Owner: "a/b", Topology: TopologyFor("a", "b")}
	cases := map[string]func(*Tenant){
		"empty vhost":         func(t *Tenant) { t.VHost = "" },
		"empty user":          func(t *Tenant) { t.User = "" },
		"empty owner":         func(t *Tenant) { t.Owner = "" },
		"comma in owner":      func(t *Tenant) { t.Owner = "a/b,administrator" },
		"control character":   func(t *Tenant) { t.User = "a\nb" },
		"overlong vhost":      func(t *Tenant) { t.VHost = strings.Repeat("v", 256) },
		"incomplete topology": func(t *Tenant) { t.Topology.Exchange = "" },
	}
	for name, mutate := range cases {
		ten := ok
		mutate(&ten)
		_, err := (&Client{}).EnsureTenant(ctxT(t), testBackend(), ten, "pw")
		if ReasonOf(err) != ReasonInvalid {
			t.Errorf("%s: reason %q, err %v; want %q", name, ReasonOf(err), err, ReasonInvalid)
		}
	}
	if _, err := (&Client{}).EnsureTenant(ctxT(t), testBackend(), ok, ""); ReasonOf(err) != ReasonInvalid {
		t.Errorf("empty password: reason %q, err %v", ReasonOf(err), err)
	}
}

func TestProbe(t *testing.T) {
	c := &Client{}
	info, err := c.Probe(ctxT(t), testBackend())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Version, "3.") && !strings.HasPrefix(info.Version, "4.") {
		t.Errorf("Version = %q", info.Version)
	}

	bad := testBackend()
	bad.ManagementURI = "http://guest:wr0ng-pa55@127.0.0.1:15672"
	if _, err := c.Probe(ctxT(t), bad); ReasonOf(err) != ReasonAccessRefused || strings.Contains(err.Error(), "wr0ng-pa55") {
		t.Errorf("management API with a wrong password: reason %q, err %v", ReasonOf(err), err)
	}
	bad = testBackend()
	bad.URI = withUserinfo(t, bad.URI, url.UserPassword("guest", "wr0ng-pa55"))
	if _, err := c.Probe(ctxT(t), bad); ReasonOf(err) != ReasonAccessRefused || strings.Contains(err.Error(), "wr0ng-pa55") {
		t.Errorf("wrong admin password (management and AMQP): reason %q, err %v", ReasonOf(err), err)
	}
	bad = testBackend()
	bad.ManagementURI = "http://" + testenv.ClosedAddr(t)
	if _, err := c.Probe(ctxT(t), bad); ReasonOf(err) != ReasonUnreachable {
		t.Errorf("closed management port: reason %q, err %v", ReasonOf(err), err)
	}
	for _, m := range []string{"", "127.0.0.1:15672", "ftp://h", "http://u:s3cret@h:x/"} {
		bad = testBackend()
		bad.ManagementURI = m
		if _, err := c.Probe(ctxT(t), bad); ReasonOf(err) != ReasonInvalidURI || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("management URI %q: reason %q, err %v", m, ReasonOf(err), err)
		}
	}
}

func TestProbeIsBoundedByTheContext(t *testing.T) {
	// A management port that accepts and never answers must not hang the call.
	addr := testenv.Blackhole(t)
	b := testBackend()
	b.ManagementURI = "http://" + addr
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := (&Client{}).Probe(ctx, b)
	if ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("reason %q, err %v; want %q", ReasonOf(err), err, ReasonUnreachable)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Probe took %v with a 500ms context", d)
	}
}

func TestPasswordMatchesRabbitMQsOwnHash(t *testing.T) {
	// The server hashes the password itself; our check must accept exactly it.
	m := mgmt(t)
	ten := newTenant(t)
	resp, err := m.PutUser(ten.User, rabbithole.UserSettings{Password: "pässwörd 1"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u, err := m.GetUser(ten.User)
	if err != nil {
		t.Fatal(err)
	}
	alg := string(u.HashingAlgorithm)
	if !passwordMatches(u.PasswordHash, alg, "pässwörd 1") {
		t.Fatalf("passwordMatches rejects the server's own hash %q (%s)", u.PasswordHash, alg)
	}
	if passwordMatches(u.PasswordHash, alg, "pässwörd 2") || passwordMatches(u.PasswordHash, "rabbit_password_hashing_md5", "pässwörd 1") || passwordMatches("", alg, "") {
		t.Fatal("passwordMatches accepts a wrong password, an unknown algorithm or an empty hash")
	}
}
