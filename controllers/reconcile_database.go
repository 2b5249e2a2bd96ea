package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	pgprov "github.com/parley-chat/parley/internal/provision/postgres"
	"github.com/parley-chat/parley/internal/resource"
	"github.com/parley-chat/parley/internal/status"
)

const stepDatabase = "database"

// Keys of the Secret <name>-db besides naming.DatabaseURIKey.
const (
	DatabaseHostKey     = "host"
	DatabasePortKey     = "port"
	DatabaseNameKey     = "database"
	DatabaseUsernameKey = "username"
	DatabasePasswordKey = "password"
)

// ReasonConnected is DatabaseReady's reason for a database the user brings
// (spec.database.secretRef) that answers.
const ReasonConnected = "Connected"

// reconcileDatabase creates the cluster's PostgreSQL role and database in
// its ChatBackend (or with the deprecated spec.database.adminSecretRef),
// writes Secret <name>-db (with the backend's CA when it verifies TLS) and reports
// DatabaseReady. A <name>-db Secret that already holds a password (one the
// user chose) is respected: that password is applied to the role. With
// spec.database.secretRef the database is used as is and only checked.
func (r *ChatClusterReconciler) reconcileDatabase(ctx context.Context, p *pass) error {
	d := p.cc.Spec.Database
	switch {
	case d == nil:
		return nil
	case d.SecretRef != nil:
		p.requeue(r.checkInterval())
		return r.checkExternalDatabase(ctx, p, *d.SecretRef)
	}
	p.requeue(r.checkInterval())
	fail := r.stepFailure(p, stepDatabase, status.DatabaseReady)
	var admin pgprov.Admin
	source, key, endpoint := "", "", ""
	if d.AdminSecretRef != nil {
		uri, err := r.secretValue(ctx, p.cc.Namespace, *d.AdminSecretRef)
		if err != nil {
			return fail(fmt.Errorf("admin URI (spec.database.adminSecretRef): %w", err))
		}
		admin = pgprov.Admin{URI: uri}
		key = uriKey(v1alpha1.BackendTypePostgreSQL, uri)
		endpoint = key
	} else {
		use := p.database
		if use == nil {
			return fail(errors.New("the PostgreSQL ChatBackend was not resolved"))
		}
		if use.err != nil {
			return fail(use.err)
		}
		admin = pgprov.Admin{URI: use.postgres.URI, CAPEM: use.postgres.CAPEM}
		source = fmt.Sprintf("ChatBackend %q: ", use.name)
		key, endpoint = backendKey(use.name, v1alpha1.BackendTypePostgreSQL), digest(admin.URI)
	}
	names := pgprov.DatabaseFor(p.cc.Namespace, p.cc.Name)
	secretName := naming.DatabaseSecretName(p.cc.Name)
	existing, found, err := r.generatedSecret(ctx, p, secretName)
	if err != nil {
		return fail(err)
	}
	password := ""
	if found {
		password = string(existing.Data[DatabasePasswordKey])
	}
	userPassword := password != ""
	if !userPassword {
		if password, err = pgprov.GeneratePassword(); err != nil {
			return fail(err)
		}
	}

	now := r.now()
	inputs := func(data map[string][]byte) string {
		return digest(admin.URI, string(admin.CAPEM), names.Name, names.Role, names.Owner, dataDigest(data))
	}
	if found {
		if cond, ok := r.provisioned.synced.fresh(p.cc, stepDatabase, inputs(existing.Data), now, r.checkInterval()); ok {
			p.setCondition(cond)
			p.secrets.Database = secretName
			return nil
		}
	}
	var res pgprov.Result
	err = r.gated(ctx, key, endpoint, func(ctx context.Context) (err error) {
		res, err = r.database().Ensure(ctx, admin, names, password)
		return err
	})
	if err != nil {
		return fail(status.WithReason(string(pgprov.ReasonOf(err)), fmt.Errorf("%sprovision PostgreSQL database: %w", source, err)))
	}
	written := map[string][]byte{}
	if found {
		maps.Copy(written, existing.Data)
	}
	delete(written, naming.CAKey)
	if len(admin.CAPEM) > 0 {
		// The chat servers verify the server with the backend's CA, mounted
		// from this same Secret.
		res.Credentials.SSLMode = "verify-full"
		res.Credentials.SSLRootCert = resource.DatabaseDir + "/" + resource.CAFile
		written[naming.CAKey] = admin.CAPEM
	}
	for k, v := range res.Credentials.Map() {
		written[k] = []byte(v)
	}
	raced := false
	if err := r.writeSecret(ctx, p, secretName, func(s *corev1.Secret) {
		if cur := s.Data[DatabasePasswordKey]; len(cur) > 0 && string(cur) != password {
			// The user changed the password while the one read above was
			// applied: writing it back would undo their change (and record
			// it as in sync). Leave the Secret; the next pass applies theirs.
			raced = true
			return
		}
		if _, ok := written[naming.CAKey]; !ok {
			delete(s.Data, naming.CAKey)
		}
		maps.Copy(s.Data, written)
	}); err != nil {
		return fail(err)
	}
	p.secrets.Database = secretName
	if res.CreatedDatabase {
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventDatabaseCreated, "Provision",
			"created PostgreSQL database %q owned by role %q; credentials in Secret %s", names.Name, names.Role, secretName)
	}
	if res.PasswordSet && !res.CreatedRole && userPassword && r.provisioned.synced.seen(p.cc, stepDatabase) {
		r.Recorder.Eventf(p.cc, nil, corev1.EventTypeNormal, EventPasswordApplied, "Provision",
			"applied the password of Secret %s to role %q", secretName, names.Role)
	}
	cond := status.DatabaseReady(p.cc.Generation, nil,
		fmt.Sprintf("%sdatabase %q owned by role %q; credentials in Secret %s", source, names.Name, names.Role, secretName))
	p.setCondition(cond)
	if raced {
		p.requeue(staleRetry)
		return nil
	}
	r.provisioned.synced.record(p.cc, stepDatabase, inputs(written), now, cond)
	return nil
}

// checkExternalDatabase connects to a database the user brings.
func (r *ChatClusterReconciler) checkExternalDatabase(ctx context.Context, p *pass, ref v1alpha1.SecretKeyReference) error {
	fail := r.stepFailure(p, stepDatabase, status.DatabaseReady)
	uri, err := r.secretValue(ctx, p.cc.Namespace, ref)
	if err != nil {
		return fail(fmt.Errorf("database URI (spec.database.secretRef): %w", err))
	}
	now := r.now()
	inputs := digest("external", uri)
	if cond, ok := r.provisioned.synced.fresh(p.cc, stepDatabase, inputs, now, r.checkInterval()); ok {
		p.setCondition(cond)
		return nil
	}
	key := uriKey(v1alpha1.BackendTypePostgreSQL, uri)
	if err := r.gated(ctx, key, key, func(ctx context.Context) error {
		return r.database().Ping(ctx, pgprov.Admin{URI: uri})
	}); err != nil {
		return fail(status.WithReason(string(pgprov.ReasonOf(err)), fmt.Errorf("connect to the database of Secret %s: %w", ref.Name, err)))
	}
	cond := metav1.Condition{
		Type: v1alpha1.ConditionDatabaseReady, Status: metav1.ConditionTrue, Reason: ReasonConnected,
		Message: fmt.Sprintf("the database of Secret %s answers (used as is)", ref.Name),
	}
	p.setCondition(cond)
	r.provisioned.synced.record(p.cc, stepDatabase, inputs, now, cond)
	return nil
}
