package postgres

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parley-chat/parley/internal/provision"
)

// Reason classifies a failure so a condition can say what is wrong and who
// can fix it.
type Reason string

const (
	// ReasonUnreachable: no conversation with the server (refused, timed out,
	// DNS, server shutting down or not accepting connections).
	ReasonUnreachable Reason = "Unreachable"
	// ReasonCredentialsRefused: the server refused the admin credentials
	// (SQLSTATE class 28: no such role, wrong password, pg_hba rejection).
	ReasonCredentialsRefused Reason = "CredentialsRefused"
	// ReasonPermissionDenied: the admin role lacks a right it needs
	// (CREATEROLE, CREATEDB, membership in the role).
	ReasonPermissionDenied Reason = "PermissionDenied"
	// ReasonConflict: a role or database of that name exists and does not
	// belong to this ChatCluster; the operator leaves it alone.
	ReasonConflict Reason = "Conflict"
	// ReasonInvalidURI: the admin URI cannot be parsed.
	ReasonInvalidURI Reason = "InvalidURI"
	// ReasonTLS: the TLS handshake failed: the server's certificate does not
	// verify against the configured CA or does not name the host, the CA
	// bundle holds no certificate, or the server does not offer TLS.
	ReasonTLS Reason = "TLSHandshakeFailed"
	// ReasonInvalid: a name or password PostgreSQL would reject or mangle.
	ReasonInvalid Reason = "Invalid"
	// ReasonError: anything else the server said.
	ReasonError Reason = "Error"
)

// Error is a classified failure. Its message never contains a password.
type Error = provision.Error[Reason]

// ReasonOf returns the Reason of a classified error, ReasonError for any other
// non-nil error and "" for nil.
func ReasonOf(err error) Reason { return provision.ReasonOf(err, ReasonError) }

func classify(op string, err error) error { return provision.Classify(op, err, reasonFor) }

// SQLSTATE codes and classes the classification relies on.
const (
	classInvalidAuthorization = "28"
	classConnectionException  = "08"
	insufficientPrivilege     = "42501"
	adminShutdown             = "57P01"
	crashShutdown             = "57P02"
	cannotConnectNow          = "57P03"
	tooManyConnections        = "53300"
	undefinedObject           = "42704"
)

func reasonFor(err error) Reason {
	// Before the network checks: a failed handshake is a connect error too.
	if provision.TLSFailure(err) {
		return ReasonTLS
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, classInvalidAuthorization):
			return ReasonCredentialsRefused
		case pgErr.Code == insufficientPrivilege:
			return ReasonPermissionDenied
		case strings.HasPrefix(pgErr.Code, classConnectionException),
			pgErr.Code == adminShutdown, pgErr.Code == crashShutdown,
			pgErr.Code == cannotConnectNow, pgErr.Code == tooManyConnections:
			return ReasonUnreachable
		}
		return ReasonError
	}
	if pgconn.Timeout(err) || provision.Unreachable(err) {
		return ReasonUnreachable
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		// A failed dial that is none of the above (e.g. a TLS handshake).
		return ReasonUnreachable
	}
	return ReasonError
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
