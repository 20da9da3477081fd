"""SYN option negotiation and the timestamp clock (RFC 9293 §3.7.1, RFC 7323, RFC 2018).

``negotiate`` reads the peer's SYN (or SYN-ACK) options against our configuration
and answers what this connection will use; ``syn_options`` builds the options of our
SYN (offer everything configured) or SYN-ACK (answer only what was offered). The
timestamp helpers implement the RFC 7323 §5 clock and its 32-bit ordering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from joyride.tcp.config import TcpConfig
from joyride.wire.seq import MASK
from joyride.wire.tcp import TcpOptions

TS_OPTION_LEN: Final = 12  # RFC 7323 §3.2: 10 bytes, padded to 12 as everyone does
PAWS_IDLE: Final = 24 * 24 * 3600.0  # RFC 7323 §5.5: TS.Recent invalid after 24 days
_MIN_SMSS: Final = 64  # floor on data bytes per segment, whatever the peer claims


def ts_clock(now: float, offset: int) -> int:
    """RFC 7323 §5.4 timestamp clock: 1 ms ticks plus a per-connection random offset
    (RFC 7323 §7.1) so that TSvals leak neither uptime nor cross-connection order."""
    return (int(now * 1000.0) + offset) & MASK


def ts_rtt(now: float, offset: int, tsecr: int) -> float | None:
    """RFC 7323 §4.1 RTT measurement from an echoed TSval, in seconds, or None when the
    echo is from the future. The clock ticks once a millisecond, so an echo within the
    tick says only "under 1 ms": it counts as one tick, as Linux's tcp_rtt_tsopt_us
    (min_delta 1) counts it. A zero instead would pull SRTT toward nothing on a fast
    path, sample after sample, and with it everything timed by SRTT."""
    elapsed = (ts_clock(now, offset) - tsecr) & MASK
    if elapsed >= 0x80000000:
        return None
    return max(elapsed, 1) / 1000.0


def ts_before(a: int, b: int) -> bool:
    """``a < b`` in 32-bit timestamp space (RFC 7323 §5.3)."""
    return ((a - b) & MASK) >= 0x80000000 and a != b


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the handshake settled for one connection."""

    snd_shift: int  # RFC 7323 §2.3 Snd.Wind.Shift (applied to SEG.WND)
    rcv_shift: int  # Rcv.Wind.Shift (applied to windows we advertise)
    window_scaling: bool
    timestamps: bool
    sack: bool
    smss: int  # data bytes per segment we send
    rcv_mss: int  # data bytes in the peer's full-sized segment


def negotiate(cfg: TcpConfig, opts: TcpOptions) -> Negotiated:
    """Options of the peer's SYN against ours: each one is on only if both sides
    offered it (RFC 7323 §1.3 for window scale and timestamps, RFC 2018 §2 SACK)."""
    # RFC 9293 §3.7.1: 536 without an MSS option; a floor against tiny-segment abuse
    # (CVE-2019-11479, Linux's tcp_min_snd_mss).
    peer_mss = opts.mss if opts.mss is not None else cfg.default_peer_mss
    peer_mss = max(peer_mss, cfg.min_peer_mss)
    window_scaling = cfg.window_scaling and opts.wscale is not None
    if window_scaling and opts.wscale is not None:
        snd_shift = min(opts.wscale, 14)  # RFC 7323 §2.3: larger shifts read as 14
        rcv_shift = cfg.window_scale_shift
    else:
        snd_shift = rcv_shift = 0
    timestamps = cfg.timestamps and opts.timestamps is not None
    # RFC 7323 §3.2: every segment then carries the timestamp option, out of the MSS.
    ts_len = TS_OPTION_LEN if timestamps else 0
    return Negotiated(
        snd_shift=snd_shift,
        rcv_shift=rcv_shift,
        window_scaling=window_scaling,
        timestamps=timestamps,
        sack=cfg.sack and opts.sack_permitted,
        smss=max(min(peer_mss, cfg.mss) - ts_len, _MIN_SMSS),
        # The peer's full-sized segment: our MSS (or its own, if smaller) less its
        # timestamp option, so the ACK-every-second-full-segment rule (RFC 5681
        # §4.2) counts real segments; the connection raises it if bigger ones arrive.
        rcv_mss=min(cfg.mss, peer_mss) - ts_len,
    )


def syn_options(
    cfg: TcpConfig, tsval: int, ts_recent: int, answering: Negotiated | None
) -> TcpOptions:
    """Options for our SYN (``answering`` None: offer all that is configured) or our
    SYN-ACK (answer only what the peer offered, RFC 7323 §1.3, RFC 2018 §2)."""
    if answering is None:
        return TcpOptions(
            mss=cfg.mss,
            wscale=cfg.window_scale_shift if cfg.window_scaling else None,
            sack_permitted=cfg.sack,
            timestamps=(tsval, ts_recent) if cfg.timestamps else None,
        )
    return TcpOptions(
        mss=cfg.mss,
        wscale=answering.rcv_shift if answering.window_scaling else None,
        sack_permitted=answering.sack,
        timestamps=(tsval, ts_recent) if answering.timestamps else None,
    )
