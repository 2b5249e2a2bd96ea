package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fileKeys holds HS256 keys read from files (mounted Secrets). Files are
// re-read when their modification time changes, checked at most once per
// reloadEvery, so a rotated Secret takes effect without a restart.
type fileKeys struct {
	paths       []string
	reloadEvery time.Duration

	mu        sync.Mutex
	checked   time.Time
	modTimes  []time.Time
	keys      []jwt.VerificationKey
	lastError error
}

func newFileKeys(paths []string) (*fileKeys, error) {
	k := &fileKeys{paths: paths, reloadEvery: time.Second}
	if err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// load reads every key file. The first (current) key is required; the others
// are optional so a rotation Secret may drop its previous key.
func (k *fileKeys) load() error {
	keys := make([]jwt.VerificationKey, 0, len(k.paths))
	mods := make([]time.Time, len(k.paths))
	for i, p := range k.paths {
		st, err := os.Stat(p)
		if err == nil {
			mods[i] = st.ModTime()
		}
		data, err := os.ReadFile(p)
		if err != nil && i == 0 {
			return fmt.Errorf("read current key %s: %w", p, err)
		}
		data = bytes.TrimSpace(data)
		if len(data) == 0 {
			if i == 0 {
				return fmt.Errorf("current key file %s is empty", p)
			}
			continue
		}
		keys = append(keys, data)
	}
	k.keys, k.modTimes = keys, mods
	return nil
}

func (k *fileKeys) changed() bool {
	for i, p := range k.paths {
		var mt time.Time
		if st, err := os.Stat(p); err == nil {
			mt = st.ModTime()
		}
		if !mt.Equal(k.modTimes[i]) {
			return true
		}
	}
	return false
}

// keySet returns the current keys, reloading them if the files changed. A
// failed reload keeps the previous keys (a half-written Secret must not lock
// everyone out).
func (k *fileKeys) keySet() (jwt.VerificationKeySet, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := time.Now(); now.Sub(k.checked) >= k.reloadEvery {
		k.checked = now
		if k.changed() {
			k.lastError = k.load()
		}
	}
	if len(k.keys) == 0 {
		return jwt.VerificationKeySet{}, errors.New("no HMAC keys")
	}
	return jwt.VerificationKeySet{Keys: append([]jwt.VerificationKey(nil), k.keys...)}, nil
}
