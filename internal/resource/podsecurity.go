package resource

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/parley-chat/parley/internal/naming"
)

// PodSecurityVersion is the version of the Pod Security Standards the chat
// server's pod template is held to.
//
// It is pinned to the Kubernetes minor the operator is built and tested
// against (k8s.io/* v0.37), not "latest": "latest" means the newest policy
// the vendored library knows, so a routine dependency bump could start
// refusing (or allowing) the template of a running cluster without anyone
// deciding it. A test fails when the library gains a newer policy version,
// so moving the pin is a reviewed change.
var PodSecurityVersion = api.MajorMinorVersion(1, 37)

// PodSecurityError is a pod template CheckPodSecurity refused. The
// Deployment builder returns it instead of a Deployment: the operator writes
// nothing and the live Deployment keeps its last accepted template.
type PodSecurityError struct {
	// Violations lists every failing check, Pod Security Standards checks
	// first, then Parley's own.
	Violations []Violation
}

// Violation is one failing check.
type Violation struct {
	// Check names the check: a Pod Security Standards check ID
	// ("runAsNonRoot", "capabilities_restricted", ...) as the API server's
	// admission plugin knows it, or one of Parley's, prefixed "parley/".
	Check string
	// Message says what is wrong and which field of the pod template it is.
	Message string
}

func (e *PodSecurityError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Check + ": " + v.Message
	}
	return fmt.Sprintf("the chat server pod template (spec.pod and spec.override.deployment applied) breaks the %s Pod Security Standard (%s) or Parley's pod rules, so it is not applied: %s",
		api.LevelRestricted, PodSecurityVersion, strings.Join(parts, "; "))
}

// Checks returns the names of the failing checks, in order.
func (e *PodSecurityError) Checks() []string {
	ids := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		ids[i] = v.Check
	}
	return ids
}

// Names of Parley's own checks: what the Pod Security Standards leave open
// but the chat server's promise does not.
const (
	CheckChatServerContainer    = "parley/chatServerContainer"
	CheckReadOnlyRootFilesystem = "parley/readOnlyRootFilesystem"
	CheckImage                  = "parley/image"
	CheckServiceAccountName     = "parley/serviceAccountName"
	CheckAutomountToken         = "parley/automountServiceAccountToken"
	CheckServiceAccountToken    = "parley/serviceAccountToken"
	CheckRunAsNonRoot           = "parley/runAsNonRoot"
	CheckRunAsUser              = "parley/runAsUser"
)

// CheckPodSecurity evaluates the final pod template of the chat server
// Deployment (spec.pod and the override applied) against the restricted
// Pod Security Standard, with the evaluator the API server's admission
// plugin runs, and against Parley's own rules. It returns a
// *PodSecurityError listing every failing check, or nil.
//
// The CRD's CEL rules refuse the obvious overrides early, but they see only
// the patch: a `$patch: delete` of a securityContext, a sidecar without one
// or an annotation in spec.pod get past them. This check sees the result.
func CheckPodSecurity(c Cluster, t *corev1.PodTemplateSpec) error {
	e, err := podSecurity()
	if err != nil {
		return err
	}
	violations := e.evaluate(&t.ObjectMeta, &t.Spec)
	violations = append(violations, e.parleyRules(c, t)...)
	if len(violations) == 0 {
		return nil
	}
	return &PodSecurityError{Violations: violations}
}

// podSecurityEvaluator runs the upstream checks. all is the evaluator built
// from every default check, exactly as the admission plugin builds it: its
// verdict decides. byCheck holds one evaluator per check in force at the
// pinned version, so each finding can be reported under its check ID (the
// upstream evaluator returns results without IDs).
type podSecurityEvaluator struct {
	all     policy.Evaluator
	byCheck []namedEvaluator
}

type namedEvaluator struct {
	id   policy.CheckID
	eval policy.Evaluator
}

var podSecurity = sync.OnceValues(newPodSecurityEvaluator)

func newPodSecurityEvaluator() (*podSecurityEvaluator, error) {
	all, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return nil, fmt.Errorf("pod security evaluator: %w", err)
	}
	e := &podSecurityEvaluator{all: all}

	// At the restricted level some restricted checks replace a baseline one
	// (capabilities_restricted replaces capabilities_baseline, ...): the
	// replaced ones are left out, as the upstream evaluator does.
	checks := policy.DefaultChecks()
	replaced := map[policy.CheckID]bool{}
	for _, c := range checks {
		if v, ok := versionAt(c, PodSecurityVersion); ok && c.Level == api.LevelRestricted {
			for _, id := range v.OverrideCheckIDs {
				replaced[id] = true
			}
		}
	}
	for _, c := range checks {
		if _, ok := versionAt(c, PodSecurityVersion); !ok || replaced[c.ID] {
			continue
		}
		one, err := policy.NewEvaluator([]policy.Check{c}, nil)
		if err != nil {
			return nil, fmt.Errorf("pod security check %s: %w", c.ID, err)
		}
		e.byCheck = append(e.byCheck, namedEvaluator{id: c.ID, eval: one})
	}
	slices.SortFunc(e.byCheck, func(a, b namedEvaluator) int { return strings.Compare(string(a.id), string(b.id)) })
	return e, nil
}

// versionAt returns the revision of check c in force at version v.
func versionAt(c policy.Check, v api.Version) (policy.VersionedCheck, bool) {
	var found policy.VersionedCheck
	ok := false
	for _, vc := range c.Versions {
		if v.Older(vc.MinimumVersion) {
			break
		}
		found, ok = vc, true
	}
	return found, ok
}

// evaluate returns the restricted-level findings for a pod.
func (e *podSecurityEvaluator) evaluate(meta *metav1.ObjectMeta, spec *corev1.PodSpec) []Violation {
	lv := api.LevelVersion{Level: api.LevelRestricted, Version: PodSecurityVersion}
	verdict := policy.AggregateCheckResults(e.all.EvaluatePod(lv, meta, spec))
	if verdict.Allowed {
		return nil
	}
	var out []Violation
	for _, c := range e.byCheck {
		for _, r := range c.eval.EvaluatePod(lv, meta, spec) {
			if !r.Allowed {
				out = append(out, Violation{Check: string(c.id), Message: describe(r.ForbiddenReason, r.ForbiddenDetail)})
			}
		}
	}
	if len(out) != len(verdict.ForbiddenReasons) {
		// The split by check disagrees with the evaluator the API server
		// runs (an upstream change in how checks replace each other): report
		// that evaluator's own findings, under its reasons.
		out = out[:0]
		for i, reason := range verdict.ForbiddenReasons {
			out = append(out, Violation{Check: "podSecurity", Message: describe(reason, verdict.ForbiddenDetails[i])})
		}
	}
	return out
}

func describe(reason, detail string) string {
	if detail == "" {
		return reason
	}
	return reason + ": " + detail
}

// parleyRules are the chat server's promises the Pod Security Standards do
// not make: its container keeps a read-only root and the image spec.image
// names, the pod keeps the cluster's own service account and carries no API
// token, and nothing runs as root, not even in a user namespace.
func (e *podSecurityEvaluator) parleyRules(c Cluster, t *corev1.PodTemplateSpec) []Violation {
	const pod = "spec.template.spec"
	var out []Violation
	add := func(check, format string, args ...any) {
		out = append(out, Violation{Check: check, Message: fmt.Sprintf(format, args...)})
	}
	p := &t.Spec

	i := slices.IndexFunc(p.Containers, func(ctr corev1.Container) bool { return ctr.Name == naming.ContainerName })
	if i < 0 {
		add(CheckChatServerContainer, "%s.containers has no container named %q: an override may change the chat server container, not remove or rename it",
			pod, naming.ContainerName)
	} else {
		ctr := &p.Containers[i]
		field := fmt.Sprintf("%s.containers[%s]", pod, naming.ContainerName)
		if sc := ctr.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add(CheckReadOnlyRootFilesystem, "%s.securityContext.readOnlyRootFilesystem must be true: the chat server writes only to its /tmp volume", field)
		}
		if ctr.Image != c.Image() {
			add(CheckImage, "%s.image is %q, must be %q: set spec.image to run another chat server image", field, ctr.Image, c.Image())
		}
	}

	if p.ServiceAccountName != c.Name() {
		add(CheckServiceAccountName, "%s.serviceAccountName is %q, must be the cluster's own %q", pod, p.ServiceAccountName, c.Name())
	}
	if p.DeprecatedServiceAccount != "" && p.DeprecatedServiceAccount != c.Name() {
		add(CheckServiceAccountName, "%s.serviceAccount is %q, must be empty or the cluster's own %q", pod, p.DeprecatedServiceAccount, c.Name())
	}
	if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
		add(CheckAutomountToken, "%s.automountServiceAccountToken must be false: the chat server never calls the Kubernetes API", pod)
	}
	for _, v := range p.Volumes {
		if v.Projected == nil {
			continue
		}
		for j, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				add(CheckServiceAccountToken, "%s.volumes[%s].projected.sources[%d].serviceAccountToken: the chat server pods carry no Kubernetes API token", pod, v.Name, j)
			}
		}
	}

	if p.HostUsers != nil && !*p.HostUsers {
		// Since 1.35 the standard lets a pod in its own user namespace run
		// as UID 0 (KEP-127). The chat server never needs root: hold such a
		// pod to the same two checks as one in the host's user namespace.
		hostUsers := *p
		hostUsers.HostUsers = nil
		for _, v := range e.evaluate(&t.ObjectMeta, &hostUsers) {
			switch v.Check {
			case "runAsNonRoot":
				add(CheckRunAsNonRoot, "%s (also in a user namespace, hostUsers: false)", v.Message)
			case "runAsUser":
				add(CheckRunAsUser, "%s (also in a user namespace, hostUsers: false)", v.Message)
			}
		}
	}
	return out
}
