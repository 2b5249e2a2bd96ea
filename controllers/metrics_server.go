package controllers

import (
	"crypto/tls"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// The metrics endpoint authenticates its callers (TokenReview) and authorizes
// them (SubjectAccessReview for "get" on the non-resource URL /metrics)
// through the API server, as kubebuilder's scaffold does.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// DefaultMetricsBindAddress is where the operator serves its metrics: HTTPS
// on 8443, the port kubebuilder's scaffold uses.
const DefaultMetricsBindAddress = ":8443"

// MetricsServing says how the operator serves its own metrics.
type MetricsServing struct {
	// BindAddress is host:port, or "0" for no metrics endpoint.
	BindAddress string
	// Secure serves HTTPS and lets in only callers the API server
	// authenticates and authorizes for GET /metrics. Off: plain HTTP for
	// anyone who reaches the port (for local development only).
	Secure bool
	// CertPath is a directory holding the serving certificate (CertName,
	// KeyName; e.g. a cert-manager Secret mounted there); it is reloaded when
	// it changes. Empty or absent files: a self-signed certificate made at
	// start, which encrypts the scrape but proves nothing to the scraper.
	CertPath, CertName, KeyName string
	// EnableHTTP2 is off by default: HTTP/2 on this endpoint would expose the
	// operator to the HTTP/2 Rapid Reset and Stream Cancellation attacks
	// (CVE-2023-44487, CVE-2023-39325) for no gain.
	EnableHTTP2 bool
}

// Options turns the settings into controller-runtime's metrics server options.
func (m MetricsServing) Options() metricsserver.Options {
	o := metricsserver.Options{BindAddress: m.BindAddress, SecureServing: m.Secure}
	if !m.Secure {
		return o
	}
	o.FilterProvider = filters.WithAuthenticationAndAuthorization
	if !m.EnableHTTP2 {
		o.TLSOpts = append(o.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	if m.CertPath != "" {
		o.CertDir = filepath.Clean(m.CertPath)
		o.CertName, o.KeyName = m.CertName, m.KeyName
	}
	return o
}
