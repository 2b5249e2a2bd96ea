package v1alpha1

import (
	"encoding/json"
)

// DeploymentOverride is a strategic-merge patch for the generated Deployment.
//
// The whole patch is kept as written (any Deployment field may appear in it).
// The typed fields below exist so the CRD schema reaches the fields that
// could make a chat server privileged, root or part of the host, and CEL rules
// there refuse such patches with a message naming the field. Read the patch
// with Raw.
//
// The CEL rules see only the patch, so they are the early warning, not the
// guarantee: a `$patch: delete` of a securityContext, a sidecar without one or
// an annotation from spec.pod gets past them. The guarantee is the operator's
// check of the final pod template (internal/resource/podsecurity.go): the
// restricted Pod Security Standard, evaluated by the API server's own code,
// plus Parley's rules (the chat server container keeps a read-only root and
// the spec.image image, the pod keeps the cluster's service account and no API
// token). A template that fails is never written; the ChatCluster reports
// Degraded with reason PodSecurityViolation. See docs/pod-security.md.
//
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:object:generate=false
type DeploymentOverride struct {
	// Spec of the Deployment patch.
	// +optional
	Spec *DeploymentSpecOverride `json:"spec,omitempty"`

	raw []byte `json:"-"`
}

// +kubebuilder:pruning:PreserveUnknownFields
type DeploymentSpecOverride struct {
	// Template of the pods.
	// +optional
	Template *PodTemplateOverride `json:"template,omitempty"`
}

// +kubebuilder:pruning:PreserveUnknownFields
type PodTemplateOverride struct {
	// Spec of the pods.
	// +optional
	Spec *PodSpecOverride `json:"spec,omitempty"`
}

// PodSpecOverride is the part of a pod spec patch the security rules inspect.
//
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:validation:XValidation:rule="!has(self.hostNetwork) || !self.hostNetwork",message="spec.override.deployment.spec.template.spec.hostNetwork must not be true: chat servers never share the node's network",fieldPath=".hostNetwork"
// +kubebuilder:validation:XValidation:rule="!has(self.hostPID) || !self.hostPID",message="spec.override.deployment.spec.template.spec.hostPID must not be true: chat servers never share the node's process namespace",fieldPath=".hostPID"
// +kubebuilder:validation:XValidation:rule="!has(self.hostIPC) || !self.hostIPC",message="spec.override.deployment.spec.template.spec.hostIPC must not be true: chat servers never share the node's IPC namespace",fieldPath=".hostIPC"
// +kubebuilder:validation:XValidation:rule="!has(self.volumes) || self.volumes.all(v, !has(v.hostPath))",message="spec.override.deployment.spec.template.spec.volumes must not use hostPath: chat servers never mount the node's filesystem",fieldPath=".volumes"
type PodSpecOverride struct {
	// +optional
	HostNetwork *bool `json:"hostNetwork,omitempty"`
	// +optional
	HostPID *bool `json:"hostPID,omitempty"`
	// +optional
	HostIPC *bool `json:"hostIPC,omitempty"`
	// +optional
	SecurityContext *PodSecurityContextOverride `json:"securityContext,omitempty"`
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Containers []ContainerOverride `json:"containers,omitempty"`
	// +kubebuilder:validation:MaxItems=16
	// +optional
	InitContainers []ContainerOverride `json:"initContainers,omitempty"`
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Volumes []VolumeOverride `json:"volumes,omitempty"`
}

// PodSecurityContextOverride is the part of a pod security context patch the rules inspect.
//
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:validation:XValidation:rule="!has(self.runAsNonRoot) || self.runAsNonRoot",message="spec.override.deployment.spec.template.spec.securityContext.runAsNonRoot must not be false: chat servers never run as root",fieldPath=".runAsNonRoot"
// +kubebuilder:validation:XValidation:rule="!has(self.runAsUser) || self.runAsUser != 0",message="spec.override.deployment.spec.template.spec.securityContext.runAsUser must not be 0: chat servers never run as root",fieldPath=".runAsUser"
// +kubebuilder:validation:XValidation:rule="!has(self.seccompProfile) || !has(self.seccompProfile.type) || self.seccompProfile.type != 'Unconfined'",message="spec.override.deployment.spec.template.spec.securityContext.seccompProfile.type must not be Unconfined",fieldPath=".seccompProfile"
type PodSecurityContextOverride struct {
	// +optional
	RunAsNonRoot *bool `json:"runAsNonRoot,omitempty"`
	// +optional
	RunAsUser *int64 `json:"runAsUser,omitempty"`
	// +optional
	SeccompProfile *SeccompProfileOverride `json:"seccompProfile,omitempty"`
}

// SeccompProfileOverride is a seccomp profile in a patch.
//
// +kubebuilder:pruning:PreserveUnknownFields
type SeccompProfileOverride struct {
	// +optional
	Type string `json:"type,omitempty"`
}

// ContainerOverride is the part of a container patch the rules inspect.
// Containers are matched by name, as in any strategic-merge patch.
//
// +kubebuilder:pruning:PreserveUnknownFields
type ContainerOverride struct {
	// Name of the container ("chatserver" is the chat server).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// +optional
	SecurityContext *SecurityContextOverride `json:"securityContext,omitempty"`
}

// SecurityContextOverride is the part of a container security context patch the rules inspect.
//
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:validation:XValidation:rule="!has(self.privileged) || !self.privileged",message="spec.override.deployment: containers[].securityContext.privileged must not be true",fieldPath=".privileged"
// +kubebuilder:validation:XValidation:rule="!has(self.allowPrivilegeEscalation) || !self.allowPrivilegeEscalation",message="spec.override.deployment: containers[].securityContext.allowPrivilegeEscalation must not be true",fieldPath=".allowPrivilegeEscalation"
// +kubebuilder:validation:XValidation:rule="!has(self.runAsNonRoot) || self.runAsNonRoot",message="spec.override.deployment: containers[].securityContext.runAsNonRoot must not be false: chat servers never run as root",fieldPath=".runAsNonRoot"
// +kubebuilder:validation:XValidation:rule="!has(self.runAsUser) || self.runAsUser != 0",message="spec.override.deployment: containers[].securityContext.runAsUser must not be 0: chat servers never run as root",fieldPath=".runAsUser"
// +kubebuilder:validation:XValidation:rule="!has(self.capabilities) || !has(self.capabilities.add) || self.capabilities.add.all(c, c == 'NET_BIND_SERVICE')",message="spec.override.deployment: containers[].securityContext.capabilities.add may only contain NET_BIND_SERVICE",fieldPath=".capabilities"
type SecurityContextOverride struct {
	// +optional
	Privileged *bool `json:"privileged,omitempty"`
	// +optional
	AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation,omitempty"`
	// +optional
	RunAsNonRoot *bool `json:"runAsNonRoot,omitempty"`
	// +optional
	RunAsUser *int64 `json:"runAsUser,omitempty"`
	// +optional
	Capabilities *CapabilitiesOverride `json:"capabilities,omitempty"`
}

// CapabilitiesOverride is a capabilities patch.
//
// +kubebuilder:pruning:PreserveUnknownFields
type CapabilitiesOverride struct {
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Add []string `json:"add,omitempty"`
}

// VolumeOverride is the part of a volume patch the rules inspect.
//
// +kubebuilder:pruning:PreserveUnknownFields
type VolumeOverride struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// HostPath is refused; it is declared so the rule can see it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	HostPath *HostPathOverride `json:"hostPath,omitempty"`
}

// HostPathOverride stands for any hostPath volume source.
type HostPathOverride struct{}

// NewDeploymentOverride returns an override holding the given strategic-merge patch.
func NewDeploymentOverride(patch []byte) (*DeploymentOverride, error) {
	o := &DeploymentOverride{}
	if err := o.UnmarshalJSON(patch); err != nil {
		return nil, err
	}
	return o, nil
}

// Raw returns the whole patch as JSON, fields outside the typed subset included.
func (o *DeploymentOverride) Raw() ([]byte, error) {
	if o == nil {
		return nil, nil
	}
	if o.raw != nil {
		return o.raw, nil
	}
	type typed DeploymentOverride
	return json.Marshal((*typed)(o))
}

// UnmarshalJSON keeps the patch verbatim and decodes the typed subset.
func (o *DeploymentOverride) UnmarshalJSON(data []byte) error {
	type typed DeploymentOverride
	var t typed
	if err := json.Unmarshal(data, &t); err != nil {
		return err
	}
	*o = DeploymentOverride(t)
	o.raw = append([]byte(nil), data...)
	return nil
}

// MarshalJSON writes the patch as it was read.
func (o DeploymentOverride) MarshalJSON() ([]byte, error) {
	return o.Raw()
}

// DeepCopyInto copies the override into out.
func (o *DeploymentOverride) DeepCopyInto(out *DeploymentOverride) {
	*out = *o
	if o.Spec != nil {
		out.Spec = o.Spec.DeepCopy()
	}
	if o.raw != nil {
		out.raw = append([]byte(nil), o.raw...)
	}
}

// DeepCopy returns a copy of the override.
func (o *DeploymentOverride) DeepCopy() *DeploymentOverride {
	if o == nil {
		return nil
	}
	out := new(DeploymentOverride)
	o.DeepCopyInto(out)
	return out
}
