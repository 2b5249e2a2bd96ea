package status

import (
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// ReasonError is an error that knows the condition reason it stands for
// (Unreachable, CredentialsRefused, Conflict…). The provisioning steps return
// them so BrokerReady and DatabaseReady say why.
type ReasonError struct {
	Reason string
	Err    error
}

func (e *ReasonError) Error() string { return e.Err.Error() }
func (e *ReasonError) Unwrap() error { return e.Err }

// WithReason wraps err with a condition reason.
func WithReason(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &ReasonError{Reason: reason, Err: err}
}

// BrokerReady reports the broker provisioning: True with reason "Declared"
// when err is nil, else False with err's reason (default "Failed").
func BrokerReady(generation int64, err error, message string) metav1.Condition {
	return dependency(v1alpha1.ConditionBrokerReady, generation, err, "Declared", message)
}

// DatabaseReady reports the database provisioning: True with reason
// "Provisioned" when err is nil, else False with err's reason (default "Failed").
func DatabaseReady(generation int64, err error, message string) metav1.Condition {
	return dependency(v1alpha1.ConditionDatabaseReady, generation, err, "Provisioned", message)
}

func dependency(typ string, generation int64, err error, okReason, message string) metav1.Condition {
	if err == nil {
		return condition(typ, generation, true, okReason, "%s", message)
	}
	reason := "Failed"
	var re *ReasonError
	if errors.As(err, &re) && re.Reason != "" {
		reason = re.Reason
	}
	if message != "" {
		return condition(typ, generation, false, reason, "%s: %v", message, err)
	}
	return condition(typ, generation, false, reason, "%v", err)
}
