package image

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyBinaries copies the stubs into a fresh directory with the given file
// time, so two builds share no path and no timestamp.
func copyBinaries(t *testing.T, bins map[string]string, mtime time.Time) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for name, p := range bins {
		dst := filepath.Join(dir, name)
		if err := os.WriteFile(dst, readAll(t, p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(dst, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		out[name] = dst
	}
	return out
}

func archiveBytes(t *testing.T, res *Result, ref string, mtime time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteArchive(&buf, res.Image, res.Platform, ref, mtime); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSameInputsGiveTheSameImage(t *testing.T) {
	bins := stubBinaries(t)
	a := buildStubImage(t, copyBinaries(t, bins, time.Unix(1, 0)))
	b := buildStubImage(t, copyBinaries(t, bins, time.Now()))
	da, err := a.Image.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Image.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("two builds from the same inputs differ: %s and %s", da, db)
	}
	const ref = "ghcr.io/parley-chat/parley:" + testVersion
	if !bytes.Equal(archiveBytes(t, a, ref, testCreated), archiveBytes(t, b, ref, testCreated)) {
		t.Error("the archives of two identical builds differ")
	}

	// A new chat server changes only the programs layer: the base layer's
	// digest stays, so a registry that has it is not sent it again.
	changed := copyBinaries(t, bins, time.Now())
	changed["chatserver"] = stub(t, "zones-embedded")
	c := buildStubImage(t, changed)
	dc, err := c.Image.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if dc == da {
		t.Error("a different chat server binary gave the same digest")
	}
	la, _ := a.Image.Layers()
	lc, _ := c.Image.Layers()
	baseA, _ := la[0].Digest()
	baseC, _ := lc[0].Digest()
	progA, _ := la[1].Digest()
	progC, _ := lc[1].Digest()
	if baseA != baseC || progA == progC {
		t.Errorf("base layers %s / %s should match and program layers %s / %s differ", baseA, baseC, progA, progC)
	}

	// The creation time is an input too (SOURCE_DATE_EPOCH in the Makefile).
	later, err := Build(Parley, Options{Binaries: bins, Version: testVersion, Commit: testCommit, Created: testCreated.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if dl, _ := later.Image.Digest(); dl == da {
		t.Error("another creation time gave the same digest")
	}
}

func TestBuildRejectsProgramsTheImageCannotRun(t *testing.T) {
	bins := stubBinaries(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// An arm64 manager beside an amd64 chat server: the stub with its ELF
	// machine field (bytes 18-19) rewritten, which is all the check reads.
	arm := readAll(t, bins["manager"])
	binary.LittleEndian.PutUint16(arm[18:], 183) // EM_AARCH64
	armPath := filepath.Join(dir, "manager-arm64")
	if err := os.WriteFile(armPath, arm, 0o755); err != nil {
		t.Fatal(err)
	}
	with := func(name, p string) map[string]string {
		m := map[string]string{"manager": bins["manager"], "chatserver": bins["chatserver"]}
		if p == "" {
			delete(m, name)
		} else {
			m[name] = p
		}
		return m
	}
	dynamic := "/bin/true" // Debian's coreutils: dynamically linked against libc
	for _, tc := range []struct {
		name     string
		binaries map[string]string
		want     string
	}{
		{"missing from the options", with("chatserver", ""), "no binary given for chatserver (/chatserver in the image): run `make build`"},
		{"missing on disk", with("manager", filepath.Join(dir, "nope")), "program manager: open " + filepath.Join(dir, "nope")},
		{"not an executable", with("manager", script), script + " is not a Linux executable"},
		{"dynamically linked", with("chatserver", dynamic), dynamic + " is dynamically linked: the image has no C library; build it with CGO_ENABLED=0"},
		{"two architectures", with("manager", armPath), "is built for amd64 but " + armPath + " for arm64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(Parley, Options{Binaries: tc.binaries})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestZoneInfoOnlyWhenAProgramLoadsZonesByName(t *testing.T) {
	for _, tc := range []struct {
		chatserver string
		want       bool
	}{
		{"chatserver", false},
		{"zones", true},
		// A program embedding time/tzdata needs no files.
		{"zones-embedded", false},
	} {
		t.Run(tc.chatserver, func(t *testing.T) {
			res := buildStubImage(t, map[string]string{"manager": stub(t, "manager"), "chatserver": stub(t, tc.chatserver)})
			if res.ZoneInfo != tc.want {
				t.Fatalf("ZoneInfo = %v, want %v", res.ZoneInfo, tc.want)
			}
			fs := flatten(t, res.Image)
			berlin, has := fs["/usr/share/zoneinfo/Europe/Berlin"]
			_, record := fs["/var/lib/dpkg/status.d/tzdata"]
			cf, err := res.Image.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			labelled := strings.Contains(cf.Config.Labels[BasePackagesLabel], "tzdata=")
			if has != tc.want || record != tc.want || labelled != tc.want {
				t.Fatalf("zoneinfo file %v, status.d record %v, label %v; want all %v", has, record, labelled, tc.want)
			}
			if !tc.want {
				return
			}
			// The zone must be usable, following symlinks within the database.
			for berlin.hdr.Typeflag == '2' {
				berlin = fs[filepath.Join("/usr/share/zoneinfo/Europe", berlin.hdr.Linkname)]
			}
			loc, err := time.LoadLocationFromTZData("Europe/Berlin", berlin.data)
			if err != nil {
				t.Fatalf("Europe/Berlin in the image: %v", err)
			}
			if _, off := time.Date(2024, 7, 1, 12, 0, 0, 0, loc).Zone(); off != 2*3600 {
				t.Errorf("Europe/Berlin in July is UTC%+d, want +2h", off/3600)
			}
		})
	}
}

func TestZeroCreationTimeIsTheEpoch(t *testing.T) {
	res, err := Build(Parley, Options{Binaries: stubBinaries(t)})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := res.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("created %s, want the Unix epoch", cf.Created.Time)
	}
	if got := cf.Config.Labels["org.opencontainers.image.version"] + " " + cf.Config.Labels["org.opencontainers.image.revision"]; got != "dev unknown" {
		t.Errorf("version and revision labels without options = %q, want the Dockerfile's defaults \"dev unknown\"", got)
	}
	if err := WriteArchive(io.Discard, res.Image, res.Platform, "parley:dev", time.Time{}); err != nil {
		t.Error(err)
	}
}
