// Package naming is the one place that names what a ChatCluster owns: its
// Kubernetes children, its Secrets, its RabbitMQ exchanges and the labels that
// select them. The operator's builders, its provisioning steps and the tests
// all ask here, so a name is never spelled twice.
package naming

import (
	"fmt"
	"maps"
)

// Label keys and values on everything the operator creates.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelPartOf=parley is the label the operator's cache selects Secrets and
	// ConfigMaps by: the operator sees only those, so its memory does not grow
	// with the cluster's unrelated Secrets. Put it on a Secret a ChatCluster
	// references (broker or database URI) to have a change noticed at once;
	// without it the change is picked up at the next periodic resync.
	LabelPartOf = "app.kubernetes.io/part-of"

	AppName       = "parley-chat"
	ComponentChat = "chat-server"
	ManagedBy     = "parley-operator"
	PartOf        = "parley"
	// ContainerName is the chat server's container in the pod template.
	ContainerName = "chatserver"
)

// Suffixes of the children's names (ChildResourceName(cluster, suffix)). The
// ServiceAccount, Service, Deployment, HPA, PDB, Ingress, NetworkPolicy and
// ServiceMonitor carry the cluster's own name (suffix "").
const (
	SuffixConfig   = "config"
	SuffixJWT      = "jwt"
	SuffixAPIKey   = "api-key"
	SuffixDatabase = "db"
	// SuffixStreams names the Ingress of the long-lived endpoints (/connection/).
	SuffixStreams = "streams"
)

// ChildResourceName is the name of a ChatCluster's child: the cluster's name,
// or "<cluster>-<suffix>".
func ChildResourceName(cluster, suffix string) string {
	if suffix == "" {
		return cluster
	}
	return cluster + "-" + suffix
}

// StreamsIngressName is the Ingress of the long-lived endpoints, when
// spec.ingress.streamAnnotations asks for one.
func StreamsIngressName(cluster string) string { return ChildResourceName(cluster, SuffixStreams) }

// ConfigMapName is the ConfigMap holding the rendered chat server config.
func ConfigMapName(cluster string) string { return ChildResourceName(cluster, SuffixConfig) }

// JWTSecretName is the Secret with the HMAC keys for connection tokens (keys
// JWTCurrentKey and JWTPreviousKey).
func JWTSecretName(cluster string) string { return ChildResourceName(cluster, SuffixJWT) }

// APIKeySecretName is the Secret with the server HTTP API key (key APIKeyKey).
func APIKeySecretName(cluster string) string { return ChildResourceName(cluster, SuffixAPIKey) }

// DatabaseSecretName is the Secret with the generated database credentials
// (keys host, port, database, username, password and DatabaseURIKey).
func DatabaseSecretName(cluster string) string { return ChildResourceName(cluster, SuffixDatabase) }

// Keys inside the generated Secrets.
const (
	JWTCurrentKey  = "current"
	JWTPreviousKey = "previous"
	APIKeyKey      = "api-key"
	DatabaseURIKey = "uri"
)

// Exchanges are the RabbitMQ exchanges of one ChatCluster.
type Exchanges struct {
	// Publications is the durable topic exchange publications are routed through.
	Publications string
	// Control is the durable fanout exchange for node-to-node commands.
	Control string
	// DeadLetter is the durable fanout exchange each node's queue dead-letters
	// to (messages a node rejects, queue overflow).
	DeadLetter string
	// DeadLetterQueue is the bounded durable queue bound to DeadLetter, kept
	// for inspection.
	DeadLetterQueue string
}

// ExchangeNames names the RabbitMQ objects of the ChatCluster
// namespace/name: parley.<namespace>.<name>.pub, .control, .dlx and
// .dead-letter.
// Namespaces and ChatCluster names are DNS labels (the CRD refuses a name
// with a dot), so two clusters never share an exchange.
func ExchangeNames(namespace, name string) Exchanges {
	prefix := fmt.Sprintf("parley.%s.%s", namespace, name)
	return Exchanges{
		Publications: prefix + ".pub", Control: prefix + ".control",
		DeadLetter: prefix + ".dlx", DeadLetterQueue: prefix + ".dead-letter",
	}
}

// SelectorLabels select the chat server pods of a cluster. They never change:
// a Deployment's selector is immutable.
func SelectorLabels(cluster string) map[string]string {
	return map[string]string{LabelName: AppName, LabelInstance: cluster}
}

// Labels go on every object the operator creates for a cluster.
func Labels(cluster string) map[string]string {
	l := SelectorLabels(cluster)
	l[LabelComponent] = ComponentChat
	l[LabelManagedBy] = ManagedBy
	l[LabelPartOf] = PartOf
	return l
}

// CacheSelector is the label set the operator's cache filters Secrets and
// ConfigMaps by.
func CacheSelector() map[string]string {
	return map[string]string{LabelPartOf: PartOf}
}

// WithLabels returns Labels(cluster) plus extra (extra never overrides ours).
func WithLabels(cluster string, extra map[string]string) map[string]string {
	l := make(map[string]string, len(extra)+5)
	maps.Copy(l, extra)
	maps.Copy(l, Labels(cluster))
	return l
}

// BrokerSecretName is the Secret with the cluster's own RabbitMQ credentials
// in a ChatBackend (keys BrokerURIKey, username, password, vhost, and CAKey
// when the backend verifies TLS).
func BrokerSecretName(cluster string) string { return ChildResourceName(cluster, SuffixBroker) }

// SuffixBroker names the Secret of the cluster's RabbitMQ credentials.
const SuffixBroker = "broker"

// Keys of the broker credentials Secret, and the CA key both credentials Secrets share.
const (
	BrokerURIKey = "uri"
	CAKey        = "ca.crt"
)

// BrokerVHost is the RabbitMQ vhost of the ChatCluster namespace/name in a
// ChatBackend: "parley.<namespace>.<name>". A namespace and a ChatCluster
// name have no dots, so two clusters never share one.
func BrokerVHost(namespace, name string) string {
	return fmt.Sprintf("parley.%s.%s", namespace, name)
}

// BrokerUser is the RabbitMQ user the chat servers of namespace/name connect as.
func BrokerUser(namespace, name string) string { return BrokerVHost(namespace, name) }
