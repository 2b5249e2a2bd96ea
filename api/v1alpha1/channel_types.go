package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ChannelSpec is a kind of room and its rules.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.recovery) && self.recovery) || (has(self.history) && self.history.size > 0)",message="spec.channels[].recovery needs history.size > 0: recovery replays missed messages from history",fieldPath=".recovery"
// +kubebuilder:validation:XValidation:rule="!((has(self.allowAnonymousPublish) && self.allowAnonymousPublish) || (has(self.allowAnonymousPresence) && self.allowAnonymousPresence)) || (has(self.allowAnonymous) && self.allowAnonymous)",message="spec.channels[].allowAnonymous must be true when allowAnonymousPublish or allowAnonymousPresence is",fieldPath=".allowAnonymous"
// +kubebuilder:validation:XValidation:rule="!(has(self.personal) && self.personal) || size(self.name) > 0",message="spec.channels[].personal needs a name: personal channels are <name>:#<user>",fieldPath=".personal"
// +kubebuilder:validation:XValidation:rule="!(has(self.group) && self.group) || (size(self.name) > 0 && !(has(self.personal) && self.personal))",message="spec.channels[].group needs a name and cannot be personal",fieldPath=".group"
// +kubebuilder:validation:XValidation:rule="!(has(self.group) && self.group) || !(has(self.allowAnonymous) && self.allowAnonymous)",message="spec.channels[].group admits members only: allowAnonymous must be off",fieldPath=".allowAnonymous"
// +kubebuilder:validation:XValidation:rule="!(has(self.group) && self.group) || !has(self.allowSubscribe) || self.allowSubscribe != 'token'",message="spec.channels[].group decides subscribe by membership: allowSubscribe cannot be token",fieldPath=".allowSubscribe"
type ChannelSpec struct {
	// Name is the channel prefix before ":" ("room" for "room:42"). The empty
	// name is the channels without a prefix.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]*$`
	Name string `json:"name"`

	// History keeps recent publications for late joiners and recovery.
	// +optional
	History *HistorySpec `json:"history,omitempty"`

	// Presence lets subscribers ask who is in the channel.
	// +optional
	Presence bool `json:"presence,omitempty"`

	// JoinLeave sends join and leave pushes to subscribers.
	// +optional
	JoinLeave bool `json:"joinLeave,omitempty"`

	// Recovery lets clients recover missed publications when they resubscribe.
	// +optional
	Recovery bool `json:"recovery,omitempty"`

	// Typing enables typing indicators (never stored).
	// +optional
	Typing bool `json:"typing,omitempty"`

	// AllowAnonymous lets anonymous connections subscribe and read (with spec.auth.allowAnonymous).
	// +optional
	AllowAnonymous bool `json:"allowAnonymous,omitempty"`

	// AllowAnonymousPublish lets anonymous subscribers publish (a public
	// demo room). Needs allowAnonymous.
	// +optional
	AllowAnonymousPublish bool `json:"allowAnonymousPublish,omitempty"`

	// AllowAnonymousPresence lets anonymous subscribers read presence. Needs allowAnonymous.
	// +optional
	AllowAnonymousPresence bool `json:"allowAnonymousPresence,omitempty"`

	// AllowBinary lets publications carry bytes that are not JSON (protobuf
	// clients). Off, the channel kind is JSON-only and non-JSON publications
	// are refused; on, JSON clients skip what they cannot carry.
	// +optional
	AllowBinary bool `json:"allowBinary,omitempty"`

	// AllowedDeltaTypes lists the delta compressions subscribers may ask for
	// (the SDKs' delta option): only fossil exists.
	// +kubebuilder:validation:MaxItems=1
	// +kubebuilder:validation:items:Enum=fossil
	// +listType=set
	// +optional
	AllowedDeltaTypes []string `json:"allowedDeltaTypes,omitempty"`

	// Personal makes this the personal channel: every connection of user U is
	// subscribed by the server to "<name>:#U".
	// +optional
	Personal bool `json:"personal,omitempty"`

	// Group makes this a group channel kind: its channels ("<name>:<id>") are
	// created by the groups RPCs and have persistent members with roles
	// (owner, admin, member); subscribe, publish, history and presence need
	// membership on top of the other rules here. With allowPublish,
	// allowHistory and allowPresence set to authenticated, members post and
	// read without subscribing. Limits are in spec.groups.
	// +optional
	Group bool `json:"group,omitempty"`

	// AllowPublish says who may publish: subscribers, any authenticated user, or none (only the server API).
	// +kubebuilder:validation:Enum=subscribers;authenticated;none
	// +kubebuilder:default=subscribers
	// +optional
	AllowPublish string `json:"allowPublish,omitempty"`

	// AllowSubscribe says who may subscribe: any authenticated user, or only
	// holders of a channel grant in their token.
	// +kubebuilder:validation:Enum=authenticated;token
	// +kubebuilder:default=authenticated
	// +optional
	AllowSubscribe string `json:"allowSubscribe,omitempty"`

	// AllowHistory says who may read history.
	// +kubebuilder:validation:Enum=subscribers;authenticated
	// +kubebuilder:default=subscribers
	// +optional
	AllowHistory string `json:"allowHistory,omitempty"`

	// AllowPresence says who may see presence.
	// +kubebuilder:validation:Enum=subscribers;authenticated
	// +kubebuilder:default=subscribers
	// +optional
	AllowPresence string `json:"allowPresence,omitempty"`
}

// HistorySpec keeps the last Size publications of a channel for at most TTL.
//
// +kubebuilder:validation:XValidation:rule="self.size == 0 || has(self.ttl)",message="spec.channels[].history.ttl is required when history.size > 0",fieldPath=".ttl"
type HistorySpec struct {
	// Size is how many publications to keep per channel; 0 keeps none.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	Size int32 `json:"size"`

	// TTL is how long publications are kept.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('87600h')",message="spec.channels[].history.ttl must be between 1s and 87600h"
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`
}
