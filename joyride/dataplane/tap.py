"""The capture tap's Python face (``capture.h``): a bounded ring of pcap records that
the C data plane fills with the frames it receives and sends (``DataPlane.capture``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from joyride.dataplane.plane import _cast, ffi, lib

RING_BYTES: Final = 8 << 20  # a burst the service loop has not drained yet
READ_CHUNK: Final = 1 << 20

Insn = tuple[int, int, int, int]  # code, jt, jf, k (struct sock_filter / bpf_insn)


class Tap:
    """One capture: its ring, snap length and filter (None: every frame)."""

    def __init__(self, *, snaplen: int, program: Sequence[Insn] | None = None,
                 ring_bytes: int = RING_BYTES) -> None:
        prog = _program(program)
        ptr = lib.cap_new(ring_bytes, snaplen, prog if prog is not None else ffi.NULL,
                          len(program) if program else 0)
        if ptr == ffi.NULL:
            raise ValueError("capture: invalid filter program or out of memory")
        self.ptr: Any = ffi.gc(ptr, lib.cap_free)
        self.snaplen = snaplen
        self._out = ffi.new("uint8_t[]", READ_CHUNK)
        self._zero = ffi.new("uint64_t[1]")

    def read(self) -> bytes:
        """Whole pcap records, oldest first (empty: none waiting)."""
        n = int(lib.cap_read(self.ptr, self._out, READ_CHUNK))
        return bytes(ffi.buffer(self._out, n))

    def offer(self, base: Any, offsets: Any, lengths: Any, n: int) -> None:
        """Frames in one region (a received batch, the fast path's transmit batch): frame
        i at ``base + offsets[i]``. The Python engine's frames, when no C data plane
        carries them (``JOYRIDE_DATAPLANE=python``)."""
        if n:
            lib.cap_frames(self.ptr, _cast(base, "uint8_t *"), _cast(offsets, "uint64_t *"),
                           _cast(lengths, "uint32_t *"), n)

    def offer_frames(self, frames: Sequence[Any]) -> None:
        """Frames each in its own buffer (the engine's ``transmit``)."""
        for frame in frames:
            size = len(frame)
            lib.cap_frames(self.ptr, ffi.from_buffer(frame), self._zero, [size], 1)

    @property
    def pending(self) -> int:
        return int(lib.cap_pending(self.ptr))

    def stats(self) -> dict[str, int]:
        st = lib.cap_stats(self.ptr)
        return {name: int(getattr(st, name)) for name, _ in ffi.typeof("struct cap_stats").fields}


class Taps:
    """One capture over several data-plane workers (``workers.Workers.capture``): a tap
    for each, since a tap's ring has one producer, read as one stream of records (each
    worker's in its order; pcap readers take records out of time order)."""

    def __init__(self, copies: int, *, snaplen: int, program: Sequence[Insn] | None = None,
                 ring_bytes: int = RING_BYTES) -> None:
        self.members = [Tap(snaplen=snaplen, program=program, ring_bytes=ring_bytes)
                        for _ in range(copies)]
        self.snaplen = snaplen

    def read(self) -> bytes:
        return b"".join(tap.read() for tap in self.members)

    @property
    def pending(self) -> int:
        return sum(tap.pending for tap in self.members)

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for tap in self.members:
            for name, value in tap.stats().items():
                total[name] = total.get(name, 0) + value
        return total


def validate(program: Sequence[Insn]) -> bool:
    prog = _program(program)
    return prog is not None and int(lib.cap_validate(prog, len(program))) == 0


def run_filter(program: Sequence[Insn], frame: bytes) -> int:
    """The program's verdict on ``frame`` (bytes kept, 0: rejected), as the tap runs it."""
    prog = _program(program)
    assert prog is not None
    return int(lib.cap_run_filter(prog, len(program), frame, len(frame)))


def _program(program: Sequence[Insn] | None) -> Any:
    if not program:
        return None
    prog = ffi.new("struct cap_insn[]", len(program))
    for i, (code, jt, jf, k) in enumerate(program):
        prog[i].code, prog[i].jt, prog[i].jf, prog[i].k = code, jt, jf, k
    return prog
