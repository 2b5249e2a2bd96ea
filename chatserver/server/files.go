package server

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"
)

// keyFiles holds the keys in a list of small secret files, current first,
// re-read when a file's modification time changes (checked at most once a
// second), so a rotated Secret applies without a restart: during a rotation
// both the new and the previous key are accepted, and the previous one goes
// when its file is emptied or removed.
//
// The first file must be readable at start. Later files may be missing or
// empty: they hold no key. A file that exists but cannot be read keeps its
// last good value, and so does a missing first file, so a half-updated
// Secret volume never locks every caller out.
type keyFiles struct {
	paths []string

	mu      sync.Mutex
	checked time.Time
	mods    []time.Time // zero: missing
	values  []string    // trimmed; "" holds no key
	keys    []string    // the non-empty values, current first
}

func newKeyFiles(paths []string) (*keyFiles, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("no key files")
	}
	f := &keyFiles{paths: paths, mods: make([]time.Time, len(paths)), values: make([]string, len(paths))}
	if _, err := os.Stat(paths[0]); err != nil {
		return nil, err
	}
	for i := range paths {
		if err := f.read(i); err != nil && i == 0 {
			return nil, err
		}
	}
	f.checked = time.Now()
	f.collect()
	return f, nil
}

// read re-reads file i; a missing file beyond the first holds no key.
func (f *keyFiles) read(i int) error {
	st, err := os.Stat(f.paths[i])
	if errors.Is(err, fs.ErrNotExist) && i > 0 {
		f.mods[i], f.values[i] = time.Time{}, ""
		return nil
	}
	if err != nil {
		return err
	}
	data, err := os.ReadFile(f.paths[i])
	if err != nil {
		return err
	}
	f.mods[i], f.values[i] = st.ModTime(), string(bytes.TrimSpace(data))
	return nil
}

func (f *keyFiles) collect() {
	f.keys = f.keys[:0]
	for _, v := range f.values {
		if v != "" {
			f.keys = append(f.keys, v)
		}
	}
}

// Keys returns the accepted keys, current first; none disables what they guard.
// The slice is the caller's.
func (f *keyFiles) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= time.Second {
		f.checked = time.Now()
		changed := false
		for i, p := range f.paths {
			var mod time.Time
			if st, err := os.Stat(p); err == nil {
				mod = st.ModTime()
			}
			if !mod.Equal(f.mods[i]) && f.read(i) == nil {
				changed = true
			}
		}
		if changed {
			f.collect()
		}
	}
	return slices.Clone(f.keys)
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
