package controllers

import "context"

// reconcileBroker declares the cluster's RabbitMQ topology (naming.ExchangeNames)
// with spec.broker.secretRef's credentials and reports BrokerReady through
// p.setCondition(status.BrokerReady(...)).
//
// SEAM: the provisioning issue (issue 6) implements this step. Until then it
// does nothing and no BrokerReady condition is reported.
func (r *ChatClusterReconciler) reconcileBroker(ctx context.Context, p *pass) error {
	return nil
}
