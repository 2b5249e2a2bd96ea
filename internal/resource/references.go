package resource

import (
	"slices"

	"github.com/parley-chat/parley/internal/naming"
)

// Where the chat server container finds its config and Secrets.
const (
	ConfigDir   = "/etc/parley/config"
	ConfigFile  = ConfigDir + "/" + ConfigKey
	ConfigKey   = "config.json"
	JWTDir      = "/etc/parley/jwt"
	APIKeyDir   = "/etc/parley/api"
	BrokerDir   = "/etc/parley/broker"
	DatabaseDir = "/etc/parley/db"
	TLSDir      = "/etc/parley/tls"
	// URIFile is the file name of the broker and database URIs in their directories.
	URIFile = "uri"
	// CAFile is the file name of a backend's CA bundle beside its URI.
	CAFile = "ca.crt"
)

// SecretReference is a Secret the chat server pods mount.
type SecretReference struct {
	// Name of the Secret in the cluster's namespace.
	Name string
	// Key the pods need, or "" when they mount the whole Secret.
	Key string
	// RestartOnChange is true when the chat server reads the value only at
	// start (broker and database URIs): its digest goes into the pod
	// template's config hash, so a change rolls the pods. Keys the server
	// reloads by itself (JWT keys, API key, TLS certificate) are left out, so
	// a key rotation does not disconnect every client.
	RestartOnChange bool
	// Optional Secrets are not waited for (the TLS certificate: the kubelet
	// waits for it, and cert-manager may create it later).
	Optional bool
}

// SecretReferences lists the Secrets the pods of a cluster mount. The
// Deployment is not created until the non-optional ones exist.
func SecretReferences(c Cluster) []SecretReference {
	refs := []SecretReference{
		{Name: naming.JWTSecretName(c.ChatCluster.Name), Key: naming.JWTCurrentKey},
		{Name: naming.APIKeySecretName(c.ChatCluster.Name), Key: naming.APIKeyKey},
	}
	if name, key, ok := brokerURISecret(c); ok {
		refs = append(refs, SecretReference{Name: name, Key: key, RestartOnChange: true})
	}
	if name, key, ok := databaseURISecret(c); ok {
		refs = append(refs, SecretReference{Name: name, Key: key, RestartOnChange: true})
	}
	if t := c.Spec.TLS; t != nil {
		refs = append(refs, SecretReference{Name: t.SecretName, Optional: true})
	}
	return refs
}

// ReferencedSecretNames lists every Secret a cluster depends on (mounted or
// used by the operator), for the index that maps a changed Secret to its clusters.
func ReferencedSecretNames(c Cluster) []string {
	var names []string
	for _, r := range SecretReferences(c) {
		names = append(names, r.Name)
	}
	if d := c.Spec.Database; d != nil && d.AdminSecretRef != nil {
		names = append(names, d.AdminSecretRef.Name)
	}
	if a := c.Spec.Auth; a.JWTSecretRef != nil {
		names = append(names, a.JWTSecretRef.Name)
	}
	if a := c.Spec.Auth; a.APIKeySecretRef != nil {
		names = append(names, a.APIKeySecretRef.Name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// brokerURISecret is the Secret key holding the AMQP URI the chat servers
// use: the generated <name>-broker (the cluster's own user and vhost in its
// ChatBackend), or the deprecated spec.broker.secretRef.
func brokerURISecret(c Cluster) (name, key string, ok bool) {
	b := c.Spec.Broker
	switch {
	case b == nil:
		return "", "", false
	case b.SecretRef != nil:
		return b.SecretRef.Name, b.SecretRef.Key, true
	default:
		return naming.BrokerSecretName(c.ChatCluster.Name), naming.BrokerURIKey, true
	}
}

// databaseURISecret is the Secret key holding the URI the chat servers use:
// the generated <name>-db when the operator provisions the database, the
// user's Secret when they bring their own.
func databaseURISecret(c Cluster) (name, key string, ok bool) {
	d := c.Spec.Database
	switch {
	case d == nil:
		return "", "", false
	case d.SecretRef != nil:
		return d.SecretRef.Name, d.SecretRef.Key, true
	default:
		return naming.DatabaseSecretName(c.ChatCluster.Name), naming.DatabaseURIKey, true
	}
}

// SecretsHash digests the values of the restart-on-change references. data
// maps a Secret name to its data; a missing Secret or key hashes as absent.
func SecretsHash(refs []SecretReference, data map[string]map[string][]byte) string {
	var parts [][]byte
	for _, r := range refs {
		if !r.RestartOnChange {
			continue
		}
		v, ok := data[r.Name][r.Key]
		marker := []byte{0}
		if ok {
			marker = []byte{1}
		}
		parts = append(parts, []byte(r.Name), []byte(r.Key), marker, v)
	}
	return Hash(parts...)
}
