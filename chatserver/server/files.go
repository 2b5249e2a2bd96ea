package server

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// watchedFile re-reads a small secret file when its modification time
// changes, checked at most once a second, so rotated Secrets apply without a
// restart. A failed re-read keeps the last good value.
type watchedFile struct {
	path string

	mu      sync.Mutex
	checked time.Time
	mod     time.Time
	value   string
}

func newWatchedFile(path string) (*watchedFile, error) {
	f := &watchedFile{path: path}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f.mod, f.value, f.checked = st.ModTime(), string(bytes.TrimSpace(data)), time.Now()
	return f, nil
}

// Value returns the file's current trimmed content.
func (f *watchedFile) Value() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= time.Second {
		f.checked = time.Now()
		if st, err := os.Stat(f.path); err == nil && !st.ModTime().Equal(f.mod) {
			if data, err := os.ReadFile(f.path); err == nil {
				f.mod, f.value = st.ModTime(), string(bytes.TrimSpace(data))
			}
		}
	}
	return f.value
}

// certReloader serves a TLS certificate and reloads it when the cert or key
// file changes (checked at most once a second, on handshakes).
type certReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	checked time.Time
	mods    [2]time.Time
	cert    *tls.Certificate
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) modTimes() [2]time.Time {
	var m [2]time.Time
	for i, p := range []string{r.certFile, r.keyFile} {
		if st, err := os.Stat(p); err == nil {
			m[i] = st.ModTime()
		}
	}
	return m
}

func (r *certReloader) load() error {
	mods := r.modTimes()
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate: %w", err)
	}
	r.cert, r.mods = &cert, mods
	return nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= time.Second {
		r.checked = time.Now()
		if r.modTimes() != r.mods {
			// A half-written pair fails to load: keep serving the old one.
			_ = r.load()
		}
	}
	return r.cert, nil
}
