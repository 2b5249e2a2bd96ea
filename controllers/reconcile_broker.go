package controllers

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	amqpprov "github.com/parley-chat/parley/internal/provision/amqp"
	"github.com/parley-chat/parley/internal/status"
)

const stepBroker = "broker"

// reconcileBroker declares the cluster's RabbitMQ topology
// (amqp.TopologyFor: the exchanges of naming.ExchangeNames and a bounded
// dead-letter queue) with spec.broker.secretRef's credentials and reports
// BrokerReady. The chat servers mount that same Secret (the Deployment
// builder decides the mount); they only check the topology passively.
//
// The declare is idempotent, so it doubles as the drift check: an exchange
// deleted by hand comes back at the next check (Provisioning.CheckInterval).
func (r *ChatClusterReconciler) reconcileBroker(ctx context.Context, p *pass) error {
	b := p.cc.Spec.Broker
	if b == nil {
		return nil
	}
	// Check again later even when nothing changes: that is how drift is repaired.
	p.requeue(r.checkInterval())
	fail := r.stepFailure(p, stepBroker, status.BrokerReady)
	uri, err := r.secretValue(ctx, p.cc.Namespace, b.SecretRef)
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
	callCtx, cancel := r.callContext(ctx)
	defer cancel()
	declared, err := r.broker().Declare(callCtx, uri, top)
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
