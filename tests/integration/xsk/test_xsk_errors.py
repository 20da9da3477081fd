"""Every error the package promises, triggered on purpose against a real kernel."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from xsk_helpers import Link

from joyride.testbed import Testbed
from xsk import (
    ConfigError,
    QueueBusy,
    QueueOutOfRange,
    Socket,
    Umem,
    UmemExhausted,
    XdpAttachError,
    ZeroCopyUnsupported,
    attach_redirect_all,
)

pytestmark = pytest.mark.integration


def test_queue_out_of_range(link: Link) -> None:
    with link.tb.joy.inside(), pytest.raises(QueueOutOfRange, match="has 1 queue"):
        Socket(link.tb.joy.ifname, 3)


def test_zero_copy_on_veth_is_refused(link: Link) -> None:
    with link.tb.joy.inside(), Umem(frame_count=64) as umem:
        with pytest.raises(ZeroCopyUnsupported):
            Socket(link.tb.joy.ifname, 0, umem, zerocopy=True)
        assert umem.free_frames == 64 and umem.sockets == ()
        with Socket(link.tb.joy.ifname, 0, umem, zerocopy="auto") as sock:
            assert sock.zerocopy is False  # copy mode is what veth offers


def test_umem_exhausted(link: Link) -> None:
    with link.tb.joy.inside(), Umem(frame_count=32) as umem:
        with pytest.raises(UmemExhausted, match="64 frames wanted"):
            Socket(link.tb.joy.ifname, 0, umem, fill_frames=64, fill_size=64)
        with Socket(link.tb.joy.ifname, 0, umem, fill_frames=32, fill_size=32) as sock:
            with pytest.raises(UmemExhausted):
                sock.alloc_tx(1)
            with pytest.raises(UmemExhausted):
                umem.alloc(1)
        txb = None
        with Socket(link.tb.joy.ifname, 0, umem, fill_frames=0) as sock:
            txb = sock.alloc_tx(32)
            with pytest.raises(UmemExhausted, match="1 frames asked for, 0 free"):
                sock.alloc_tx(1)
            txb.release()
        assert umem.free_frames == 32


def test_queue_busy(link: Link) -> None:
    name = link.tb.joy.ifname
    with link.tb.joy.inside(), Umem(frame_count=64) as a, Umem(frame_count=64) as b, \
            Socket(name, 0, a):
        with pytest.raises(QueueBusy):
            Socket(name, 0, a)  # same UMEM, same queue: refused before the kernel
        with pytest.raises(QueueBusy):
            Socket(name, 0, b)  # another UMEM on a bound queue: the kernel's EBUSY
        assert b.free_frames == 64


def test_shared_socket_inherits_modes(make_testbed: Callable[..., Testbed]) -> None:
    tb = make_testbed(rx_queues=2)
    with tb.joy.inside(), Socket(tb.joy.ifname, 0) as first:
        with pytest.raises(ConfigError, match="need_wakeup"):
            Socket(tb.joy.ifname, 1, shared_with=first, need_wakeup=False)
        with pytest.raises(ZeroCopyUnsupported):
            Socket(tb.joy.ifname, 1, shared_with=first, zerocopy=True)
        with Socket(tb.joy.ifname, 1, shared_with=first) as second:
            assert second.need_wakeup and not second.zerocopy


def test_attach_twice_is_refused(link: Link) -> None:
    name = link.tb.joy.ifname
    with link.tb.joy.inside(), attach_redirect_all(name, "native"), \
            pytest.raises(XdpAttachError, match="already has an XDP program"):
        attach_redirect_all(name, "native")


def test_native_xdp_refuses_large_mtu(make_testbed: Callable[..., Testbed]) -> None:
    tb = make_testbed(mtu=4000)
    with tb.joy.inside():
        with pytest.raises(XdpAttachError, match="MTU"):
            attach_redirect_all(tb.joy.ifname, "native")
        with attach_redirect_all(tb.joy.ifname, "skb") as prog:  # generic mode has no limit
            assert prog.attached


def test_send_of_frames_the_application_does_not_hold(link: Link) -> None:
    with link.tb.joy.inside(), Socket(link.tb.joy.ifname, 0, fill_frames=8) as sock:
        umem = sock.umem
        in_fill_ring = 0  # frame 0 went to the fill ring: the kernel holds it
        assert umem.owner(in_fill_ring).startswith("kernel")
        assert sock.send([(in_fill_ring, 60), (umem.size + 4096, 60)]) == 2
        stats = sock.statistics()
        assert stats["rejected_tx"] == 2 and stats["tx_frames"] == 0
        (addr,) = umem.alloc(1).tolist()
        assert sock.send([(addr, 0)]) == 1  # empty frame: refused too
        assert sock.send([(addr + 2000, 100)]) == 1  # crosses the frame end
        assert sock.statistics()["rejected_tx"] == 4
        assert umem.owner(addr) == "app"
        umem.free([addr])
        with pytest.raises(ConfigError):
            sock.send([b"x" * 60, (addr, 60)])
