package image

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"fmt"
	"strings"
)

// program is what the image needs to know about one binary it carries.
type program struct {
	// arch is the GOARCH the binary runs on; it becomes the image's platform.
	arch string
	// loadsZones is set when the program looks time zones up by name
	// (time.LoadLocation) without embedding them (time/tzdata), so the image
	// needs /usr/share/zoneinfo.
	loadsZones bool
}

var elfArch = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_AARCH64: "arm64",
	elf.EM_386:     "386",
	elf.EM_ARM:     "arm",
	elf.EM_PPC64:   "ppc64le",
	elf.EM_S390:    "s390x",
	elf.EM_RISCV:   "riscv64",
}

// inspectProgram checks that data is a statically linked Linux Go program (the
// image has no C library and no dynamic loader) and reads its architecture
// and whether it needs the time zone database.
func inspectProgram(name string, data []byte) (program, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return program{}, fmt.Errorf("%s is not a Linux executable (ELF): %w", name, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return program{}, fmt.Errorf("%s is dynamically linked: the image has no C library; build it with CGO_ENABLED=0 (as `make build` does)", name)
		}
	}
	arch, ok := elfArch[f.Machine]
	if !ok {
		return program{}, fmt.Errorf("%s is built for %s, a machine the image target does not know", name, f.Machine)
	}
	if f.Machine == elf.EM_PPC64 && f.ByteOrder.String() != "LittleEndian" {
		arch = "ppc64"
	}
	// The function table survives `-ldflags=-s -w` (the runtime needs it for
	// stack traces), so it tells which functions were linked in.
	pcln, text := f.Section(".gopclntab"), f.Section(".text")
	if pcln == nil || text == nil {
		return program{}, fmt.Errorf("%s is not a Go program (no .gopclntab section)", name)
	}
	data, err = pcln.Data()
	if err != nil {
		return program{}, fmt.Errorf("%s: read .gopclntab: %w", name, err)
	}
	table, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return program{}, fmt.Errorf("%s: read the Go function table: %w", name, err)
	}
	embedded := false
	for _, fn := range table.Funcs {
		if strings.HasPrefix(fn.Name, "time/tzdata.") {
			embedded = true
		}
	}
	return program{arch: arch, loadsZones: table.LookupFunc("time.LoadLocation") != nil && !embedded}, nil
}
