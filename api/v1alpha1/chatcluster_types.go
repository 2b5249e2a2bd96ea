package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Annotations a user may put on a ChatCluster.
const (
	// AnnotationPaused, set to "true", stops the operator from changing the
	// cluster's children (deletion still works). The Paused condition says so.
	AnnotationPaused = "chat.parley.io/paused"
)

// Condition types reported in ChatClusterStatus.Conditions.
const (
	// ConditionReady is True when every replica of the current spec is ready to serve.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the operator or the Deployment is moving toward the spec.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something keeps the spec from being realised.
	ConditionDegraded = "Degraded"
	// ConditionPaused is True while the paused annotation is set.
	ConditionPaused = "Paused"
	// ConditionBrokerReady reports the RabbitMQ topology (set by the broker provisioning step).
	ConditionBrokerReady = "BrokerReady"
	// ConditionDatabaseReady reports the PostgreSQL database (set by the database provisioning step).
	ConditionDatabaseReady = "DatabaseReady"
	// ConditionDeprecated is True while the spec uses fields that are going
	// away (spec.broker.secretRef, spec.database.adminSecretRef); its message
	// says what to move to.
	ConditionDeprecated = "Deprecated"
)

// ChatClusterSpec is the chat service a team asks for.
//
// Duration defaults are written the way Go prints them ("24h0m0s"), so a
// client that reads and writes the object back does not change the spec.
//
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(oldSelf.autoscaling) || !has(oldSelf.replicas) || self.replicas == oldSelf.replicas",message="spec.replicas cannot change while spec.autoscaling is set: the HorizontalPodAutoscaler owns the replica count (remove spec.autoscaling to scale by hand)",fieldPath=".replicas"
// +kubebuilder:validation:XValidation:rule="has(self.broker) || (!has(self.autoscaling) && (!has(self.replicas) || self.replicas <= 1))",message="spec.broker is required when spec.replicas > 1 or spec.autoscaling is set: replicas route messages to each other through RabbitMQ",fieldPath=".broker"
// +kubebuilder:validation:XValidation:rule="has(self.database) || (!has(self.autoscaling) && (!has(self.replicas) || self.replicas <= 1))",message="spec.database is required when spec.replicas > 1 or spec.autoscaling is set: every replica must read the same history",fieldPath=".database"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.database) || has(self.database)",message="spec.database cannot be removed once set: the chat history lives there"
type ChatClusterSpec struct {
	// Replicas is the number of chat server pods when autoscaling is off;
	// `kubectl scale chatcluster` sets it. While spec.autoscaling is set it is
	// ignored and cannot change (the HorizontalPodAutoscaler owns the count);
	// when autoscaling is turned off the cluster goes to this count. More than
	// one replica needs spec.broker and spec.database.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image is the chat server image. Empty means the operator's default, the
	// image of the operator's own release.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]*$`
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy for the chat server container.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ImagePullSecrets for private registries.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// Resources of each chat server container.
	// +kubebuilder:default={requests: {cpu: "250m", memory: "256Mi"}}
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Autoscaling, when set, lets a HorizontalPodAutoscaler choose the replica count.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// Broker is the RabbitMQ the replicas exchange messages through. Without it
	// the cluster runs one replica with an in-memory broker.
	// +optional
	Broker *BrokerSpec `json:"broker,omitempty"`

	// Database is the PostgreSQL that keeps history, offsets and receipts.
	// Without it the cluster runs one replica with in-memory history, lost on restart.
	// +optional
	Database *DatabaseSpec `json:"database,omitempty"`

	// Auth controls who may connect.
	// +kubebuilder:default={}
	// +optional
	Auth AuthSpec `json:"auth,omitempty"`

	// Channels are the kinds of rooms (the channel namespace before ":", "room"
	// for "room:42") and their rules.
	// +kubebuilder:default={{name: "room", history: {size: 1000, ttl: "720h0m0s"}, presence: true, joinLeave: true, recovery: true, typing: true}}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(c, self.exists_one(d, d.name == c.name))",message="spec.channels: channel names must be unique"
	// +kubebuilder:validation:XValidation:rule="self.filter(c, has(c.personal) && c.personal).size() <= 1",message="spec.channels: at most one channel may be personal"
	// +listType=atomic
	// +optional
	Channels []ChannelSpec `json:"channels,omitempty"`

	// TLS makes the chat server itself serve wss:// with a certificate from a
	// Secret of type kubernetes.io/tls (reloaded when the Secret changes).
	// +optional
	TLS *TLSSpec `json:"tls,omitempty"`

	// AllowedOrigins for browser WebSocket upgrades; empty allows same-origin
	// only, "*" any origin.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +optional
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`

	// Transports turns the WebSocket fallbacks on or off. Both are on by
	// default: they serve users whose network breaks WebSocket, who cannot
	// turn anything on themselves, and cost nothing until used.
	// +kubebuilder:default={}
	// +optional
	Transports TransportsSpec `json:"transports,omitempty"`

	// Limits protect the servers from clients.
	// +kubebuilder:default={}
	// +optional
	Limits LimitsSpec `json:"limits,omitempty"`

	// Service is the load balancer in front of the replicas.
	// +kubebuilder:default={}
	// +optional
	Service ServiceSpec `json:"service,omitempty"`

	// Ingress, when set, exposes the WebSocket endpoint through an Ingress.
	// +optional
	Ingress *IngressSpec `json:"ingress,omitempty"`

	// PodDisruptionBudget limits voluntary evictions (default: at most one pod at a time).
	// +optional
	PodDisruptionBudget *PodDisruptionBudgetSpec `json:"podDisruptionBudget,omitempty"`

	// NetworkPolicy, when enabled, admits traffic to the chat servers only from the listed peers.
	// +optional
	NetworkPolicy *NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// Monitoring configures the ServiceMonitor, created when the Prometheus
	// Operator's CRD exists in the cluster.
	// +kubebuilder:default={}
	// +optional
	Monitoring MonitoringSpec `json:"monitoring,omitempty"`

	// WebClient serves the embedded web client at "/".
	// +kubebuilder:default={}
	// +optional
	WebClient WebClientSpec `json:"webClient,omitempty"`

	// Logging of the chat servers.
	// +kubebuilder:default={}
	// +optional
	Logging LoggingSpec `json:"logging,omitempty"`

	// DrainTimeout is how long a stopping chat server lets its clients drain
	// before closing their connections.
	// +kubebuilder:default="25s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="spec.drainTimeout must be between 1s and 1h"
	// +optional
	DrainTimeout *metav1.Duration `json:"drainTimeout,omitempty"`

	// Pod places and labels the chat server pods.
	// +kubebuilder:default={}
	// +optional
	Pod PodSpec `json:"pod,omitempty"`

	// Override patches the generated objects where the typed fields fall
	// short. The final pod template, override applied, must pass the Pod
	// Security Standards restricted profile and keep Parley's own rules (the
	// chat server's image, read-only root filesystem, own ServiceAccount
	// without a token); otherwise it is not written and Degraded says which
	// check failed (docs/pod-security.md).
	// +optional
	Override *OverrideSpec `json:"override,omitempty"`
}

// AutoscalingSpec sizes the cluster with a HorizontalPodAutoscaler (autoscaling/v2).
//
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas",fieldPath=".minReplicas"
type AutoscalingSpec struct {
	// MinReplicas is the lower bound.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// MaxReplicas is the upper bound.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxReplicas int32 `json:"maxReplicas"`

	// TargetCPUUtilizationPercentage is the average CPU use, relative to the
	// request, the autoscaler aims for.
	// +kubebuilder:default=70
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	TargetCPUUtilizationPercentage *int32 `json:"targetCPUUtilizationPercentage,omitempty"`

	// TargetConnectionsPerPod, when set, adds a Pods metric on the chat
	// server's parley_connections gauge (served to the HPA by a metrics adapter
	// such as prometheus-adapter).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	TargetConnectionsPerPod *int32 `json:"targetConnectionsPerPod,omitempty"`

	// ScaleDownStabilizationWindow is how long load must stay low before pods
	// are removed, so WebSocket clients are not churned by short dips.
	// +kubebuilder:default="5m0s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('1h')",message="spec.autoscaling.scaleDownStabilizationWindow must be between 0s and 1h"
	// +optional
	ScaleDownStabilizationWindow *metav1.Duration `json:"scaleDownStabilizationWindow,omitempty"`
}

// SecretKeyReference names one key of a Secret in the ChatCluster's namespace.
type SecretKeyReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Key within the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// DeletionPolicy says what happens to external state when its ChatCluster goes.
// +kubebuilder:validation:Enum=Delete;Retain
type DeletionPolicy string

const (
	// DeletionPolicyDelete removes the external state with the ChatCluster.
	DeletionPolicyDelete DeletionPolicy = "Delete"
	// DeletionPolicyRetain leaves the external state behind.
	DeletionPolicyRetain DeletionPolicy = "Retain"
)

// BrokerSpec is the RabbitMQ the chat servers route messages through.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.backend) && has(self.secretRef))",message="spec.broker: set at most one of backend and secretRef (secretRef is deprecated: name a ChatBackend)"
type BrokerSpec struct {
	// Backend names the ChatBackend (a RabbitMQ the platform team offers)
	// to use. The operator creates a vhost and a user of this cluster's own
	// there, with exactly the permissions the chat servers need, and writes
	// their URI to the Secret <name>-broker. Empty (and no secretRef): the
	// RabbitMQ ChatBackend annotated chat.parley.io/is-default-backend=true.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Backend string `json:"backend,omitempty"`

	// SecretRef (deprecated: use backend) names a Secret key holding an AMQP
	// URI (amqp://user:pass@host:5672/vhost) with the right to declare
	// exchanges and queues. The chat servers connect with it and the
	// operator declares the cluster's exchanges with it, in a vhost shared
	// with whoever else holds it. The Deprecated condition says so.
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`

	// DeletionPolicy for the cluster's RabbitMQ vhost, user and topology when the ChatCluster is deleted.
	// +kubebuilder:default=Delete
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// DatabaseSpec is the PostgreSQL that keeps history.
//
// +kubebuilder:validation:XValidation:rule="[has(self.backend), has(self.adminSecretRef), has(self.secretRef)].filter(x, x).size() <= 1",message="spec.database: set at most one of backend (a ChatBackend; the operator creates a database), adminSecretRef (deprecated) and secretRef (an existing database used as is)"
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) == has(oldSelf.secretRef)",message="spec.database: switching between secretRef (a database used as is) and a database the operator creates is not allowed (the history would stay behind)"
type DatabaseSpec struct {
	// Backend names the ChatBackend (a PostgreSQL the platform team offers)
	// to use. The operator creates a role and a database for this cluster
	// there and writes their credentials to the Secret <name>-db. Empty
	// (and neither adminSecretRef nor secretRef): the PostgreSQL ChatBackend
	// annotated chat.parley.io/is-default-backend=true. Moving from
	// adminSecretRef to a backend on the same server keeps the database.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Backend string `json:"backend,omitempty"`

	// AdminSecretRef (deprecated: use backend) names a Secret key holding an
	// admin PostgreSQL URI in this namespace. The operator creates a role
	// and a database for this cluster with it and writes their credentials
	// to the Secret <name>-db. The Deprecated condition says so.
	// +optional
	AdminSecretRef *SecretKeyReference `json:"adminSecretRef,omitempty"`

	// SecretRef names a Secret key holding the URI of an existing database
	// the chat servers use as is.
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`

	// ReclaimPolicy for a database the operator created, when the ChatCluster is deleted.
	// +kubebuilder:default=Retain
	// +optional
	ReclaimPolicy DeletionPolicy `json:"reclaimPolicy,omitempty"`

	// MaxConnections is each replica's connection pool size.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxConnections int32 `json:"maxConnections,omitempty"`
}

// AuthSpec controls who may connect.
type AuthSpec struct {
	// AllowAnonymous lets connections without a token in as anonymous users
	// (they may read channels that allow anonymous access).
	// +optional
	AllowAnonymous bool `json:"allowAnonymous,omitempty"`

	// JWTSecretRef names a Secret key holding your own HMAC key for HS256
	// connection tokens. Without it the operator generates one. Either way the
	// chat servers read the keys from the Secret <name>-jwt.
	// +optional
	JWTSecretRef *SecretKeyReference `json:"jwtSecretRef,omitempty"`

	// APIKeySecretRef names a Secret key holding your own key for the chat
	// server HTTP API. Without it the operator generates one in <name>-api-key.
	// +optional
	APIKeySecretRef *SecretKeyReference `json:"apiKeySecretRef,omitempty"`

	// KeyRotationOverlap is how long the previous key stays valid after a rotation.
	// +kubebuilder:default="24h0m0s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="spec.auth.keyRotationOverlap must be between 1m and 720h"
	// +optional
	KeyRotationOverlap *metav1.Duration `json:"keyRotationOverlap,omitempty"`

	// JWKSURL enables RS256/ES256 tokens verified with keys fetched from this HTTPS URL.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://')",message="spec.auth.jwksURL must be an https:// URL"
	// +optional
	JWKSURL string `json:"jwksURL,omitempty"`

	// Audience, when set, must match the token's aud claim.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Audience string `json:"audience,omitempty"`

	// Issuer, when set, must match the token's iss claim.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Issuer string `json:"issuer,omitempty"`
}

// ChannelSpec is a kind of room and its rules.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.recovery) && self.recovery) || (has(self.history) && self.history.size > 0)",message="spec.channels[].recovery needs history.size > 0: recovery replays missed messages from history",fieldPath=".recovery"
// +kubebuilder:validation:XValidation:rule="!((has(self.allowAnonymousPublish) && self.allowAnonymousPublish) || (has(self.allowAnonymousPresence) && self.allowAnonymousPresence)) || (has(self.allowAnonymous) && self.allowAnonymous)",message="spec.channels[].allowAnonymous must be true when allowAnonymousPublish or allowAnonymousPresence is",fieldPath=".allowAnonymous"
// +kubebuilder:validation:XValidation:rule="!(has(self.personal) && self.personal) || size(self.name) > 0",message="spec.channels[].personal needs a name: personal channels are <name>:#<user>",fieldPath=".personal"
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

// TLSSpec is the certificate the chat servers serve wss:// with.
type TLSSpec struct {
	// SecretName of a kubernetes.io/tls Secret (tls.crt, tls.key) in the ChatCluster's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName"`
}

// TransportsSpec says which fallback transports the chat servers serve
// besides WebSocket, on the same port. Their commands arrive at /emulation,
// which any replica forwards to the one holding the session (RabbitMQ).
type TransportsSpec struct {
	// HTTPStream serves /connection/http_stream (HTTP-streaming, JSON and protobuf).
	// +kubebuilder:default=true
	// +optional
	HTTPStream *bool `json:"httpStream,omitempty"`

	// SSE serves /connection/sse (Server-Sent Events, JSON).
	// +kubebuilder:default=true
	// +optional
	SSE *bool `json:"sse,omitempty"`
}

// LimitsSpec protects the chat servers from clients.
type LimitsSpec struct {
	// MaxMessageBytes is the largest frame a client may send.
	// +kubebuilder:default=65536
	// +kubebuilder:validation:Minimum=256
	// +kubebuilder:validation:Maximum=16777216
	// +optional
	MaxMessageBytes int32 `json:"maxMessageBytes,omitempty"`

	// PublishesPerSecond per connection; 0 means unlimited.
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	PublishesPerSecond *int32 `json:"publishesPerSecond,omitempty"`

	// ConnectionsPerUser across all replicas (counted through the shared store); 0 means unlimited.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	ConnectionsPerUser *int32 `json:"connectionsPerUser,omitempty"`

	// SubscriptionsPerConnection; 0 means unlimited.
	// +kubebuilder:default=128
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	SubscriptionsPerConnection *int32 `json:"subscriptionsPerConnection,omitempty"`

	// WriteQueueBytes bounds each connection's pending output; past it the
	// client is disconnected as a slow consumer.
	// +kubebuilder:default=1048576
	// +kubebuilder:validation:Minimum=65536
	// +kubebuilder:validation:Maximum=67108864
	// +optional
	WriteQueueBytes int32 `json:"writeQueueBytes,omitempty"`
}

// ServiceSpec is the Service in front of the chat servers.
type ServiceSpec struct {
	// Type of the Service.
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +kubebuilder:default=ClusterIP
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`

	// Port the Service listens on for clients; default 80, or 443 with
	// spec.tls. The Service also carries the admin port, 8001 (named admin),
	// so this cannot be 8001.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:validation:XValidation:rule="self != 8001",message="spec.service.port: 8001 is the admin port (HTTP API, metrics); choose another"
	// +optional
	Port *int32 `json:"port,omitempty"`

	// Annotations for the Service (load balancer settings, for example).
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// IngressSpec exposes the chat service through an Ingress.
type IngressSpec struct {
	// Host clients connect to.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Host string `json:"host"`

	// ClassName of the Ingress controller.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ClassName *string `json:"className,omitempty"`

	// TLSSecretName is the certificate the Ingress terminates TLS with.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	TLSSecretName string `json:"tlsSecretName,omitempty"`

	// Path prefix routed to the chat servers.
	// +kubebuilder:default="/"
	// +kubebuilder:validation:Pattern=`^/[^\s]*$`
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Path string `json:"path,omitempty"`

	// Annotations for the Ingress (WebSocket timeouts of your controller, for example).
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// StreamAnnotations, when set, put the long-lived endpoints (the path
	// prefix's connection/: WebSocket, HTTP-streaming, SSE) on an Ingress of
	// their own, <name>-streams, with these annotations on top of
	// Annotations: timeouts per path, since Ingress controllers take them per
	// Ingress. For ingress-nginx, e.g. proxy-read-timeout and
	// proxy-send-timeout "3600" and proxy-buffering "off", while the page and
	// /emulation keep short timeouts.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	StreamAnnotations map[string]string `json:"streamAnnotations,omitempty"`
}

// PodDisruptionBudgetSpec limits voluntary evictions of chat server pods.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.maxUnavailable) && has(self.minAvailable))",message="spec.podDisruptionBudget: set at most one of maxUnavailable and minAvailable"
type PodDisruptionBudgetSpec struct {
	// Enabled creates the PodDisruptionBudget.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// MaxUnavailable pods during a voluntary disruption (default 1).
	// +kubebuilder:validation:XIntOrString
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`

	// MinAvailable pods during a voluntary disruption.
	// +kubebuilder:validation:XIntOrString
	// +optional
	MinAvailable *intstr.IntOrString `json:"minAvailable,omitempty"`
}

// NetworkPolicySpec restricts who may reach the chat servers. The public port
// (WebSocket, web page) and the admin port (HTTP API, metrics) are admitted
// separately. Kubelet probes are never blocked: traffic from a pod's own node
// is always allowed.
type NetworkPolicySpec struct {
	// Enabled creates a NetworkPolicy for the chat server pods.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// AllowedFrom are the peers admitted to the public port (WebSocket, web
	// page, health). Empty admits every source.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	AllowedFrom []networkingv1.NetworkPolicyPeer `json:"allowedFrom,omitempty"`

	// MetricsFrom are the peers admitted to the admin port to scrape /metrics.
	// Empty admits the namespace named "monitoring" (label
	// kubernetes.io/metadata.name: monitoring).
	// +kubebuilder:validation:MaxItems=64
	// +optional
	MetricsFrom []networkingv1.NetworkPolicyPeer `json:"metricsFrom,omitempty"`

	// APIFrom are the peers admitted to the admin port to call the HTTP API
	// (/api/*, which also needs the API key). Empty admits the pods of the
	// ChatCluster's own namespace only. A NetworkPolicy admits by port, not
	// by path: peers in metricsFrom and apiFrom both reach the whole admin
	// port.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	APIFrom []networkingv1.NetworkPolicyPeer `json:"apiFrom,omitempty"`
}

// MonitoringSpec configures Prometheus scraping.
type MonitoringSpec struct {
	// ServiceMonitor is created when the monitoring.coreos.com CRD exists.
	// +kubebuilder:default={}
	// +optional
	ServiceMonitor ServiceMonitorSpec `json:"serviceMonitor,omitempty"`
}

// ServiceMonitorSpec configures the ServiceMonitor.
type ServiceMonitorSpec struct {
	// Enabled creates the ServiceMonitor when its CRD exists.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Interval between scrapes.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s') && duration(self) <= duration('10m')",message="spec.monitoring.serviceMonitor.interval must be between 5s and 10m"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// Labels added to the ServiceMonitor, for a Prometheus that selects by label.
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}

// WebClientSpec configures the embedded web client.
type WebClientSpec struct {
	// Enabled serves the web client at "/".
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// LoggingSpec configures the chat servers' logs.
type LoggingSpec struct {
	// Level is debug, info, warn or error.
	// +kubebuilder:validation:Enum=debug;info;warn;error
	// +kubebuilder:default=info
	// +optional
	Level string `json:"level,omitempty"`

	// Format is json or text.
	// +kubebuilder:validation:Enum=json;text
	// +kubebuilder:default=json
	// +optional
	Format string `json:"format,omitempty"`
}

// PodSpec places and labels the chat server pods.
type PodSpec struct {
	// Labels added to the pods.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations added to the pods.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// NodeSelector for the pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations for the pods.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity for the pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// PriorityClassName of the pods.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// TopologySpreadConstraints replace the default spread (across nodes and
	// zones, as evenly as the scheduler can) when set.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
}

// OverrideSpec holds patches for what the typed fields miss.
type OverrideSpec struct {
	// Deployment is a strategic-merge patch applied to the generated
	// Deployment (for example extra environment variables or a sidecar:
	// spec.template.spec.containers[name=chatserver].env).
	// +optional
	Deployment *DeploymentOverride `json:"deployment,omitempty"`
}

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
	// gives up after its --cleanup-attempts, with an event naming what was
	// left behind.
	// +optional
	CleanupAttempts int32 `json:"cleanupAttempts,omitempty"`
	// FirstCleanupFailure is when the first attempt to delete it failed.
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

// ChatCluster is a chat service: WebSocket chat servers, autoscaled, routed
// through RabbitMQ, with history in PostgreSQL.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=chat,categories=parley
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.status.image`,priority=1
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 45 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 45 characters starting with a letter: it names the Service, the Secrets and the RabbitMQ exchanges"
type ChatCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	Spec   ChatClusterSpec   `json:"spec,omitempty"`
	Status ChatClusterStatus `json:"status,omitempty"`
}

// ChatClusterList is a list of ChatClusters.
//
// +kubebuilder:object:root=true
type ChatClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ChatCluster `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ChatCluster{}, &ChatClusterList{})
}
