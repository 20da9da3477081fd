"""A small, defensive ELF reader: what ``joyride run`` needs to know about a program.

The preload shim serves a program only if the dynamic loader loads it and the program
makes its socket calls through libc. The ELF headers tell most of that:

- no ``PT_INTERP`` program header: the program is statically linked (or a static PIE);
  the kernel starts it without the dynamic loader, so ``LD_PRELOAD`` is never read;
- a Go program (the gc toolchain's ``.go.buildinfo`` or ``.note.go.buildid`` section, or
  its ``Go`` build-id note, which stays in a ``PT_NOTE`` segment when the section
  headers are stripped): Go's runtime makes its system calls itself, without libc, even
  when it is dynamically linked (cgo), so the shim never sees ``listen`` or ``accept``.
  (gccgo programs call libc and carry neither marker: gccgo names its section
  ``.go.buildid``.)
- the class (32/64-bit), byte order and machine, to compare with the shim's own.

Both classes and both byte orders are read. Anything this reader cannot make sense of
(not ELF, truncated, a field out of bounds, a header the kernel would refuse to
``execve``) yields ``None`` ("unknown"): never an exception. A damaged section header
table only hides the Go sections (the program headers still count).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Final

ELF_MAGIC: Final = b"\x7fELF"
ELFCLASS32: Final = 1
ELFCLASS64: Final = 2
ELFDATA2LSB: Final = 1
ELFDATA2MSB: Final = 2
ET_EXEC: Final = 2
ET_DYN: Final = 3
PT_INTERP: Final = 3
PT_NOTE: Final = 4
SHT_NOTE: Final = 7
SHN_XINDEX: Final = 0xFFFF
NT_GO_BUILDID: Final = 4  # the Go linker's build-id note: name "Go", type 4
GO_SECTIONS: Final = frozenset({".go.buildinfo", ".note.go.buildid"})

# The kernel's own limits for execve (fs/binfmt_elf.c): the program header table is at
# most 64 KiB, and PT_INTERP holds 2..PATH_MAX bytes ending in a NUL.
MAX_PHDR_TABLE: Final = 65536
PATH_MAX: Final = 4096
MAX_SECTIONS: Final = 1 << 20  # far beyond any real program; bounds the work on junk
MAX_NOTES_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class ElfInfo:
    """An executable ELF file (``ET_EXEC`` or ``ET_DYN``), as far as ``joyride run``
    cares."""

    bits: int  # 32 or 64
    little_endian: bool
    machine: int  # e_machine (EM_X86_64 = 62, EM_386 = 3, EM_AARCH64 = 183, ...)
    type: int  # ET_EXEC or ET_DYN
    interpreter: str | None  # PT_INTERP: the dynamic loader, or None (static)
    go: bool  # built by the Go (gc) toolchain

    @property
    def static(self) -> bool:
        return self.interpreter is None


class _Malformed(Exception):
    """A field points outside the file or breaks a rule the kernel enforces."""


class _Reader:
    def __init__(self, data: memoryview, little_endian: bool) -> None:
        self.data = data
        self.order = "<" if little_endian else ">"

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        layout = struct.Struct(self.order + fmt)
        if offset < 0 or offset + layout.size > len(self.data):
            raise _Malformed
        return tuple(int(v) for v in layout.unpack_from(self.data, offset))

    def bytes(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise _Malformed
        return self.data[offset:offset + size].tobytes()


# Field layouts after e_ident, per class: (ELF header, program header, section header).
# ELF header: type, machine, version, entry, phoff, shoff, flags, ehsize, phentsize,
# phnum, shentsize, shnum, shstrndx.
_EHDR: Final = {ELFCLASS32: "HHIIIIIHHHHHH", ELFCLASS64: "HHIQQQIHHHHHH"}
# Program header, reordered below to (type, offset, filesz, align).
_PHDR: Final = {ELFCLASS32: "IIIIIIII", ELFCLASS64: "IIQQQQQQ"}
# Section header: name, type, flags, addr, offset, size, link, info, addralign, entsize.
_SHDR: Final = {ELFCLASS32: "IIIIIIIIII", ELFCLASS64: "IIQQQQIIQQ"}


def parse(data: bytes | bytearray | mmap.mmap) -> ElfInfo | None:
    """The program's ELF facts, or None when it is not an executable ELF file or is
    malformed. Never raises."""
    with memoryview(data) as view:
        try:
            return _parse(view)
        except (_Malformed, struct.error, ValueError, TypeError):
            return None


def read(path: str | os.PathLike[str]) -> ElfInfo | None:
    """:func:`parse` on a file (mapped, not read: Go programs are tens of MB); None when
    it cannot be read or is not an executable ELF file."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != ELF_MAGIC:
                return None
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
                return parse(mapped)
    except (OSError, ValueError):  # unreadable, a directory, a FIFO, empty, ...
        return None


def _parse(data: memoryview) -> ElfInfo | None:
    if len(data) < 16 or data[:4].tobytes() != ELF_MAGIC:
        return None
    elf_class, encoding = data[4], data[5]
    if elf_class not in (ELFCLASS32, ELFCLASS64) or encoding not in (ELFDATA2LSB,
                                                                     ELFDATA2MSB):
        return None
    r = _Reader(data, encoding == ELFDATA2LSB)
    (e_type, machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, shstrndx) = r.unpack(_EHDR[elf_class], 16)
    if e_type not in (ET_EXEC, ET_DYN):
        return None
    # Program headers, checked as the kernel's load_elf_phdrs() does.
    phdr_size = struct.calcsize("<" + _PHDR[elf_class])
    if phentsize != phdr_size or phnum < 1 or phnum * phdr_size > MAX_PHDR_TABLE:
        return None
    interpreter: str | None = None
    go = False
    for i in range(phnum):
        fields = r.unpack(_PHDR[elf_class], phoff + i * phdr_size)
        if elf_class == ELFCLASS64:
            p_type, _pflags, p_offset, _vaddr, _paddr, p_filesz, _memsz, p_align = fields
        else:
            p_type, p_offset, _vaddr, _paddr, p_filesz, _memsz, _pflags, p_align = fields
        if p_type == PT_INTERP and interpreter is None:  # the kernel takes the first
            if not 2 <= p_filesz <= PATH_MAX:
                return None
            raw = r.bytes(p_offset, p_filesz)
            if raw[-1] != 0:
                return None
            interpreter = raw[:-1].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif p_type == PT_NOTE and not go:
            go = _has_go_note(r, p_offset, p_filesz, p_align)
    if not go:
        try:
            go = _go_sections(r, elf_class, shoff, shentsize, shnum, shstrndx)
        except (_Malformed, struct.error, ValueError):
            go = False  # a damaged section table hides only the sections
    return ElfInfo(bits=32 if elf_class == ELFCLASS32 else 64,
                   little_endian=encoding == ELFDATA2LSB, machine=machine, type=e_type,
                   interpreter=interpreter, go=go)


def _go_sections(r: _Reader, elf_class: int, shoff: int, shentsize: int, shnum: int,
                 shstrndx: int) -> bool:
    """A Go section by name, or a Go build-id note in any SHT_NOTE section."""
    shdr_size = struct.calcsize("<" + _SHDR[elf_class])
    if shoff == 0 or shentsize != shdr_size:
        return False
    if shnum == 0 or shstrndx == SHN_XINDEX:  # the real values live in section 0
        _n, _t, _f, _a, _o, size0, link0, _i, _al, _e = r.unpack(_SHDR[elf_class], shoff)
        if shnum == 0:
            shnum = size0
        if shstrndx == SHN_XINDEX:
            shstrndx = link0
    if not 0 < shnum <= MAX_SECTIONS:
        return False
    r.bytes(shoff, shnum * shdr_size)  # the whole table lies within the file
    sections = [r.unpack(_SHDR[elf_class], shoff + i * shdr_size) for i in range(shnum)]
    names: bytes | None = None
    if 0 < shstrndx < shnum:
        _n, _t, _f, _a, str_offset, str_size, _l, _i, _al, _e = sections[shstrndx]
        names = r.bytes(str_offset, str_size)
    for name_offset, sh_type, _f, _a, offset, size, _l, _i, align, _e in sections:
        if names is not None and name_offset < len(names):
            name = names[name_offset:].split(b"\0", 1)[0]
            if name.decode("ascii", "replace") in GO_SECTIONS:
                return True
        if sh_type == SHT_NOTE and _has_go_note(r, offset, size, align):
            return True
    return False


def _has_go_note(r: _Reader, offset: int, size: int, align: int) -> bool:
    """Whether the notes at ``offset`` hold the Go build-id note. Malformed notes end
    the scan (they are not an error)."""
    step = 8 if align == 8 else 4
    end = offset + min(size, MAX_NOTES_BYTES)
    while offset + 12 <= end:
        try:
            namesz, descsz, note_type = r.unpack("III", offset)
            name = r.bytes(offset + 12, namesz)
        except _Malformed:
            return False
        if note_type == NT_GO_BUILDID and name.rstrip(b"\0") == b"Go":
            return True
        offset += 12 + _aligned(namesz, step) + _aligned(descsz, step)
    return False


def _aligned(n: int, step: int) -> int:
    return (n + step - 1) // step * step
