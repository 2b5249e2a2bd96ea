package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/status"
)

const stepBroker = "broker"

// reconcileBroker gives the cluster its RabbitMQ and reports BrokerReady.
// With a ChatBackend (reconcileBrokerTenant) the cluster gets a vhost and a
// user of its own; with the deprecated spec.broker.secretRef the cluster's
// topology (amqp.TopologyFor: the exchanges of naming.ExchangeNames and a
// bounded dead-letter queue) is declared with that Secret's credentials in a
// shared vhost, and the chat servers mount that same Secret. Either way the
// chat servers only check the topology passively.
//
// The declare is idempotent, so it doubles as the drift check: an exchange
// deleted by hand comes back at the next check (Provisioning.CheckInterval).
func (r *ChatClusterReconciler) reconcileBroker(ctx context.Context, p *pass) error {
	b := p.cc.Spec.Broker
	switch {
	case b == nil:
		return nil
	case b.SecretRef == nil:
		return r.reconcileBrokerTenant(ctx, p)
	}
	// Check again later even when nothing changes: that is how drift is repaired.
	p.requeue(r.checkInterval())
	fail := r.stepFailure(p, stepBroker, status.BrokerReady)
	uri, err := r.secretValue(ctx, p.cc.Namespace, *b.SecretRef)
	if err != nil {
		return fail(fmt.Errorf("broker URI (spec.broker.secretRef): %w", err))
	}
	top := amqpprov.TopologyFor(p.cc.Namespace, p.cc.Name)
	now := r.now()
	inputs := digest(uri, top.Exchange, top.ControlExchange, top.DeadLetterExchange, top.DeadLetterQueue)
	if cond, ok := r.provisioned.synced.fresh(p.cc, stepBroker, inputs, now, r.checkInterval()); ok {
		p.setCondition(cond)
		return nil
	}
	var declared amqpprov.Declared
	key := uriKey(v1alpha1.BackendTypeRabbitMQ, uri)
	err = r.gated(ctx, key, key, func(ctx context.Context) (err error) {
		declared, err = r.broker().Declare(ctx, uri, top)
		return err
	})
	if err != nil {
		return fail(status.WithReason(string(amqpprov.ReasonOf(err)), fmt.Errorf("declare RabbitMQ topology: %w", err)))
	}
	switch {
	case len(declared.Created) == 0:
	case r.provisioned.synced.seen(p.cc, stepBroker) || len(declared.Created) < len(top.Objects()):
		// Part of it was gone: someone deleted it behind our back.
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeWarning, EventTopologyRepaired, "Declare",
			"re-declared %s, missing from RabbitMQ", strings.Join(declared.Created, ", "))
	default:
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventTopologyDeclared, "Declare",
			"declared %s", strings.Join(declared.Created, ", "))
	}
	cond := status.BrokerReady(p.cc.Generation, nil,
		fmt.Sprintf("exchanges %s (topic) and %s (fanout) declared", top.Exchange, top.ControlExchange))
	p.setCondition(cond)
	r.provisioned.synced.record(p.cc, stepBroker, inputs, now, cond)
	return nil
}

// reconcileBrokerTenant creates or repairs the cluster's own vhost and user
// in its RabbitMQ ChatBackend, with exactly the permissions the chat server
// needs (docs/topology.md), declares the topology there as the backend's
// admin, and writes the user's credentials to Secret <name>-broker, the only
// RabbitMQ credential the chat pods mount. A password already in that
// Secret is kept (and applied); otherwise one is generated.
func (r *ChatClusterReconciler) reconcileBrokerTenant(ctx context.Context, p *pass) error {
	p.requeue(r.checkInterval())
	fail := r.stepFailure(p, stepBroker, status.BrokerReady)
	use := p.broker
	if use == nil || use.err != nil {
		if use == nil {
			return fail(errors.New("the RabbitMQ ChatBackend was not resolved"))
		}
		return fail(use.err)
	}
	secretName := naming.BrokerSecretName(p.cc.Name)
	existing, found, err := r.generatedSecret(ctx, p, secretName)
	if err != nil {
		return fail(err)
	}
	password := ""
	if found {
		password = string(existing.Data[BrokerPasswordKey])
	}
	if password == "" {
		if password, err = pgprov.GeneratePassword(); err != nil {
			return fail(err)
		}
	}
	tenant := brokerTenant(p.cc)
	backend := amqpprov.Backend{URI: use.rabbitmq.URI, ManagementURI: use.rabbitmq.ManagementURI, CAPEM: use.rabbitmq.CAPEM}
	now := r.now()
	inputs := func(data map[string][]byte) string {
		return digest(use.name, backend.URI, backend.ManagementURI, string(backend.CAPEM), tenant.VHost, tenant.User,
			tenant.Topology.Exchange, tenant.Topology.ControlExchange, tenant.Topology.DeadLetterExchange, dataDigest(data))
	}
	if found {
		if cond, ok := r.provisioned.synced.fresh(p.cc, stepBroker, inputs(existing.Data), now, r.checkInterval()); ok {
			p.setCondition(cond)
			p.secrets.Broker = secretName
			return nil
		}
	}
	var res amqpprov.TenantResult
	err = r.gated(ctx, backendKey(use.name, v1alpha1.BackendTypeRabbitMQ), digest(backend.URI, backend.ManagementURI), func(ctx context.Context) (err error) {
		res, err = r.tenants().EnsureTenant(ctx, backend, tenant, password)
		return err
	})
	if err != nil {
		return fail(status.WithReason(string(amqpprov.ReasonOf(err)),
			fmt.Errorf("ChatBackend %q: provision vhost %q and user %q: %w", use.name, tenant.VHost, tenant.User, err)))
	}
	written := map[string][]byte{
		naming.BrokerURIKey: []byte(res.URI),
		BrokerUsernameKey:   []byte(tenant.User),
		BrokerPasswordKey:   []byte(password),
		BrokerVHostKey:      []byte(tenant.VHost),
	}
	if len(backend.CAPEM) > 0 {
		written[naming.CAKey] = backend.CAPEM
	}
	if err := r.writeSecret(ctx, p, secretName, func(s *corev1.Secret) {
		if len(backend.CAPEM) == 0 {
			delete(s.Data, naming.CAKey)
		}
		maps.Copy(s.Data, written)
	}); err != nil {
		return fail(err)
	}
	p.secrets.Broker = secretName
	switch {
	case len(res.Created) > 0 && r.provisioned.synced.seen(p.cc, stepBroker):
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeWarning, EventTopologyRepaired, "Provision",
			"re-created %s, missing from RabbitMQ", strings.Join(res.Created, ", "))
	case len(res.Created) > 0:
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventTenantCreated, "Provision",
			"ChatBackend %q: created %s; credentials in Secret %s", use.name, strings.Join(res.Created, ", "), secretName)
	}
	if len(res.Repaired) > 0 {
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeWarning, EventTenantRepaired, "Provision",
			"ChatBackend %q: set right %s", use.name, strings.Join(res.Repaired, ", "))
	}
	cond := status.BrokerReady(p.cc.Generation, nil, fmt.Sprintf(
		"ChatBackend %q: vhost %q and user %q with the chat server's permissions only; exchanges declared; credentials in Secret %s",
		use.name, tenant.VHost, tenant.User, secretName))
	p.setCondition(cond)
	written = maps.Clone(written)
	if found {
		for k, v := range existing.Data {
			if _, ok := written[k]; !ok && k != naming.CAKey {
				written[k] = v
			}
		}
	}
	r.provisioned.synced.record(p.cc, stepBroker, inputs(written), now, cond)
	return nil
}

// Keys of the Secret <name>-broker besides naming.BrokerURIKey and naming.CAKey.
const (
	BrokerUsernameKey = "username"
	BrokerPasswordKey = "password"
	BrokerVHostKey    = "vhost"
)

// brokerTenant is the cluster's share of its RabbitMQ ChatBackend.
func brokerTenant(cc *v1alpha1.ChatCluster) amqpprov.Tenant {
	return amqpprov.Tenant{
		VHost:    naming.BrokerVHost(cc.Namespace, cc.Name),
		User:     naming.BrokerUser(cc.Namespace, cc.Name),
		Owner:    cc.Namespace + "/" + cc.Name,
		Topology: amqpprov.TopologyFor(cc.Namespace, cc.Name),
	}
}
