package backends

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/status"
)

// The kinds a backend may reference, read as unstructured.
var (
	RabbitmqClusterGVK = schema.GroupVersionKind{Group: "rabbitmq.com", Version: "v1beta1", Kind: "RabbitmqCluster"}
	CNPGClusterGVK     = schema.GroupVersionKind{Group: "postgresql.cnpg.io", Version: "v1", Kind: "Cluster"}
)

// Keys of a RabbitMQ connection Secret (spec.rabbitmq.connectionSecret).
const (
	ConnectionURIKey           = "uri"
	ConnectionManagementURIKey = "managementURI"
)

// RabbitMQ is how the operator reaches a RabbitMQ as its admin.
type RabbitMQ struct {
	// URI is the admin's AMQP URI (amqp:// or amqps://, no vhost).
	URI string
	// ManagementURI is the management API base URL with the admin's credentials.
	ManagementURI string
	// CAPEM is the CA the broker's certificate must chain to (nil: no TLS).
	CAPEM []byte
}

// PostgreSQL is how the operator reaches a PostgreSQL as its admin.
type PostgreSQL struct {
	// URI is the admin's PostgreSQL URI.
	URI string
	// CAPEM is the CA the server's certificate must chain to (nil: as the URI says).
	CAPEM []byte
}

// Resolver reads what a ChatBackend points at. Reader should read around the
// operator's cache (its Secrets lack Parley's label, and the referenced kinds
// are not watched).
type Resolver struct {
	Reader client.Reader
	// ClusterDomain completes Service host names when a Secret names no host.
	ClusterDomain string
}

// RabbitMQ returns the admin connection of a RabbitMQ backend.
func (r Resolver) RabbitMQ(ctx context.Context, b *v1alpha1.ChatBackend) (RabbitMQ, error) {
	spec := b.Spec.RabbitMQ
	if spec == nil {
		return RabbitMQ{}, status.WithReason(ReasonWrongBackendType, fmt.Errorf("ChatBackend %q is not a RabbitMQ backend", b.Name))
	}
	var out RabbitMQ
	if spec.TLS != nil {
		ca, err := r.secretKey(ctx, spec.TLS.CASecretRef.Namespace, spec.TLS.CASecretRef.Name, spec.TLS.CASecretRef.Key)
		if err != nil {
			return out, fmt.Errorf("spec.rabbitmq.tls.caSecretRef: %w", err)
		}
		out.CAPEM = ca
	}
	if ref := spec.ConnectionSecret; ref != nil {
		s, err := r.secret(ctx, ref.Namespace, ref.Name)
		if err != nil {
			return out, fmt.Errorf("spec.rabbitmq.connectionSecret: %w", err)
		}
		for _, k := range []string{ConnectionURIKey, ConnectionManagementURIKey} {
			if len(s.Data[k]) == 0 {
				return out, fmt.Errorf("spec.rabbitmq.connectionSecret: %w", errMissingKey(ref.Namespace, ref.Name, k))
			}
		}
		out.URI, out.ManagementURI = string(s.Data[ConnectionURIKey]), string(s.Data[ConnectionManagementURIKey])
		return out, nil
	}
	return r.rabbitmqCluster(ctx, *spec.ClusterRef, out)
}

// rabbitmqCluster reads a RabbitmqCluster's default user and Service, as
// rabbitmq/messaging-topology-operator does for rabbitmqClusterReference:
// status.defaultUser.secretReference (keys username, password, and host
// and port when the cluster-operator wrote them) and
// status.defaultUser.serviceReference (ports amqp/amqps and
// management/management-tls).
func (r Resolver) rabbitmqCluster(ctx context.Context, ref v1alpha1.ObjectReference, out RabbitMQ) (RabbitMQ, error) {
	field := "spec.rabbitmq.clusterRef"
	obj, err := r.object(ctx, RabbitmqClusterGVK, ref, field)
	if err != nil {
		return out, err
	}
	secretName, _, _ := unstructured.NestedString(obj.Object, "status", "defaultUser", "secretReference", "name")
	if secretName == "" {
		secretName, _, _ = unstructured.NestedString(obj.Object, "status", "binding", "name")
	}
	svcName, _, _ := unstructured.NestedString(obj.Object, "status", "defaultUser", "serviceReference", "name")
	svcNS, _, _ := unstructured.NestedString(obj.Object, "status", "defaultUser", "serviceReference", "namespace")
	if secretName == "" || svcName == "" {
		return out, status.WithReason(ReasonReferenceNotReady, fmt.Errorf(
			"%s: RabbitmqCluster %s/%s has no status.defaultUser yet (is it running?)", field, ref.Namespace, ref.Name))
	}
	if svcNS == "" {
		svcNS = ref.Namespace
	}
	s, err := r.secret(ctx, ref.Namespace, secretName)
	if err != nil {
		return out, fmt.Errorf("%s: default user: %w", field, err)
	}
	user, pass := string(s.Data["username"]), string(s.Data["password"])
	if user == "" || pass == "" {
		return out, fmt.Errorf("%s: %w", field, errMissingKey(ref.Namespace, secretName, "username/password"))
	}
	svc := &corev1.Service{}
	if err := r.Reader.Get(ctx, types.NamespacedName{Namespace: svcNS, Name: svcName}, svc); err != nil {
		return out, notFound(err, ReasonReferenceNotFound, fmt.Sprintf("%s: Service %s/%s", field, svcNS, svcName))
	}
	tls := out.CAPEM != nil
	amqpPort, mgmtPort := portOf(svc, "amqp", 5672), portOf(svc, "management", 15672)
	amqpScheme, mgmtScheme := "amqp", "http"
	if tls {
		amqpPort, mgmtPort = portOf(svc, "amqps", 5671), portOf(svc, "management-tls", 15671)
		amqpScheme, mgmtScheme = "amqps", "https"
	}
	host := string(s.Data["host"])
	if host == "" {
		host = joinNonEmpty(".", svcName, svcNS, "svc", r.ClusterDomain)
	}
	if p, err := strconv.Atoi(string(s.Data["port"])); err == nil && p > 0 && !tls {
		amqpPort = int32(p)
	}
	userinfo := url.UserPassword(user, pass)
	out.URI = (&url.URL{Scheme: amqpScheme, User: userinfo, Host: net.JoinHostPort(host, strconv.Itoa(int(amqpPort))), Path: "/"}).String()
	out.ManagementURI = (&url.URL{Scheme: mgmtScheme, User: userinfo, Host: net.JoinHostPort(host, strconv.Itoa(int(mgmtPort)))}).String()
	return out, nil
}

// PostgreSQL returns the admin connection of a PostgreSQL backend.
func (r Resolver) PostgreSQL(ctx context.Context, b *v1alpha1.ChatBackend) (PostgreSQL, error) {
	spec := b.Spec.PostgreSQL
	if spec == nil {
		return PostgreSQL{}, status.WithReason(ReasonWrongBackendType, fmt.Errorf("ChatBackend %q is not a PostgreSQL backend", b.Name))
	}
	var out PostgreSQL
	if spec.TLS != nil {
		ca, err := r.secretKey(ctx, spec.TLS.CASecretRef.Namespace, spec.TLS.CASecretRef.Name, spec.TLS.CASecretRef.Key)
		if err != nil {
			return out, fmt.Errorf("spec.postgresql.tls.caSecretRef: %w", err)
		}
		out.CAPEM = ca
	}
	if ref := spec.AdminSecretRef; ref != nil {
		uri, err := r.secretKey(ctx, ref.Namespace, ref.Name, ref.Key)
		if err != nil {
			return out, fmt.Errorf("spec.postgresql.adminSecretRef: %w", err)
		}
		out.URI = string(uri)
		return out, nil
	}
	return r.cnpgCluster(ctx, *spec.ClusterRef, out)
}

// cnpgCluster reads a CloudNativePG Cluster's superuser Secret
// (spec.superuserSecret.name, default <name>-superuser; it exists only with
// spec.enableSuperuserAccess: true), its read-write Service
// (status.writeService, default <name>-rw) and, unless the backend names a
// CA, the cluster's server CA (status.certificates.serverCASecret, default
// <name>-ca, key ca.crt): CloudNativePG always serves TLS, so the operator
// always verifies it.
//
// The superuser path, rather than CloudNativePG's managed roles and Database
// objects, keeps the Cluster object the platform team owns (often through
// GitOps) untouched: managed roles live in the Cluster's spec, which two
// writers would fight over.
func (r Resolver) cnpgCluster(ctx context.Context, ref v1alpha1.ObjectReference, out PostgreSQL) (PostgreSQL, error) {
	field := "spec.postgresql.clusterRef"
	obj, err := r.object(ctx, CNPGClusterGVK, ref, field)
	if err != nil {
		return out, err
	}
	if on, _, _ := unstructured.NestedBool(obj.Object, "spec", "enableSuperuserAccess"); !on {
		return out, status.WithReason(ReasonReferenceNotReady, fmt.Errorf(
			"%s: CloudNativePG Cluster %s/%s does not set spec.enableSuperuserAccess: true, so it keeps no superuser Secret for the operator",
			field, ref.Namespace, ref.Name))
	}
	secretName, _, _ := unstructured.NestedString(obj.Object, "spec", "superuserSecret", "name")
	if secretName == "" {
		secretName = ref.Name + "-superuser"
	}
	s, err := r.secret(ctx, ref.Namespace, secretName)
	if err != nil {
		return out, fmt.Errorf("%s: superuser: %w", field, err)
	}
	user, pass := string(s.Data["username"]), string(s.Data["password"])
	if user == "" || pass == "" {
		return out, fmt.Errorf("%s: %w", field, errMissingKey(ref.Namespace, secretName, "username/password"))
	}
	host := string(s.Data["host"])
	if host == "" {
		svc, _, _ := unstructured.NestedString(obj.Object, "status", "writeService")
		if svc == "" {
			svc = ref.Name + "-rw"
		}
		host = joinNonEmpty(".", svc, ref.Namespace, "svc", r.ClusterDomain)
	}
	port := 5432
	if p, err := strconv.Atoi(string(s.Data["port"])); err == nil && p > 0 {
		port = p
	}
	if out.CAPEM == nil {
		caName, _, _ := unstructured.NestedString(obj.Object, "status", "certificates", "serverCASecret")
		if caName == "" {
			caName, _, _ = unstructured.NestedString(obj.Object, "spec", "certificates", "serverCASecret")
		}
		if caName == "" {
			caName = ref.Name + "-ca"
		}
		ca, err := r.secretKey(ctx, ref.Namespace, caName, "ca.crt")
		if err != nil {
			return out, fmt.Errorf("%s: server CA: %w", field, err)
		}
		out.CAPEM = ca
	}
	u := url.URL{
		Scheme: "postgres", User: url.UserPassword(user, pass),
		Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/postgres", RawQuery: "sslmode=verify-full",
	}
	out.URI = u.String()
	return out, nil
}

// object reads a referenced object of kind gvk; a kind without a CRD is
// reported as such, not as a failure to retry blindly.
func (r Resolver) object(ctx context.Context, gvk schema.GroupVersionKind, ref v1alpha1.ObjectReference, field string) (*unstructured.Unstructured, error) {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	err := r.Reader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, obj)
	switch {
	case err == nil:
		return obj, nil
	case meta.IsNoMatchError(err) || isNoKind(err):
		return nil, status.WithReason(ReasonKindNotInstalled, fmt.Errorf(
			"%s: the kind %s (%s) is not installed in this cluster", field, gvk.Kind, gvk.GroupVersion()))
	default:
		return nil, notFound(err, ReasonReferenceNotFound, fmt.Sprintf("%s: %s %s/%s", field, gvk.Kind, ref.Namespace, ref.Name))
	}
}

// isNoKind recognises the API server's 404 for a resource that does not exist
// at all (a discovery cache that still listed it): no object name in it.
func isNoKind(err error) bool {
	var st apierrors.APIStatus
	return errors.As(err, &st) && apierrors.IsNotFound(err) && st.Status().Details != nil && st.Status().Details.Name == ""
}

func (r Resolver) secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := r.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, s); err != nil {
		return nil, notFound(err, ReasonSecretNotFound, fmt.Sprintf("Secret %s/%s", namespace, name))
	}
	return s, nil
}

func (r Resolver) secretKey(ctx context.Context, namespace, name, key string) ([]byte, error) {
	s, err := r.secret(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	v := s.Data[key]
	if len(v) == 0 {
		return nil, errMissingKey(namespace, name, key)
	}
	return v, nil
}

// notFound gives a missing object its reason and keeps other read errors as they are.
func notFound(err error, reason, what string) error {
	if apierrors.IsNotFound(err) {
		return status.WithReason(reason, fmt.Errorf("%s does not exist", what))
	}
	return fmt.Errorf("read %s: %w", what, err)
}

func portOf(svc *corev1.Service, name string, def int32) int32 {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	return def
}
