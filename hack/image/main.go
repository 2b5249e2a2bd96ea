// Command image builds Parley's OCI image from bin/ without a container engine
// and pushes it (`make image`, `make image-push`); see docs/image.md.
//
//	go run ./hack/image build -bin bin -version v1 -commit abc -image ghcr.io/parley-chat/parley:v1 -out bin/image/parley-v1.oci.tar
//	go run ./hack/image push -archive bin/image/parley-v1.oci.tar -image registry.example/parley:v1
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/parley-chat/parley/internal/image"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: image build|push [flags] (-h for the flags)"))
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = build(os.Args[2:])
	case "push":
		err = push(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want build or push", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}

func build(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	bin := fs.String("bin", "bin", "directory holding the programs (make build's output)")
	version := fs.String("version", "dev", "version label (the Dockerfile's VERSION)")
	commit := fs.String("commit", "unknown", "revision label (the Dockerfile's COMMIT)")
	ref := fs.String("image", "ghcr.io/parley-chat/parley:dev", "the name the archive gives the image")
	out := fs.String("out", "", "archive to write (OCI image layout tar)")
	epoch := fs.Int64("source-date-epoch", 0, "creation time, seconds since 1970 (reproducible builds: the same input gives the same digest)")
	fs.Parse(args)
	if *out == "" {
		return fmt.Errorf("build: -out is required")
	}
	binaries := map[string]string{}
	for _, p := range image.Parley.Programs {
		binaries[p.Name] = filepath.Join(*bin, p.Name)
	}
	created := time.Unix(*epoch, 0)
	res, err := image.Build(image.Parley, image.Options{Binaries: binaries, Version: *version, Commit: *commit, Created: created})
	if err != nil {
		return err
	}
	if err := image.WriteArchiveFile(*out, res.Image, res.Platform, *ref, created); err != nil {
		return err
	}
	digest, err := res.Image.Digest()
	if err != nil {
		return err
	}
	fi, err := os.Stat(*out)
	if err != nil {
		return err
	}
	var pkgs []string
	for _, p := range res.Packages {
		pkgs = append(pkgs, p.String())
	}
	fmt.Printf("wrote %s (%.1f MB): %s %s/%s %s\n", *out, float64(fi.Size())/1e6, *ref, res.Platform.OS, res.Platform.Architecture, digest)
	fmt.Printf("base from Debian packages: %s\n", strings.Join(pkgs, " "))
	fmt.Printf("push it: make image-push IMG=<registry>/<repo>:<tag>   (or: skopeo copy oci-archive:%s docker://<ref>)\n", *out)
	return nil
}

func push(args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	archive := fs.String("archive", "", "archive written by `image build`")
	ref := fs.String("image", "", "where to push, e.g. registry.example.com/team/parley:v1")
	insecure := fs.Bool("insecure", false, "allow plain HTTP to the registry (localhost and 127.0.0.1 use it anyway)")
	fs.Parse(args)
	if *archive == "" || *ref == "" {
		return fmt.Errorf("push: -archive and -image are required")
	}
	var opts []name.Option
	if *insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(*ref, opts...)
	if err != nil {
		return fmt.Errorf("push: -image %q: %w", *ref, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	digest, err := image.Push(ctx, *archive, r)
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s: %s@%s\n", *archive, r, digest)
	return nil
}
