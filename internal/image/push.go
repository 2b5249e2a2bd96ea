package image

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push uploads the image of an archive written by WriteArchive to ref, with
// credentials from the Docker config keychain ($DOCKER_CONFIG or
// ~/.docker/config.json, including credential helpers), then asks the
// registry for ref and checks it serves the same digest. More options (e.g.
// remote.WithTransport) follow the keychain and may override it.
func Push(ctx context.Context, archive string, ref name.Reference, opts ...remote.Option) (v1.Hash, error) {
	a, err := OpenArchive(archive)
	if err != nil {
		return v1.Hash{}, err
	}
	defer a.Close()
	want, err := a.Image.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	opts = append([]remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithUserAgent("parley-make-image"),
	}, opts...)
	if err := remote.Write(ref, a.Image, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s to %s: %w", archive, ref, err)
	}
	desc, err := remote.Head(ref, opts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pushed %s, but reading it back failed: %w", ref, err)
	}
	if desc.Digest != want {
		return v1.Hash{}, fmt.Errorf("pushed %s, but the registry serves %s for it, not %s", ref, desc.Digest, want)
	}
	return want, nil
}
