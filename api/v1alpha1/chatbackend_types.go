package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationDefaultBackend, set to "true" on a ChatBackend, makes it the
// backend of its kind (RabbitMQ or PostgreSQL) for ChatClusters that name
// none, as storageclass.kubernetes.io/is-default-class does for volumes.
// When several backends of a kind carry it, the newest wins (as for
// StorageClasses) and their status says so.
const AnnotationDefaultBackend = "chat.parley.io/is-default-backend"

// Condition types and reasons of ChatBackendStatus.
const (
	// ConditionBackendReady is True when the operator reached the backend
	// with its admin credentials.
	ConditionBackendReady = "Ready"
)

// Backend kinds, as printed in the Type column.
const (
	BackendTypeRabbitMQ   = "RabbitMQ"
	BackendTypePostgreSQL = "PostgreSQL"
)

// ChatBackendSpec is one RabbitMQ or one PostgreSQL that a platform team
// offers to ChatClusters, and which namespaces may use it. Exactly one of
// rabbitmq and postgresql is set. The admin credentials stay in the
// namespace the references point at (the operator's, or the one of the
// RabbitmqCluster / CloudNativePG Cluster), which tenants cannot read; a
// ChatCluster only names the backend, and receives credentials of its own.
//
// +kubebuilder:validation:XValidation:rule="has(self.rabbitmq) != has(self.postgresql)",message="spec: set exactly one of rabbitmq and postgresql"
// +kubebuilder:validation:XValidation:rule="has(self.rabbitmq) == has(oldSelf.rabbitmq)",message="spec: a backend cannot change between rabbitmq and postgresql (ChatClusters keep state in it); create another ChatBackend"
type ChatBackendSpec struct {
	// RabbitMQ the chat servers route messages through. Each ChatCluster
	// gets its own vhost and user with exactly the permissions the chat
	// server needs.
	// +optional
	RabbitMQ *RabbitMQBackend `json:"rabbitmq,omitempty"`

	// PostgreSQL that keeps chat history. Each ChatCluster gets its own role
	// and database; the admin is a member of no tenant role afterwards.
	// +optional
	PostgreSQL *PostgreSQLBackend `json:"postgresql,omitempty"`

	// AllowedNamespaces says whose ChatClusters may use this backend.
	// ChatClusters in other namespaces get BrokerReady/DatabaseReady False
	// (reason NamespaceNotAllowed) and nothing is created for them. There
	// is no default: the platform team says whom it serves.
	AllowedNamespaces AllowedNamespaces `json:"allowedNamespaces"`
}

// NamespacesFrom says which namespaces a backend admits.
// +kubebuilder:validation:Enum=All;Selector
type NamespacesFrom string

const (
	// NamespacesFromAll admits every namespace.
	NamespacesFromAll NamespacesFrom = "All"
	// NamespacesFromSelector admits the namespaces matched by selector (none
	// when the selector is empty).
	NamespacesFromSelector NamespacesFrom = "Selector"
)

// AllowedNamespaces is modelled on Gateway API's allowedRoutes.namespaces.
//
// +kubebuilder:validation:XValidation:rule="self.from != 'Selector' || has(self.selector)",message="spec.allowedNamespaces.selector is required when from is Selector (use from: All to admit every namespace)",fieldPath=".selector"
type AllowedNamespaces struct {
	// From is All (every namespace) or Selector (the namespaces matched by
	// selector; use the label kubernetes.io/metadata.name to list names).
	From NamespacesFrom `json:"from"`

	// Selector of the admitted namespaces' labels, when from is Selector.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// ObjectReference names an object in a namespace.
type ObjectReference struct {
	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Namespace of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
}

// NamespacedSecretKeyReference names one key of a Secret in a given namespace.
type NamespacedSecretKeyReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Namespace of the Secret: the operator's, or another the platform team
	// owns. Tenants must not be able to read it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
	// Key within the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// BackendTLS makes the connections to a backend verify its certificate.
type BackendTLS struct {
	// CASecretRef names the PEM CA bundle the backend's server certificate
	// must chain to. The operator and the chat servers trust only it, and
	// check the host name (PostgreSQL sslmode=verify-full, verified AMQPS).
	// The CA is copied into each ChatCluster's credentials Secret.
	CASecretRef NamespacedSecretKeyReference `json:"caSecretRef"`
}

// RabbitMQBackend is a RabbitMQ, as a RabbitmqCluster of
// rabbitmq/cluster-operator or as a connection Secret.
//
// +kubebuilder:validation:XValidation:rule="has(self.clusterRef) != has(self.connectionSecret)",message="spec.rabbitmq: set exactly one of clusterRef and connectionSecret"
type RabbitMQBackend struct {
	// ClusterRef names a RabbitmqCluster (rabbitmq.com/v1beta1). The
	// operator reads its default-user Secret and Service from its status,
	// in its namespace.
	// +optional
	ClusterRef *ObjectReference `json:"clusterRef,omitempty"`

	// ConnectionSecret is a Secret with the admin's AMQP URI under key
	// "uri" (amqp[s]://user:password@host:port/) and the management API URL
	// under key "managementURI" (http[s]://host:15672, the same user).
	// +optional
	ConnectionSecret *ObjectReference `json:"connectionSecret,omitempty"`

	// TLS verifies the broker's certificate (amqps:// and https://).
	// +optional
	TLS *BackendTLS `json:"tls,omitempty"`
}

// PostgreSQLBackend is a PostgreSQL, as a CloudNativePG Cluster or as an
// admin Secret.
//
// +kubebuilder:validation:XValidation:rule="has(self.clusterRef) != has(self.adminSecretRef)",message="spec.postgresql: set exactly one of clusterRef and adminSecretRef"
type PostgreSQLBackend struct {
	// ClusterRef names a CloudNativePG Cluster (postgresql.cnpg.io/v1) with
	// enableSuperuserAccess: true. The operator connects to its read-write
	// Service with its superuser Secret and creates each ChatCluster's role
	// and database with SQL.
	// +optional
	ClusterRef *ObjectReference `json:"clusterRef,omitempty"`

	// AdminSecretRef names a Secret key holding an admin PostgreSQL URI
	// (a superuser, or a role with CREATEROLE and CREATEDB).
	// +optional
	AdminSecretRef *NamespacedSecretKeyReference `json:"adminSecretRef,omitempty"`

	// TLS verifies the server's certificate (sslmode=verify-full). For a
	// CloudNativePG Cluster without it, the cluster's own CA Secret is used.
	// +optional
	TLS *BackendTLS `json:"tls,omitempty"`
}

// ChatBackendStatus is what the operator observed of a backend.
type ChatBackendStatus struct {
	// ObservedGeneration is the last spec generation the operator processed.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (reachable with the admin credentials).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Type is RabbitMQ or PostgreSQL.
	// +optional
	Type string `json:"type,omitempty"`

	// Version the server reported.
	// +optional
	Version string `json:"version,omitempty"`

	// Default is true when this is the backend of its type that ChatClusters
	// naming none get.
	// +optional
	Default bool `json:"default,omitempty"`

	// ChatClusters is how many ChatClusters use this backend.
	// +optional
	ChatClusters int32 `json:"chatClusters"`
}

// ChatBackend is a RabbitMQ or PostgreSQL owned by the platform team and
// offered to the ChatClusters of the namespaces it allows, which name it in
// spec.broker.backend or spec.database.backend (or get the one annotated
// chat.parley.io/is-default-backend=true). Cluster-scoped, like a
// StorageClass: tenants see its name, never its credentials.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=chatbe,categories=parley
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.status.type`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Default",type=boolean,JSONPath=`.status.default`
// +kubebuilder:printcolumn:name="Clusters",type=integer,JSONPath=`.status.chatClusters`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label (ChatClusters name it in spec.broker.backend / spec.database.backend)"
type ChatBackend struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ChatBackendSpec   `json:"spec"`
	Status ChatBackendStatus `json:"status,omitempty"`
}

// IsDefault reports whether the backend carries the default annotation.
func (b *ChatBackend) IsDefault() bool { return b.Annotations[AnnotationDefaultBackend] == "true" }

// Type is BackendTypeRabbitMQ or BackendTypePostgreSQL.
func (b *ChatBackend) Type() string {
	if b.Spec.RabbitMQ != nil {
		return BackendTypeRabbitMQ
	}
	return BackendTypePostgreSQL
}

// ChatBackendList is a list of ChatBackends.
//
// +kubebuilder:object:root=true
type ChatBackendList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ChatBackend `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ChatBackend{}, &ChatBackendList{})
}
