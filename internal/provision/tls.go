package provision

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ErrNoCertificate says a CA bundle holds no PEM certificate: an empty or
// mistyped Secret key would otherwise turn into "unknown authority" at every
// connection, which points at the server instead of the bundle.
var ErrNoCertificate = errors.New("the CA bundle holds no PEM \"CERTIFICATE\" block")

// CertPool parses caPEM into a pool holding only its certificates.
func CertPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := caPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, ErrNoCertificate
	}
	return pool, nil
}

// TLSConfig returns a client configuration that trusts only caPEM's
// certificates and verifies that the server's certificate names host.
func TLSConfig(caPEM []byte, host string) (*tls.Config, error) {
	pool, err := CertPool(caPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}, nil
}

// TLSFailure reports a failed TLS handshake: a certificate that does not
// verify (unknown authority, wrong name, expired), a TLS alert, or a peer
// that does not speak TLS at all. Such a failure is fixed by configuration
// (the CA, the server's certificate), not by waiting, so it gets its own
// reason instead of "unreachable".
func TLSFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
		alert    tls.AlertError
	)
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &record) || errors.As(err, &alert) ||
		errors.Is(err, ErrNoCertificate) {
		return true
	}
	// pgconn reports a server that answers the SSLRequest with 'N' by text only.
	return err != nil && strings.Contains(err.Error(), "server refused TLS connection")
}
