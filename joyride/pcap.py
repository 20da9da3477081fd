"""pcap files (the classic format ``tcpdump -r`` and Wireshark read) and tcpdump's filter
language, compiled by libpcap (Debian's ``libpcap0.8``, loaded with ctypes: no build
dependency) into the classic BPF program ``joyride capture``'s tap runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from collections.abc import Iterator
from typing import Final, NamedTuple

from joyride.errors import JoyrideError

LINKTYPE_ETHERNET: Final = 1
MAGIC_USEC: Final = 0xA1B2C3D4
FILE_HEADER: Final = struct.Struct("=IHHiIII")  # host order, as the tap writes records
RECORD_HEADER: Final = struct.Struct("=IIII")  # seconds, microseconds, caplen, len
DEFAULT_SNAPLEN: Final = 262144  # tcpdump's
_NETMASK_UNKNOWN: Final = 0xFFFFFFFF

Insn = tuple[int, int, int, int]


class Record(NamedTuple):
    seconds: int
    micros: int
    length: int  # on the wire
    data: bytes  # the first caplen bytes


def file_header(snaplen: int, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    return FILE_HEADER.pack(MAGIC_USEC, 2, 4, 0, 0, snaplen, linktype)


def records(data: bytes) -> Iterator[Record]:
    """The records of a pcap file written on this host (``file_header`` + records)."""
    pos = FILE_HEADER.size
    while pos + RECORD_HEADER.size <= len(data):
        sec, usec, caplen, length = RECORD_HEADER.unpack_from(data, pos)
        pos += RECORD_HEADER.size
        yield Record(sec, usec, length, data[pos:pos + caplen])
        pos += caplen


class FilterError(JoyrideError):
    exit_code = 2


class _Insn(ctypes.Structure):
    _fields_ = (("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint))


class _Program(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn)))


def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise FilterError("a capture filter needs libpcap (Debian: apt-get install "
                          "libpcap0.8)") from exc
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
    lib.pcap_compile.argtypes = (ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_uint)
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
    lib.pcap_freecode.argtypes = (ctypes.POINTER(_Program),)
    lib.pcap_close.argtypes = (ctypes.c_void_p,)
    lib.bpf_filter.restype = ctypes.c_uint
    lib.bpf_filter.argtypes = (ctypes.POINTER(_Insn), ctypes.c_char_p, ctypes.c_uint,
                               ctypes.c_uint)
    return lib


def compile_filter(expression: str, snaplen: int = DEFAULT_SNAPLEN) -> list[Insn]:
    """``expression`` (tcpdump's language, pcap-filter(7)) for Ethernet frames."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(LINKTYPE_ETHERNET, snaplen)
    if not handle:
        raise FilterError("libpcap: pcap_open_dead failed")
    try:
        prog = _Program()
        if lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), 1,
                            _NETMASK_UNKNOWN) != 0:
            err = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
            raise FilterError(f"filter {expression!r}: {err}")
        try:
            return [(i.code, i.jt, i.jf, i.k) for i in prog.bf_insns[:prog.bf_len]]
        finally:
            lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)


def libpcap_verdict(program: list[Insn], frame: bytes) -> int:
    """libpcap's own ``bpf_filter`` on ``frame`` (tests hold the tap to it)."""
    lib = _libpcap()
    insns = (_Insn * len(program))(*(_Insn(*i) for i in program))
    return int(lib.bpf_filter(insns, frame, len(frame), len(frame)))
