package parleycli

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/parley-chat/parley/internal/keys"
	"github.com/parley-chat/parley/internal/naming"
)

// chatClusters is the ChatCluster resource. It is read as unstructured: the
// CLI needs three fields and must keep working across API additions.
var chatClusters = schema.GroupVersionResource{Group: "chat.parley.io", Version: "v1alpha1", Resource: "chatclusters"}

// ClusterKey is what minting a token for a ChatCluster needs.
type ClusterKey struct {
	Key              []byte
	Audience, Issuer string
	Namespace        string
	Secret           string
	// Warnings are things the person should know (the ChatCluster could not be read).
	Warnings []string
}

// clusterKey reads the ChatCluster (for its audience, issuer and Secret name)
// and the current key of its JWT Secret, with the kubeconfig's credentials.
// Reading the ChatCluster is best effort: someone allowed to read only the
// Secret still gets a token, with a warning.
func (k *kubeFlags) clusterKey(ctx context.Context, env Env) (*ClusterKey, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	} else if v := env.Getenv("KUBECONFIG"); v != "" {
		rules.Precedence = filepath.SplitList(v)
	} else {
		rules.Precedence = []string{clientcmd.RecommendedHomeFile}
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	if k.namespace != "" {
		overrides.Context.Namespace = k.namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig namespace: %w", err)
	}
	cfg.UserAgent = "parley-cli"
	out := &ClusterKey{Namespace: ns, Secret: naming.JWTSecretName(k.cluster)}

	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cluster, err := dyn.Resource(chatClusters).Namespace(ns).Get(ctx, k.cluster, metav1.GetOptions{})
	switch {
	case err == nil:
		out.Audience, _, _ = unstructured.NestedString(cluster.Object, "spec", "auth", "audience")
		out.Issuer, _, _ = unstructured.NestedString(cluster.Object, "spec", "auth", "issuer")
		if name, _, _ := unstructured.NestedString(cluster.Object, "status", "secrets", "jwt"); name != "" {
			out.Secret = name
		}
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("ChatCluster %s/%s not found", ns, k.cluster)
	default:
		out.Warnings = append(out.Warnings, fmt.Sprintf("could not read ChatCluster %s/%s (%v): using Secret %s, no audience or issuer unless given",
			ns, k.cluster, reason(err), out.Secret))
	}

	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	secret, err := core.Secrets(ns).Get(ctx, out.Secret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %s", ns, out.Secret, reason(err))
	}
	out.Key = bytes.TrimSpace(secret.Data[keys.JWT.CurrentKey])
	if len(out.Key) == 0 {
		return nil, fmt.Errorf("Secret %s/%s has no %q key: the ChatCluster may verify tokens with JWKS only, or the operator has not generated it yet",
			ns, out.Secret, keys.JWT.CurrentKey)
	}
	return out, nil
}

// reason explains an API error briefly.
func reason(err error) string {
	switch {
	case apierrors.IsNotFound(err):
		return "not found"
	case apierrors.IsForbidden(err):
		return "forbidden: your kubeconfig user may not read it: " + err.Error()
	case apierrors.IsUnauthorized(err):
		return "unauthorized: the kubeconfig's credentials were refused"
	}
	return err.Error()
}
