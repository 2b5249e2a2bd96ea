package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ChatClusterStatus is what the operator observed.
type ChatClusterStatus struct {
	// ObservedGeneration is the last spec generation the operator processed.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Progressing, Degraded, Paused, BrokerReady, DatabaseReady, Deprecated.
	// Each carries the generation it describes.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Replicas is the number of chat server pods (all revisions).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// ReadyReplicas is the number of ready chat server pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// UpdatedReplicas is the number of pods running the current spec.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`

	// Selector is the pods' label selector, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`

	// Endpoint is the in-cluster WebSocket URL.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// ExternalEndpoint is the WebSocket URL through the Ingress, when there is one.
	// +optional
	ExternalEndpoint string `json:"externalEndpoint,omitempty"`

	// Image the chat servers run.
	// +optional
	Image string `json:"image,omitempty"`

	// AvailableImage is the operator's default chat server image while the
	// cluster holds another one (spec.defaultImagePolicy Hold, no
	// spec.image): the image an upgrade of the chat servers would bring.
	// Empty when the chat servers run the image the operator would choose.
	// +optional
	AvailableImage string `json:"availableImage,omitempty"`

	// Secrets are the names of the Secrets the operator generated for this cluster.
	// +optional
	Secrets GeneratedSecrets `json:"secrets,omitempty"`

	// Backends are the ChatBackends the cluster uses (the defaults resolved).
	// +optional
	Backends BackendsInUse `json:"backends,omitempty"`

	// ExternalState is what the operator created outside Kubernetes and will
	// delete under a Delete policy: when the ChatCluster is deleted, or when
	// the spec section that asked for it is removed. It remembers the Secret
	// to reach it through and the failed cleanup attempts, so the bounded
	// retries hold across operator restarts.
	// +optional
	ExternalState ExternalState `json:"externalState,omitempty"`
}

// ExternalState lists the external state the operator will delete.
type ExternalState struct {
	// Broker is the cluster's RabbitMQ topology (spec.broker.deletionPolicy Delete).
	// +optional
	Broker *ExternalStateRecord `json:"broker,omitempty"`
	// Database is the cluster's PostgreSQL role and database (spec.database.reclaimPolicy Delete).
	// +optional
	Database *ExternalStateRecord `json:"database,omitempty"`
}

// ExternalStateRecord is one piece of external state to delete, and how far
// its deletion got.
type ExternalStateRecord struct {
	// Backend is the ChatBackend it lives in, kept so that removing the
	// section from the spec still lets the operator delete it.
	// +optional
	Backend string `json:"backend,omitempty"`
	// SecretRef is the Secret key holding the URI the operator deletes it
	// with (the deprecated spec.broker.secretRef, spec.database.adminSecretRef).
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`
	// CleanupAttempts counts the failed attempts to delete it. The operator
	// retries until its --cleanup-retry-for has passed since
	// firstCleanupFailure, then gives up with an event naming what was left
	// behind.
	// +optional
	CleanupAttempts int32 `json:"cleanupAttempts,omitempty"`
	// FirstCleanupFailure is when the first attempt to delete it failed:
	// the retry period counts from it.
	// +optional
	FirstCleanupFailure *metav1.Time `json:"firstCleanupFailure,omitempty"`
	// LastCleanupFailure is when the latest attempt failed; the next one
	// waits for the backoff from then.
	// +optional
	LastCleanupFailure *metav1.Time `json:"lastCleanupFailure,omitempty"`
}

// GeneratedSecrets names the Secrets the operator generated.
type GeneratedSecrets struct {
	// JWT holds the HMAC keys for connection tokens (keys current and previous).
	// +optional
	JWT string `json:"jwt,omitempty"`
	// APIKey holds the server HTTP API key (key api-key).
	// +optional
	APIKey string `json:"apiKey,omitempty"`
	// Database holds the generated database credentials (host, port, database, username, password, uri).
	// +optional
	Database string `json:"database,omitempty"`
	// Broker holds the cluster's own RabbitMQ credentials (uri, username, password, vhost).
	// +optional
	Broker string `json:"broker,omitempty"`
}

// BackendsInUse names the ChatBackends a cluster uses, defaults resolved.
type BackendsInUse struct {
	// Broker is the RabbitMQ ChatBackend.
	// +optional
	Broker string `json:"broker,omitempty"`
	// Database is the PostgreSQL ChatBackend.
	// +optional
	Database string `json:"database,omitempty"`
}
