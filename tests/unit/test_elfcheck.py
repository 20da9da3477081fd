"""The ELF reader behind ``joyride run``'s check: synthetic headers of every shape, and
junk, truncated or damaged files, which must yield None ("unknown"), never raise."""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from joyride import elfcheck
from joyride.elfcheck import ET_DYN, ET_EXEC, PT_INTERP, PT_NOTE, SHT_NOTE

PT_LOAD = 1
SHT_PROGBITS = 1
SHT_STRTAB = 3
LOADER = b"/lib64/ld-linux-x86-64.so.2"


def note(name: bytes, note_type: int, desc: bytes, little: bool = True) -> bytes:
    """One ELF note (4-byte alignment, as in both classes' usual notes)."""
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)
    order = "<" if little else ">"
    return (struct.pack(f"{order}III", len(name), len(desc), note_type) + pad(name)
            + pad(desc))


def go_note(little: bool = True) -> bytes:
    """The Go linker's build-id note (name "Go", type 4, the build ID as its desc)."""
    return note(b"Go\0\0", 4, b"hWaWcadMn2J9_wpkJ5HY/vTcxNcS3N94mfbMZZVq_", little)


def gnu_build_id(little: bool = True) -> bytes:
    return note(b"GNU\0", 3, bytes(20), little)


@dataclass
class Elf:
    """A synthetic ELF file: ELF header, program headers, payloads, section headers."""

    bits: int = 64
    little: bool = True
    machine: int = 62
    e_type: int = ET_EXEC
    interp: bytes | None = LOADER + b"\0"
    phdr_notes: bytes | None = None  # a PT_NOTE segment
    sections: list[tuple[str, int, bytes]] = field(default_factory=list)
    section_headers: bool = True
    shnum_in_section0: bool = False  # extended numbering: e_shnum 0, sh_size of entry 0

    def build(self) -> bytes:
        o = "<" if self.little else ">"
        is64 = self.bits == 64
        ehsize, phsize, shsize = (64, 56, 64) if is64 else (52, 32, 40)
        phdrs: list[tuple[int, bytes]] = [(PT_LOAD, b"")]
        if self.interp is not None:
            phdrs.append((PT_INTERP, self.interp))
        if self.phdr_notes is not None:
            phdrs.append((PT_NOTE, self.phdr_notes))
        offset = ehsize + phsize * len(phdrs)
        blobs = bytearray()
        placed: list[tuple[int, int]] = []
        for _, payload in phdrs:
            placed.append((offset + len(blobs), len(payload)))
            blobs += payload
        section_data: list[tuple[int, int]] = []
        for _, _, payload in self.sections:
            section_data.append((offset + len(blobs), len(payload)))
            blobs += payload
        names = bytearray(b"\0")
        name_offsets = []
        for name, _, _ in [*self.sections, (".shstrtab", SHT_STRTAB, b"")]:
            name_offsets.append(len(names))
            names += name.encode() + b"\0"
        strtab_offset = offset + len(blobs)
        blobs += names
        blobs += bytes(-len(blobs) % 8)
        shoff = offset + len(blobs)
        shdrs = bytearray()
        count = len(self.sections) + 2  # the null section, ..., .shstrtab
        entries = [(0, 0, 0, count if self.shnum_in_section0 else 0, 0)]
        for (_, sh_type, _), (off, size), name_off in zip(self.sections, section_data,
                                                          name_offsets, strict=False):
            entries.append((name_off, sh_type, off, size, 4))
        entries.append((name_offsets[-1], SHT_STRTAB, strtab_offset, len(names), 1))
        for name_off, sh_type, off, size, align in entries:
            if is64:
                shdrs += struct.pack(f"{o}IIQQQQIIQQ", name_off, sh_type, 0, 0, off, size,
                                     0, 0, align, 0)
            else:
                shdrs += struct.pack(f"{o}IIIIIIIIII", name_off, sh_type, 0, 0, off, size,
                                     0, 0, align, 0)
        with_sections = self.section_headers
        ident = (elfcheck.ELF_MAGIC + bytes([2 if is64 else 1, 1 if self.little else 2, 1])
                 + bytes(9))
        shnum = 0 if self.shnum_in_section0 else count
        header_fields = (self.e_type, self.machine, 1, 0x401000, ehsize,
                         shoff if with_sections else 0, 0, ehsize, phsize, len(phdrs),
                         shsize, shnum if with_sections else 0,
                         count - 1 if with_sections else 0)
        header = ident + struct.pack(f"{o}HHI{'QQQ' if is64 else 'III'}IHHHHHH",
                                     *header_fields)
        program_headers = bytearray()
        for (p_type, _), (off, size) in zip(phdrs, placed, strict=True):
            if is64:
                program_headers += struct.pack(f"{o}IIQQQQQQ", p_type, 4, off, 0, 0, size,
                                               size, 4)
            else:
                program_headers += struct.pack(f"{o}IIIIIIII", p_type, off, 0, 0, size,
                                               size, 4, 4)
        out = header + bytes(program_headers) + bytes(blobs)
        return out + bytes(shdrs) if with_sections else out


CLASSES = [(64, True), (64, False), (32, True), (32, False)]


@pytest.mark.parametrize(("bits", "little"), CLASSES)
def test_dynamic_and_static_programs(bits: int, little: bool) -> None:
    dynamic = elfcheck.parse(Elf(bits=bits, little=little, machine=3).build())
    assert dynamic is not None
    assert (dynamic.bits, dynamic.little_endian, dynamic.machine) == (bits, little, 3)
    assert dynamic.interpreter == LOADER.decode() and not dynamic.static
    assert not dynamic.go
    static = elfcheck.parse(Elf(bits=bits, little=little, interp=None).build())
    assert static is not None and static.static and not static.go
    pie = elfcheck.parse(Elf(bits=bits, little=little, e_type=ET_DYN, interp=None).build())
    assert pie is not None and pie.static and pie.type == ET_DYN  # a static PIE


@pytest.mark.parametrize(("bits", "little"), CLASSES)
def test_go_programs_by_section_name_and_by_note(bits: int, little: bool) -> None:
    def parsed(**kwargs: Any) -> elfcheck.ElfInfo:
        info = elfcheck.parse(Elf(bits=bits, little=little, **kwargs).build())
        assert info is not None
        return info

    assert parsed(sections=[(".go.buildinfo", SHT_PROGBITS, bytes(32))]).go
    assert parsed(sections=[(".note.go.buildid", SHT_NOTE, go_note(little))]).go
    # Dynamically linked (cgo) Go is Go too: its runtime still skips libc.
    cgo = parsed(sections=[(".text", SHT_PROGBITS, bytes(16)),
                           (".go.buildinfo", SHT_PROGBITS, bytes(32))])
    assert cgo.go and not cgo.static
    # The note in a section of another name, and in a PT_NOTE segment of a program
    # whose section headers were stripped away.
    assert parsed(sections=[(".notes", SHT_NOTE, gnu_build_id(little) + go_note(little))]).go
    stripped = parsed(interp=None, phdr_notes=go_note(little), section_headers=False)
    assert stripped.go and stripped.static
    # Notes and sections that are not Go's.
    assert not parsed(sections=[(".note.gnu.build-id", SHT_NOTE, gnu_build_id(little))]).go
    assert not parsed(phdr_notes=gnu_build_id(little)).go
    assert not parsed(sections=[(".go.buildid", SHT_PROGBITS, bytes(8))]).go  # gccgo
    # Extended section numbering (e_shnum 0, the count in section 0).
    assert parsed(sections=[(".go.buildinfo", SHT_PROGBITS, bytes(8))],
                  shnum_in_section0=True).go


def test_not_executables_and_broken_headers_are_unknown() -> None:
    good = Elf().build()
    assert elfcheck.parse(good) is not None
    assert elfcheck.parse(b"") is None
    assert elfcheck.parse(b"#!/bin/sh\necho hi\n") is None
    assert elfcheck.parse(Elf(e_type=1).build()) is None  # ET_REL: an object file
    assert elfcheck.parse(good[:4] + b"\x03" + good[5:]) is None  # no such class
    assert elfcheck.parse(good[:5] + b"\x00" + good[6:]) is None  # no byte order
    # PT_INTERP the kernel would refuse: no NUL at its end, or too short.
    assert elfcheck.parse(Elf(interp=LOADER).build()) is None
    assert elfcheck.parse(Elf(interp=b"\0").build()) is None
    # A program header size that is not the class's (the kernel refuses it).
    bad_phentsize = bytearray(good)
    struct.pack_into("<H", bad_phentsize, 54, 40)
    assert elfcheck.parse(bytes(bad_phentsize)) is None
    # The program headers cut off: unknown.
    assert elfcheck.parse(good[:64 + 56]) is None


def test_a_damaged_section_table_only_hides_the_sections() -> None:
    go = Elf(sections=[(".go.buildinfo", SHT_PROGBITS, bytes(32))]).build()
    info = elfcheck.parse(go[:-10])  # the section header table cut short
    assert info is not None and info.interpreter == LOADER.decode() and not info.go
    bad_shoff = bytearray(go)
    struct.pack_into("<Q", bad_shoff, 40, len(go) * 4)
    info = elfcheck.parse(bytes(bad_shoff))
    assert info is not None and not info.go


def test_read_from_files(tmp_path: Path) -> None:
    python = elfcheck.read(Path(sys.executable).resolve())
    assert python is not None and not python.go
    static = tmp_path / "static"
    static.write_bytes(Elf(interp=None).build())
    info = elfcheck.read(static)
    assert info is not None and info.static
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert elfcheck.read(empty) is None
    assert elfcheck.read(tmp_path) is None  # a directory
    assert elfcheck.read(tmp_path / "missing") is None
    text = tmp_path / "script"
    text.write_text("#!/bin/sh\n")
    assert elfcheck.read(text) is None


def _never_raises(data: bytes) -> None:
    info = elfcheck.parse(data)
    assert info is None or isinstance(info, elfcheck.ElfInfo)


FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _never_raises(data)


@FUZZ
@given(st.sampled_from([1, 2, 0, 7]), st.sampled_from([1, 2, 0]),
       st.binary(min_size=0, max_size=400))
def test_elf_looking_junk_never_raises(elf_class: int, encoding: int, rest: bytes) -> None:
    _never_raises(elfcheck.ELF_MAGIC + bytes([elf_class, encoding]) + rest)


SAMPLES = [
    Elf(bits=b, little=le, interp=interp, phdr_notes=notes,
        sections=[(".note.go.buildid", SHT_NOTE, go_note(le)),
                  (".go.buildinfo", SHT_PROGBITS, bytes(16))],
        shnum_in_section0=ext).build()
    for b, le in CLASSES for interp in (None, LOADER + b"\0") for notes in (None, go_note(le))
    for ext in (False, True)
]


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_truncated_and_damaged_programs_never_raise(sample: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(sample)))
    _never_raises(sample[:cut])
    damaged = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    _never_raises(bytes(damaged))
    # Large values in every word-sized field of the headers.
    at = data.draw(st.integers(16, 120))
    huge = bytearray(sample)
    struct.pack_into("<I", huge, at, data.draw(st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF,
                                                                0x10000, 0xFFFF])))
    _never_raises(bytes(huge))


def test_every_truncation_of_every_sample_never_raises() -> None:
    for sample in SAMPLES[:4]:
        for cut in range(len(sample) + 1):
            _never_raises(sample[:cut])
