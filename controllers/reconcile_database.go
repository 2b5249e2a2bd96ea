package controllers

import "context"

// reconcileDatabase creates the cluster's PostgreSQL role and database with
// spec.database.adminSecretRef, writes Secret <name>-db and reports
// DatabaseReady through p.setCondition(status.DatabaseReady(...)).
//
// SEAM: the provisioning issue (issue 6) implements this step. Until then it
// does nothing and no DatabaseReady condition is reported.
func (r *ChatClusterReconciler) reconcileDatabase(ctx context.Context, p *pass) error {
	return nil
}
