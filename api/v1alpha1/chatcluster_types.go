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
	// ConditionDegraded is True when something keeps the spec from being
	// realised. A conflict writing a child (another writer changed it) is
	// retried and counts only when it persists for 30 seconds.
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

	// DefaultImagePolicy says when a cluster without spec.image takes a new
	// operator default image. Follow (the default): at the operator upgrade
	// that ships it, in a rolling update. Hold: the chat servers keep the image
	// they run; the new default reaches them only when spec.image is set or
	// this policy goes back to Follow (status.image shows what they run). It
	// holds only the image: a change of the spec, of the rendered config's
	// meaning or of the broker or database URI still rolls the pods.
	// +kubebuilder:validation:Enum=Follow;Hold
	// +optional
	DefaultImagePolicy DefaultImagePolicy `json:"defaultImagePolicy,omitempty"`

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

	// Groups limits what users do in group channels (spec.channels[].group).
	// Empty: the chat server's defaults.
	// +optional
	Groups *GroupsSpec `json:"groups,omitempty"`

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

// GroupsSpec limits groups. Every field left out takes the chat server's
// default (docs/config.md).
type GroupsSpec struct {
	// MembersPerGroup caps a group's members (default 1000).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MembersPerGroup *int32 `json:"membersPerGroup,omitempty"`

	// GroupsPerUser caps the groups one user belongs to (default 500).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	GroupsPerUser *int32 `json:"groupsPerUser,omitempty"`

	// InvitesPerHour caps the invites and adds one user makes per hour,
	// across replicas (default 100).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	InvitesPerHour *int32 `json:"invitesPerHour,omitempty"`

	// SearchesPerMinute caps one user's searches per minute on a replica (default 30).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	SearchesPerMinute *int32 `json:"searchesPerMinute,omitempty"`

	// SearchLanguage is the PostgreSQL text search configuration messages are
	// indexed and searched with: english, german, french … or simple (the
	// default: no stemming, suits every language).
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]{0,62}$`
	// +optional
	SearchLanguage string `json:"searchLanguage,omitempty"`

	// MaxMuteDuration caps how long a moderator mutes a member (default 720h).
	// +optional
	MaxMuteDuration *metav1.Duration `json:"maxMuteDuration,omitempty"`
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

	// CommandCostPerSecond is each connection's budget for commands, in cost
	// units (docs/protocol.md lists each command's cost), recovering at this
	// rate with bursts of ten seconds' worth; past it a command is answered
	// 111 "too many requests". Empty: the chat server's default (100); 0
	// turns it off.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	CommandCostPerSecond *int32 `json:"commandCostPerSecond,omitempty"`

	// UserCommandCostPerSecond is the same budget shared by all of one
	// user's connections on a replica. Empty: the chat server's default
	// (300); 0 turns it off.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	UserCommandCostPerSecond *int32 `json:"userCommandCostPerSecond,omitempty"`
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

// MonitoringSpec configures Prometheus scraping and alerting.
type MonitoringSpec struct {
	// ServiceMonitor is created when the monitoring.coreos.com CRD exists.
	// +kubebuilder:default={}
	// +optional
	ServiceMonitor ServiceMonitorSpec `json:"serviceMonitor,omitempty"`

	// PrometheusRule, when enabled, is created when the monitoring.coreos.com
	// PrometheusRule CRD exists: alerts on the chat servers' metrics (no
	// ready replica, broker link down, store unavailable, publications not
	// fanned out, delivery lag, error replies, slow-consumer disconnects,
	// connection-limit refusals), each with a runbook in docs/operations.md.
	// Defaulted to {} like serviceMonitor: a Go client writes the struct back
	// as {}, and without the default that write would change the spec.
	// +kubebuilder:default={}
	// +optional
	PrometheusRule PrometheusRuleSpec `json:"prometheusRule,omitempty"`
}

// PrometheusRuleSpec configures the cluster's alerting rules.
type PrometheusRuleSpec struct {
	// Enabled creates the PrometheusRule when its CRD exists (default false).
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Labels added to the PrometheusRule, for a Prometheus that selects rules
	// by label (e.g. release: prometheus).
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
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
// +kubebuilder:printcolumn:name="Available Image",type=string,JSONPath=`.status.availableImage`,priority=1
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

// DefaultImagePolicy says when a ChatCluster without spec.image takes the
// operator's new default chat server image.
type DefaultImagePolicy string

const (
	// DefaultImagePolicyFollow rolls the chat servers to the operator's
	// default image when an operator upgrade changes it.
	DefaultImagePolicyFollow DefaultImagePolicy = "Follow"
	// DefaultImagePolicyHold keeps the image the chat servers run until
	// spec.image is set or the policy is Follow again.
	DefaultImagePolicyHold DefaultImagePolicy = "Hold"
)
