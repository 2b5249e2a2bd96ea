package amqp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Tenant is one ChatCluster's share of a RabbitMQ: its own vhost, its own
// user, and the topology inside that vhost.
type Tenant struct {
	// VHost is the tenant's virtual host ("parley.<namespace>.<name>").
	VHost string
	// User is the chat servers' RabbitMQ user; the same string as VHost is fine.
	User string
	// Owner is "<namespace>/<name>" of the ChatCluster. It is written on the
	// vhost (description and a tag) and on the user (a tag), and checked
	// before any change: the operator never adopts, alters or deletes a vhost
	// or user that is not marked for this owner (ReasonConflict).
	Owner string
	// Topology is declared inside VHost by the admin, as Declare does.
	Topology Topology
}

// TenantResult reports what EnsureTenant did and how the chat servers connect.
type TenantResult struct {
	// Created lists what did not exist before ("vhost x", "user y",
	// "exchange z"): everything the first time, the drifted objects later.
	Created []string
	// Repaired lists what existed but differed and was set right ("password
	// of user y", "permissions of user y in vhost x", "tags of user y").
	Repaired []string
	// URI is the AMQP URI the chat servers use: Backend.URI's scheme, host and
	// port, Tenant.User and the password, Tenant.VHost (path-escaped). It
	// holds no admin credential.
	URI string
}

// TenantProvisioner is what the controller depends on for per-ChatCluster
// isolation on a shared RabbitMQ; Client is the real implementation and
// TenantFuncs adapts functions for tests.
type TenantProvisioner interface {
	// EnsureTenant creates or repairs the vhost, the user (with password,
	// rewritten when it differs), the user's permissions on VHost (exactly
	// those docs/topology.md lists, built from Topology's names; nothing on
	// other vhosts), gives the admin user full permissions on VHost and
	// declares Topology in VHost. Idempotent; permissions widened by hand
	// are narrowed back.
	EnsureTenant(ctx context.Context, b Backend, t Tenant, password string) (TenantResult, error)
	// DeleteTenant deletes the vhost (with everything in it) and the user.
	// Missing counts as done; a vhost or user not marked for t.Owner is left
	// in place (ReasonConflict).
	DeleteTenant(ctx context.Context, b Backend, t Tenant) error
	// Probe checks that the backend answers with the admin's credentials
	// (management API and AMQP) and returns its version.
	Probe(ctx context.Context, b Backend) (BackendInfo, error)
}

// TenantFuncs is a TenantProvisioner made of functions (tests).
type TenantFuncs struct {
	EnsureTenantFunc func(ctx context.Context, b Backend, t Tenant, password string) (TenantResult, error)
	DeleteTenantFunc func(ctx context.Context, b Backend, t Tenant) error
	ProbeFunc        func(ctx context.Context, b Backend) (BackendInfo, error)
}

// EnsureTenant calls f.EnsureTenantFunc.
func (f TenantFuncs) EnsureTenant(ctx context.Context, b Backend, t Tenant, password string) (TenantResult, error) {
	return f.EnsureTenantFunc(ctx, b, t, password)
}

// DeleteTenant calls f.DeleteTenantFunc.
func (f TenantFuncs) DeleteTenant(ctx context.Context, b Backend, t Tenant) error {
	return f.DeleteTenantFunc(ctx, b, t)
}

// Probe calls f.ProbeFunc.
func (f TenantFuncs) Probe(ctx context.Context, b Backend) (BackendInfo, error) {
	return f.ProbeFunc(ctx, b)
}

var _ TenantProvisioner = (*Client)(nil)

// maxShortString is AMQP's shortstr limit, which bounds vhost and user
// names in connection.open and the PLAIN handshake, and RabbitMQ's atom
// length, which bounds a user tag.
const maxShortString = 255

// tagPrefix starts the tag naming a vhost's or user's owner; "parley" alone
// marks a vhost as Parley's in listings.
const (
	managedTag = "parley"
	tagPrefix  = "parley-owner:"
)

func (t Tenant) marker() string   { return "managed by parley for ChatCluster " + t.Owner }
func (t Tenant) ownerTag() string { return tagPrefix + t.Owner }

// Validate refuses names RabbitMQ cannot hold or the owner marker cannot carry.
func (t Tenant) Validate() error {
	for _, f := range []struct{ field, v string }{{"vhost", t.VHost}, {"user", t.User}, {"owner", t.Owner}} {
		switch {
		case f.v == "":
			return fmt.Errorf("tenant %s is empty", f.field)
		case !utf8.ValidString(f.v) || strings.ContainsFunc(f.v, func(r rune) bool { return r < ' ' || r == 0x7f }):
			return fmt.Errorf("tenant %s %q holds a control character or invalid UTF-8", f.field, f.v)
		case len(f.v) > maxShortString:
			return fmt.Errorf("tenant %s %q is longer than %d bytes", f.field, f.v, maxShortString)
		}
	}
	// Tags travel as one comma-separated string.
	if strings.Contains(t.Owner, ",") {
		return fmt.Errorf("tenant owner %q must not contain ','", t.Owner)
	}
	if len(t.ownerTag()) > maxShortString {
		return fmt.Errorf("tenant owner %q is too long for a RabbitMQ tag (%d bytes at most)", t.Owner, maxShortString-len(tagPrefix))
	}
	return t.Topology.Validate()
}

// Permissions are the configure/write/read regular expressions of one user
// in one vhost.
type Permissions struct{ Configure, Write, Read string }

// ChatServerPermissions are the permissions docs/topology.md lists for the
// chat servers of top ("Permissions the chat server's RabbitMQ user needs"),
// with E, C and D the exchanges: configure its own node queues, write to the
// exchanges and its queues (binding, publishing, naming D as dead-letter
// exchange), read from E, C and its queues (binding, consuming). Nothing on
// the durable exchanges' configuration, nothing on the dead-letter queue.
func ChatServerPermissions(top Topology) Permissions {
	e, c, d := regexp.QuoteMeta(top.Exchange), regexp.QuoteMeta(top.ControlExchange), regexp.QuoteMeta(top.DeadLetterExchange)
	node := e + `\.node\..*`
	return Permissions{
		Configure: "^" + node + "$",
		Write:     "^(" + strings.Join([]string{e, c, d, node}, "|") + ")$",
		Read:      "^(" + strings.Join([]string{e, c, node}, "|") + ")$",
	}
}

// fullPermissions is what the admin gets on a tenant vhost, to declare and
// repair the topology over AMQP.
var fullPermissions = Permissions{Configure: ".*", Write: ".*", Read: ".*"}

// TenantURI is the AMQP URI of user/password on vhost at base's scheme,
// host and port. base's query (heartbeat, TLS files) is not carried over.
func TenantURI(base amqp091.URI, user, password, vhost string) string {
	u := url.URL{
		Scheme:  base.Scheme,
		User:    url.UserPassword(user, password),
		Host:    net.JoinHostPort(base.Host, strconv.Itoa(base.Port)),
		Path:    "/" + vhost,
		RawPath: "/" + url.PathEscape(vhost),
	}
	return u.String()
}

// EnsureTenant implements TenantProvisioner.
func (c *Client) EnsureTenant(ctx context.Context, b Backend, t Tenant, password string) (TenantResult, error) {
	var out TenantResult
	if err := t.Validate(); err != nil {
		return out, &Error{Reason: ReasonInvalid, Op: "validate tenant", Err: err}
	}
	if password == "" {
		return out, &Error{Reason: ReasonInvalid, Op: "validate tenant", Err: errors.New("the password is empty")}
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	a, err := c.resolve(ctx, b)
	if err != nil {
		return out, err
	}
	defer a.close()

	// Check both before creating either: nothing is made next to a foreign object.
	st, err := lookupTenant(ctx, a, t)
	if err != nil {
		return out, err
	}
	if !st.vhostExists {
		// Created with its marker in one request: a vhost that exists is always marked.
		resp, err := a.mgmt.PutVhost(t.VHost, rabbithole.VhostSettings{
			Description: t.marker(), Tags: rabbithole.VhostTags{managedTag, t.ownerTag()},
		})
		closeBody(resp)
		if err != nil {
			return out, callErr(ctx, fmt.Sprintf("create vhost %q", t.VHost), err)
		}
		out.Created = append(out.Created, "vhost "+t.VHost)
	}
	created, repaired, err := ensureUser(ctx, a, t, st.user, password)
	if err != nil {
		return out, err
	}
	if created {
		out.Created = append(out.Created, "user "+t.User)
	}
	out.Repaired = append(out.Repaired, repaired...)

	// The admin first: it declares the topology below.
	if _, err := ensurePermissions(ctx, a, t.VHost, a.amqp.Username, fullPermissions); err != nil {
		return out, err
	}
	changed, err := ensurePermissions(ctx, a, t.VHost, t.User, ChatServerPermissions(t.Topology))
	if err != nil {
		return out, err
	}
	if changed && !created {
		out.Repaired = append(out.Repaired, fmt.Sprintf("permissions of user %s in vhost %s", t.User, t.VHost))
	}
	cleared, err := clearOtherPermissions(ctx, a, t)
	if err != nil {
		return out, err
	}
	out.Repaired = append(out.Repaired, cleared...)

	declared, err := c.declare(ctx, TenantURI(a.amqp, a.amqp.Username, a.amqp.Password, t.VHost), a.amqpTLS, t.Topology)
	out.Created = append(out.Created, declared.Created...)
	if err != nil {
		return out, err
	}
	out.URI = TenantURI(a.amqp, t.User, password, t.VHost)
	return out, nil
}

// tenantState is what exists of a tenant, already checked to be ours.
type tenantState struct {
	vhostExists bool
	user        *rabbithole.UserInfo // nil: no such user
}

// lookupTenant reads the vhost and the user and refuses (ReasonConflict)
// when either exists without this owner's mark.
func lookupTenant(ctx context.Context, a *admin, t Tenant) (tenantState, error) {
	var st tenantState
	v, err := a.mgmt.GetVhost(t.VHost)
	switch {
	case isMissing(err):
	case err != nil:
		return st, callErr(ctx, fmt.Sprintf("look up vhost %q", t.VHost), err)
	case v.Description != t.marker() && !slices.Contains(v.Tags, t.ownerTag()):
		return st, &Error{Reason: ReasonConflict, Op: fmt.Sprintf("adopt vhost %q", t.VHost),
			Err: fmt.Errorf("the vhost exists and is not managed by Parley for ChatCluster %s; choose another name or remove it", t.Owner)}
	default:
		st.vhostExists = true
	}
	u, err := a.mgmt.GetUser(t.User)
	switch {
	case isMissing(err):
	case err != nil:
		return st, callErr(ctx, fmt.Sprintf("look up user %q", t.User), err)
	case !slices.Contains(u.Tags, t.ownerTag()):
		return st, &Error{Reason: ReasonConflict, Op: fmt.Sprintf("adopt user %q", t.User),
			Err: fmt.Errorf("the user exists and is not managed by Parley for ChatCluster %s; choose another name or remove it", t.Owner)}
	default:
		st.user = u
	}
	return st, nil
}

// ensureUser creates the user, tagged with its owner, or sets the password
// and tags of the existing one (ours: lookupTenant checked) right. The user gets no other
// tag: without "management" it cannot use the management API at all.
func ensureUser(ctx context.Context, a *admin, t Tenant, u *rabbithole.UserInfo, password string) (created bool, repaired []string, err error) {
	settings := rabbithole.UserSettings{Password: password, Tags: rabbithole.UserTags{t.ownerTag()}}
	if u == nil {
		resp, err := a.mgmt.PutUser(t.User, settings)
		closeBody(resp)
		if err != nil {
			return false, nil, callErr(ctx, fmt.Sprintf("create user %q", t.User), err)
		}
		return true, nil, nil
	}
	if !passwordMatches(u.PasswordHash, string(u.HashingAlgorithm), password) {
		repaired = append(repaired, "password of user "+t.User)
	}
	if !slices.Equal(nonEmpty(u.Tags), []string(settings.Tags)) {
		repaired = append(repaired, "tags of user "+t.User)
	}
	if len(repaired) == 0 {
		return false, nil, nil
	}
	resp, err := a.mgmt.PutUser(t.User, settings)
	closeBody(resp)
	if err != nil {
		return false, nil, callErr(ctx, fmt.Sprintf("update user %q", t.User), err)
	}
	return false, repaired, nil
}

// nonEmpty drops the "" rabbit-hole reads from an empty tag string.
func nonEmpty(tags []string) []string {
	return slices.DeleteFunc(slices.Clone(tags), func(s string) bool { return s == "" })
}

// ensurePermissions makes user's permissions in vhost exactly p.
func ensurePermissions(ctx context.Context, a *admin, vhost, user string, p Permissions) (bool, error) {
	cur, err := a.mgmt.GetPermissionsIn(vhost, user)
	if err != nil && !isMissing(err) {
		return false, callErr(ctx, fmt.Sprintf("read permissions of user %q in vhost %q", user, vhost), err)
	}
	if err == nil && cur.Configure == p.Configure && cur.Write == p.Write && cur.Read == p.Read {
		return false, nil
	}
	resp, err := a.mgmt.UpdatePermissionsIn(vhost, user, rabbithole.Permissions{Configure: p.Configure, Write: p.Write, Read: p.Read})
	closeBody(resp)
	if err != nil {
		return false, callErr(ctx, fmt.Sprintf("set permissions of user %q in vhost %q", user, vhost), err)
	}
	return true, nil
}

// clearOtherPermissions takes away whatever the tenant's user was given on
// other vhosts: its credentials open its own vhost only.
func clearOtherPermissions(ctx context.Context, a *admin, t Tenant) ([]string, error) {
	perms, err := a.mgmt.ListPermissionsOf(t.User)
	if err != nil {
		return nil, callErr(ctx, fmt.Sprintf("list permissions of user %q", t.User), err)
	}
	var cleared []string
	for _, p := range perms {
		if p.Vhost == t.VHost {
			continue
		}
		resp, err := a.mgmt.ClearPermissionsIn(p.Vhost, t.User)
		closeBody(resp)
		if err != nil {
			return cleared, callErr(ctx, fmt.Sprintf("clear permissions of user %q in vhost %q", t.User, p.Vhost), err)
		}
		cleared = append(cleared, fmt.Sprintf("permissions of user %s in vhost %s (removed)", t.User, p.Vhost))
	}
	return cleared, nil
}

// DeleteTenant implements TenantProvisioner.
func (c *Client) DeleteTenant(ctx context.Context, b Backend, t Tenant) error {
	if err := t.Validate(); err != nil {
		return &Error{Reason: ReasonInvalid, Op: "validate tenant", Err: err}
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	a, err := c.resolve(ctx, b)
	if err != nil {
		return err
	}
	defer a.close()

	// Check both before touching either: a half-foreign pair is left alone.
	st, err := lookupTenant(ctx, a, t)
	if err != nil {
		return err
	}
	if st.vhostExists {
		// Deleting a vhost deletes its exchanges and queues and closes its
		// connections; a 404 (deleted meanwhile) counts as done.
		resp, err := a.mgmt.DeleteVhost(t.VHost)
		closeBody(resp)
		if err != nil {
			return callErr(ctx, fmt.Sprintf("delete vhost %q", t.VHost), err)
		}
	}
	if st.user != nil {
		resp, err := a.mgmt.DeleteUser(t.User)
		closeBody(resp)
		if err != nil {
			return callErr(ctx, fmt.Sprintf("delete user %q", t.User), err)
		}
	}
	return nil
}

// Probe implements TenantProvisioner. The AMQP check opens the vhost the
// admin URI names ("/" when none).
func (c *Client) Probe(ctx context.Context, b Backend) (BackendInfo, error) {
	var info BackendInfo
	ctx, cancel := c.bound(ctx)
	defer cancel()
	a, err := c.resolve(ctx, b)
	if err != nil {
		return info, err
	}
	defer a.close()
	ov, err := a.mgmt.Overview()
	if err != nil {
		return info, callErr(ctx, "read the management overview", err)
	}
	info.Version = ov.RabbitMQVersion
	s, done, err := c.connect(ctx, b.URI, a.amqpTLS)
	if err != nil {
		return info, err
	}
	defer done()
	if _, err := s.channel(); err != nil {
		return info, callErr(ctx, "open channel", err)
	}
	return info, nil
}
