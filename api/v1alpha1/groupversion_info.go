// Package v1alpha1 is the chat.parley.io/v1alpha1 API: the ChatCluster kind, a
// chat service a platform team describes in one short object. Validation lives
// in the CRD itself (OpenAPI bounds and CEL rules whose messages name the field),
// so a bad spec is refused by the API server before the operator sees it.
// +kubebuilder:object:generate=true
// +groupName=chat.parley.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the ChatCluster API.
	GroupVersion = schema.GroupVersion{Group: "chat.parley.io", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
