package v1alpha1

// The ChatCluster's dependencies: the RabbitMQ and PostgreSQL it uses (as
// ChatBackends, or through the deprecated admin Secret references).

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
