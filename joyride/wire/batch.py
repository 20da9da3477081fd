"""Batch parse and build through the compiled ``joyride._wire``: one C call per batch.

``BatchParser`` validates N frames at once into an array of ``struct wire_parsed``
(64 bytes each, see ``cffi_build/wire.h``); the engine reads the records directly (as
cffi structs, or as the numpy structured array ``records``) and turns only the frames it
needs into Python objects (``frame(i)``) or exceptions (``error(i)``). Frames are given
either as Python buffers (``parse``) or as descriptors into one memory region such as a
UMEM (``parse_descriptors``), which is what an AF_XDP rx ring hands out.

``BatchBuilder`` writes N data/ACK frames for one connection (``FrameTemplate``) with
per-segment seq/ack/window/flags/timestamps/SACK, checksums filled in, into
caller-supplied buffers. The per-segment specs are also a numpy view (``specs``), so a
sender can fill columns without touching cffi per field.

Both check the C record layouts against the numpy dtypes they derive at import, so a
change to ``wire.h`` cannot silently misread memory.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final

import numpy as np

from joyride.wire._native import BUILD_HINT, ffi, lib
from joyride.wire.errors import ParseError, Reason, error_for
from joyride.wire.ethernet import ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetHeader
from joyride.wire.frame import Frame
from joyride.wire.ipv4 import IPPROTO_TCP, IPV4_HLEN, Ipv4Header
from joyride.wire.ipv6 import Ipv6Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import FLAGS_BY_BYTE, TcpSegment
from joyride.wire.tcp_options import NO_OPTIONS, TcpOptions

Buffer = bytes | bytearray | memoryview

MAX_SACK_BLOCKS: Final = 4
MAX_SACK_BLOCKS_WITH_TS: Final = 3  # 12 + 4 + 8 * 3 = 40 option bytes
_U32x2: Final = struct.Struct("!II")


def _require_native() -> None:
    if lib is None:
        raise RuntimeError(f"joyride._wire is not built: {BUILD_HINT}")


_NP_TYPES: Final = {
    "uint8_t": np.uint8,
    "uint16_t": np.uint16,
    "uint32_t": np.uint32,
    "uint64_t": np.uint64,
}


@functools.cache
def struct_dtype(cname: str) -> np.dtype[Any]:
    """A numpy dtype with the exact field offsets and size of a C struct.

    Cached per struct name: the layout is fixed once ``joyride._wire`` is loaded, a
    numpy dtype is immutable, and deriving it costs ~30 us, which every
    ``BatchParser``/``BatchBuilder`` construction would otherwise pay."""
    _require_native()
    ctype = ffi.typeof(cname)
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    for name, field in ctype.fields:
        t = field.type
        if t.kind == "array":
            formats.append((_NP_TYPES[t.item.cname], t.length))
        else:
            formats.append(_NP_TYPES[t.cname])
        names.append(name)
        offsets.append(field.offset)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": ffi.sizeof(ctype)}
    )


def _c_array(ctype: str, values: Any, n: int) -> Any:
    """A cffi view of ``values`` (a cffi array/pointer, or a buffer such as a numpy array
    of exactly that C type) holding at least ``n`` items: the C side reads ``n``."""
    if isinstance(values, ffi.CData):
        arr = values
    else:
        want = np.dtype(_NP_TYPES[ctype])
        if isinstance(values, np.ndarray) and values.dtype != want:
            raise TypeError(f"expected a {want} array, got {values.dtype}")
        arr = ffi.from_buffer(f"{ctype}[]", values)
    if ffi.typeof(arr).kind == "array" and len(arr) < n:
        raise ValueError(f"{len(arr)} {ctype} items given for a batch of {n}")
    return arr


def _as_u64(values: Any, n: int) -> Any:
    return _c_array("uint64_t", values, n)


def _as_u32(values: Any, n: int) -> Any:
    return _c_array("uint32_t", values, n)


class BatchParser:
    """Parses up to ``capacity`` frames per call into reusable C records."""

    def __init__(self, capacity: int = 64, *, verify_checksums: bool = True,
                 ipv6: bool = False) -> None:
        """``ipv6``: read IPv6 frames too (else they are ``eth_not_ipv4``, as any
        other type: what the engine and the data plane still do)."""
        _require_native()
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.verify_checksums = verify_checksums
        self.ipv6 = ipv6
        self.out = ffi.new("struct wire_parsed[]", capacity)
        self.out6 = ffi.new("struct wire_addr6[]", capacity) if ipv6 else ffi.NULL
        self._records_buf = ffi.buffer(self.out)
        self.records: np.ndarray[Any, np.dtype[Any]] = np.frombuffer(
            ffi.buffer(self.out), dtype=struct_dtype("struct wire_parsed")
        )
        self.n = 0  # frames in the last batch
        self.accepted = 0  # of which valid
        self._offs = ffi.new("uint64_t[]", capacity)
        self._lens = ffi.new("uint32_t[]", capacity)
        self._keep: Any = None  # the buffer the last batch's records point into
        self._base: Any = None

    def parse(self, frames: Sequence[Buffer]) -> int:
        """Parse a list of frames (at most ``capacity``); returns how many are valid."""
        n = len(frames)
        if n > self.capacity:
            raise ValueError(f"{n} frames exceed the batch capacity {self.capacity}")
        lens = [len(f) for f in frames]
        blob = b"".join(frames)  # one copy; one pointer for the C side
        self._offs[0:n] = [0, *accumulate(lens[:-1])] if n else []
        self._lens[0:n] = lens
        return self._run(blob, ffi.from_buffer(blob), self._offs, self._lens, n)

    def parse_descriptors(self, base: Any, offsets: Any, lengths: Any, n: int) -> int:
        """Parse ``n`` frames at ``base + offsets[i]``, ``lengths[i]`` bytes each.

        ``base`` is a buffer or a cffi pointer (e.g. the UMEM); ``offsets`` (uint64) and
        ``lengths`` (uint32) are cffi arrays or buffers such as numpy arrays. The caller
        guarantees every frame lies inside ``base``.
        """
        if n > self.capacity:
            raise ValueError(f"{n} frames exceed the batch capacity {self.capacity}")
        ptr = base if isinstance(base, ffi.CData) else ffi.from_buffer(base)
        return self._run(base, ptr, _as_u64(offsets, n), _as_u32(lengths, n), n)

    def _run(self, keep: Any, base: Any, offs: Any, lens: Any, n: int) -> int:
        self.accepted = int(
            lib.wire_parse_batch6(base, offs, lens, n, self.verify_checksums, self.out,
                                  self.out6)
        )
        self.n = n
        self._keep, self._base = keep, base
        self._offsets = offs
        return self.accepted

    # -- reading results ------------------------------------------------------------

    def reason(self, i: int) -> Reason:
        return Reason(self.out[i].reason)

    def error(self, i: int) -> ParseError | None:
        """The exception the Python parser raises for frame ``i``, or None if valid."""
        code = self.out[i].reason
        return None if code == 0 else error_for(Reason(code))

    def frame(self, i: int) -> Frame:
        """Frame ``i`` as Python objects; raises its ``ParseError`` if it was dropped."""
        if not 0 <= i < self.n:
            raise IndexError(f"frame {i} not in the last batch of {self.n}")
        rec = _RECORD.unpack_from(self._records_buf, i * _RECORD.size)
        if rec[_REASON]:
            raise error_for(Reason(rec[_REASON]))
        end = rec[_PAYLOAD_OFF] + rec[_PAYLOAD_LEN]
        addr6 = self.out6[i] if self.ipv6 else None
        return record_to_frame(rec, ffi.buffer(self._base + int(self._offsets[i]), end), addr6)


# struct wire_parsed as one struct.Struct: a single unpack per frame instead of one cffi
# attribute access per field. The layout is checked against the compiled one below.
_RECORD_FIELDS: Final = (
    ("src_ip", "4s"), ("dst_ip", "4s"), ("seq", "I"), ("ack", "I"), ("tsval", "I"),
    ("tsecr", "I"), ("src_port", "H"), ("dst_port", "H"), ("window", "H"), ("urgent", "H"),
    ("payload_off", "H"), ("payload_len", "H"), ("mss", "H"), ("vlan_tci", "H"),
    ("ip_id", "H"), ("reason", "B"), ("flags", "B"), ("dst_mac_off", "B"),
    ("src_mac_off", "B"), ("l2_len", "B"), ("ip_hl", "B"), ("tcp_hl", "B"), ("wscale", "B"),
    ("sack_off", "B"), ("sack_count", "B"), ("ttl", "B"), ("tos", "B"), ("has_vlan", "B"),
    ("has_ts", "B"), ("has_sack", "B"), ("has_mss", "B"), ("has_wscale", "B"),
    ("sack_permitted", "B"), ("plain", "B"), ("df", "B"), ("opts_plain", "B"),
    ("family", "B"),
)  # fmt: skip
_RECORD: Final = struct.Struct("=" + "".join(f for _, f in _RECORD_FIELDS))
_IDX: Final = {name: k for k, (name, _) in enumerate(_RECORD_FIELDS)}
_REASON: Final = _IDX["reason"]
_PAYLOAD_OFF: Final = _IDX["payload_off"]
_PAYLOAD_LEN: Final = _IDX["payload_len"]


def _check_record_layout() -> None:
    if lib is None:
        return
    if _RECORD.size != ffi.sizeof("struct wire_parsed"):
        raise ImportError("struct wire_parsed size differs from joyride.wire.batch._RECORD")
    at = 0
    for name, fmt in _RECORD_FIELDS:
        if ffi.offsetof("struct wire_parsed", name) != at:
            raise ImportError(f"struct wire_parsed.{name} moved: rebuild joyride._wire")
        at += struct.calcsize("=" + fmt)


_check_record_layout()


def record_to_frame(rec: tuple[Any, ...], data: Any, addr6: Any = None) -> Frame:
    """Python objects for one accepted record (a ``_RECORD`` tuple); ``data`` covers the
    frame up to the end of its payload (bytes-like, or a cffi buffer); ``addr6``: the
    record's ``struct wire_addr6`` when it is an IPv6 frame."""
    (
        src_ip, dst_ip, seq, ack, tsval, tsecr, src_port, dst_port, window, urgent,
        payload_off, payload_len, mss, vlan_tci, ip_id, _reason, flags, dst_mac_off,
        src_mac_off, l2_len, ip_hl, tcp_hl, wscale, sack_off, sack_count, ttl, tos,
        has_vlan, has_ts, has_sack, has_mss, has_wscale, sack_permitted, plain, df,
        _opts_plain, family,
    ) = rec  # fmt: skip
    tcp_at = payload_off - tcp_hl
    eth = EthernetHeader(
        data[dst_mac_off : dst_mac_off + 6],
        data[src_mac_off : src_mac_off + 6],
        ETHERTYPE_IPV4 if family == 4 else ETHERTYPE_IPV6,
        vlan_tci if has_vlan else None,
    )
    ip: Ipv4Header | Ipv6Header
    if family == 6:
        label = int.from_bytes(data[l2_len + 1 : l2_len + 4], "big") & 0xFFFFF
        ip = Ipv6Header(bytes(ffi.buffer(addr6.src)), bytes(ffi.buffer(addr6.dst)),
                        IPPROTO_TCP, ttl, tos, label)
    else:
        ip_opts = data[l2_len + IPV4_HLEN : tcp_at] if ip_hl > IPV4_HLEN else b""
        ip = Ipv4Header(src_ip, dst_ip, IPPROTO_TCP, ttl, tos, ip_id, bool(df), ip_opts)
    if has_sack:
        at = tcp_at + sack_off
        edges = _U32x2.iter_unpack(data[at : at + 8 * sack_count])
        blocks: tuple[tuple[Seq, Seq], ...] = tuple((Seq(lo), Seq(hi)) for lo, hi in edges)
    else:
        blocks = ()
    if has_mss or has_wscale or sack_permitted or has_sack:
        options = TcpOptions(
            mss if has_mss else None,
            wscale if has_wscale else None,
            bool(sack_permitted),
            blocks,
            (tsval, tsecr) if has_ts else None,
        )
    elif has_ts:
        options = TcpOptions(timestamps=(tsval, tsecr))
    else:
        options = NO_OPTIONS
    seg = TcpSegment(
        src_port,
        dst_port,
        Seq(seq),
        Seq(ack),
        FLAGS_BY_BYTE[flags],
        window,
        data[payload_off : payload_off + payload_len] if payload_len else b"",
        options,
        urgent,
    )
    return Frame(eth, ip, seg, bool(plain))


@dataclass(frozen=True, slots=True)
class FrameTemplate:
    """What every frame of one connection shares (addresses are network-order bytes:
    4 for IPv4, 16 for IPv6; for IPv6, ``ttl`` is the hop limit, ``tos`` the traffic
    class, and ``dont_fragment`` means nothing: IPv6 routers never fragment)."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: bytes
    dst_ip: bytes
    src_port: int
    dst_port: int
    vlan_tci: int | None = None
    ttl: int = 64
    tos: int = 0
    dont_fragment: bool = True
    flow_label: int = 0  # IPv6 (RFC 6437)


def batchable(seg: TcpSegment) -> bool:
    """Whether ``BatchBuilder.set_segment`` takes ``seg``: a data or ACK segment, its
    options timestamps and SACK blocks within 40 bytes, no urgent data."""
    o = seg.options
    if o.mss is not None or o.wscale is not None or o.sack_permitted or seg.urgent:
        return False
    limit = MAX_SACK_BLOCKS_WITH_TS if o.timestamps is not None else MAX_SACK_BLOCKS
    return len(o.sack_blocks) <= limit


def make_template(template: FrameTemplate) -> Any:
    """``template`` as the ``struct wire_template`` the C builder stamps frames from."""
    _require_native()
    if len(template.src_ip) not in (4, 16) or len(template.dst_ip) != len(template.src_ip):
        raise ValueError("template addresses are 4 (IPv4) or 16 (IPv6) bytes, both the same")
    if not 0 <= template.flow_label <= 0xFFFFF:
        raise ValueError("the flow label is 20 bits")
    t = ffi.new("struct wire_template *")
    t.ipv6 = len(template.src_ip) == 16
    t.flow_label = template.flow_label
    t.dst_mac = list(template.dst_mac)
    t.src_mac = list(template.src_mac)
    t.src_ip = list(template.src_ip)
    t.dst_ip = list(template.dst_ip)
    t.src_port = template.src_port
    t.dst_port = template.dst_port
    t.has_vlan = template.vlan_tci is not None
    t.vlan_tci = template.vlan_tci or 0
    t.ttl = template.ttl
    t.tos = template.tos
    t.df = template.dont_fragment
    return t


class BatchBuilder:
    """Builds up to ``capacity`` frames per call for one ``FrameTemplate``.

    ``out_lens`` (a cffi ``uint32_t[]`` of at least ``capacity``) is where built
    lengths land; builders that write into one shared output region can share it
    too, so a consumer of that region sees the same three arrays whoever built."""

    def __init__(self, template: FrameTemplate, capacity: int = 64,
                 out_lens: Any = None) -> None:
        _require_native()
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if out_lens is not None and len(out_lens) < capacity:
            raise ValueError(f"out_lens of {len(out_lens)} for a capacity of {capacity}")
        self.capacity = capacity
        self.template = template
        self._tmpl = make_template(template)
        self.segs = ffi.new("struct wire_seg[]", capacity)
        self.specs: np.ndarray[Any, np.dtype[Any]] = np.frombuffer(
            ffi.buffer(self.segs), dtype=struct_dtype("struct wire_seg")
        )
        self.out_lens = ffi.new("uint32_t[]", capacity) if out_lens is None else out_lens
        self._offs = ffi.new("uint64_t[]", capacity)
        self._caps = ffi.new("uint32_t[]", capacity)
        # build_strided's slots: offsets i * _stride, capacity _stride each (0: unset).
        self._stride = 0
        self._stride_offs = ffi.new("uint64_t[]", capacity)
        self._stride_caps = ffi.new("uint32_t[]", capacity)

    def header_len(self, has_ts: bool, sack_count: int = 0) -> int:
        """Bytes of headers before the payload (for writing payloads in place)."""
        s = ffi.new("struct wire_seg *")
        s.has_ts = has_ts
        s.sack_count = sack_count
        return int(lib.wire_header_len(self._tmpl, s))

    def build_into(
        self,
        out_base: Any,
        out_offsets: Any,
        out_caps: Any,
        n: int,
        payload_base: Any = None,
        template: Any = None,
    ) -> int:
        """Build ``n`` frames from ``segs[:n]`` (or ``specs[:n]``) at ``out_base +
        out_offsets[i]``; lengths land in ``out_lens``. With ``payload_base`` None the
        payloads must already sit right after the headers (zero copy). ``template``: a
        ``make_template`` result to stamp instead of this builder's own. Returns the
        number built; a segment that does not fit gets length 0."""
        if n > self.capacity:
            raise ValueError(f"{n} segments exceed the batch capacity {self.capacity}")
        out = out_base if isinstance(out_base, ffi.CData) else ffi.from_buffer(out_base)
        if payload_base is None:
            pay = ffi.NULL
        elif isinstance(payload_base, ffi.CData):
            pay = payload_base
        else:
            pay = ffi.from_buffer(payload_base)
        return int(
            lib.wire_build_batch(
                self._tmpl if template is None else template,
                self.segs,
                n,
                pay,
                out,
                _as_u64(out_offsets, n),
                _as_u32(out_caps, n),
                self.out_lens,
            )
        )

    def build_strided(self, template: Any, out: bytearray, stride: int, n: int,
                      payloads: Buffer) -> int:
        """Build ``segs[:n]`` from ``template`` (``make_template``: another connection's
        than this builder's own, if need be) into ``out`` at ``i * stride``, at most
        ``stride`` bytes each, payloads from ``payloads``; lengths land in ``out_lens``
        (0: the frame does not fit). Returns the number built."""
        if len(out) < n * stride:
            raise ValueError(f"{len(out)} bytes of output for {n} frames of {stride}")
        if stride != self._stride:
            self._stride_offs[0:self.capacity] = [i * stride for i in range(self.capacity)]
            self._stride_caps[0:self.capacity] = [stride] * self.capacity
            self._stride = stride
        return self.build_into(out, self._stride_offs, self._stride_caps, n,
                               payloads if len(payloads) else None, template)

    def set_segment(self, i: int, seg: TcpSegment, payload_off: int, ip_id: int = 0) -> None:
        """Fill spec ``i`` from a ``TcpSegment`` (only timestamps and SACK options)."""
        if not batchable(seg):
            raise ValueError("the batch builder writes data/ACK segments: timestamps and "
                             "SACK blocks within 40 option bytes, no urgent data")
        o = seg.options
        s = self.segs[i]
        s.payload_off = payload_off
        s.payload_len = len(seg.payload)
        s.seq = int(seg.seq)
        s.ack = int(seg.ack)
        s.window = seg.window
        s.flags = int(seg.flags)
        s.ip_id = ip_id
        if o.timestamps is not None:
            s.has_ts = 1
            s.tsval, s.tsecr = o.timestamps
        else:
            s.has_ts = 0
        s.sack_count = len(o.sack_blocks)
        for k, (left, right) in enumerate(o.sack_blocks):
            s.sack[2 * k] = int(left)
            s.sack[2 * k + 1] = int(right)

    def build(
        self, segments: Sequence[TcpSegment], ip_ids: Sequence[int] | None = None
    ) -> list[bytes]:
        """Convenience: frames for ``segments`` as bytes (one C call for the batch)."""
        n = len(segments)
        if n > self.capacity:
            raise ValueError(f"{n} segments exceed the batch capacity {self.capacity}")
        for seg in segments:
            if (seg.src_port, seg.dst_port) != (self.template.src_port, self.template.dst_port):
                raise ValueError("segment ports differ from the template")
        payloads = b"".join(s.payload for s in segments)
        poff = 0
        caps: list[int] = []
        for i, seg in enumerate(segments):
            self.set_segment(i, seg, poff, ip_ids[i] if ip_ids is not None else 0)
            poff += len(seg.payload)
            caps.append(
                self.header_len(seg.options.timestamps is not None, len(seg.options.sack_blocks))
                + len(seg.payload)
            )
        offs = [0, *accumulate(caps[:-1])] if n else []
        self._offs[0:n] = offs
        self._caps[0:n] = caps
        out = bytearray(sum(caps))
        built = self.build_into(out, self._offs, self._caps, n, payloads)
        if built != n:
            raise ValueError("a segment could not be built (IP length overflow)")
        return [bytes(out[o : o + self.out_lens[i]]) for i, o in enumerate(offs)]
