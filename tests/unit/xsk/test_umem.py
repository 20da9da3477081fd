"""Umem geometry, the frame allocator and view safety (no privileges needed)."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsk import FrameError, Umem, UmemError, UmemExhausted, UmemInUse
from xsk.umem import PACKET_HEADROOM


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"frame_size": 3000}, "power of two"),
    ({"frame_size": 1024}, "power of two"),
    ({"frame_size": 1 << 17}, "power of two"),
    ({"frame_count": 0}, "frame_count"),
    ({"frame_count": -5}, "frame_count"),
    ({"headroom": -1}, "headroom"),
    ({"headroom": 2048 - PACKET_HEADROOM}, "headroom"),
])
def test_bad_geometry_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UmemError, match=match):
        Umem(**kwargs)


def test_umem_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        Umem(frame_size=100)


def test_geometry_and_alignment() -> None:
    with Umem(frame_count=64, frame_size=4096, headroom=128, hugepages=False) as umem:
        assert umem.size == 64 * 4096
        assert umem.address % 4096 == 0
        assert len(umem.buffer) == 64 * 4096
        assert umem.array.shape == (64 * 4096,)
        assert umem.free_frames == 64
        assert not umem.hugepages


def test_hugepages_required_but_missing_or_present() -> None:
    free = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                free = int(line.split()[1])
    if free == 0:
        with pytest.raises(UmemError, match="huge pages"):
            Umem(frame_count=16, hugepages=True)
        with Umem(frame_count=16) as umem:  # None: falls back to ordinary pages
            assert not umem.hugepages
    else:
        with Umem(frame_count=16, hugepages=True) as umem:
            assert umem.hugepages
            assert umem.address % (2 << 20) == 0


def test_alloc_hands_out_distinct_aligned_frames() -> None:
    with Umem(frame_count=128, frame_size=2048) as umem:
        a = umem.alloc(100)
        b = umem.alloc(28)
        addrs = np.concatenate([a, b])
        assert len(set(addrs.tolist())) == 128
        assert all(x % 2048 == 0 and x < umem.size for x in addrs.tolist())
        assert umem.free_frames == 0
        assert {umem.owner(int(x)) for x in addrs} == {"app"}
        umem.free(addrs)


def test_exhaustion_is_all_or_nothing() -> None:
    with Umem(frame_count=8) as umem:
        held = umem.alloc(6)
        with pytest.raises(UmemExhausted, match="3 frames asked for, 2 free"):
            umem.alloc(3)
        assert umem.free_frames == 2  # nothing was taken by the failed call
        umem.free(held)
        assert umem.free_frames == 8


def test_double_free_and_foreign_addresses_are_refused() -> None:
    with Umem(frame_count=8) as umem:
        a = umem.alloc(2)
        umem.free(a[:1])
        with pytest.raises(FrameError, match="1 of 2"):
            umem.free(a)  # a[0] already free, a[1] still held: a[1] is freed
        assert umem.free_frames == 8
        with pytest.raises(FrameError):
            umem.free([umem.size, 1 << 40])
        assert umem.free_frames == 8
        # A refused double free did not push a frame twice: 8 allocations are distinct.
        again = umem.alloc(8)
        assert len(set(again.tolist())) == 8
        umem.free(again)


def test_free_accepts_any_address_inside_a_held_frame() -> None:
    with Umem(frame_count=4) as umem:
        (addr,) = umem.alloc(1).tolist()
        umem.free([addr + 300])
        assert umem.owner(addr) == "free"


def test_frame_views_are_bounded_to_one_frame() -> None:
    with Umem(frame_count=4) as umem:
        view = umem.frame(2048, 100)
        view[:5] = b"hello"
        assert bytes(umem.buffer[2048:2053]) == b"hello"
        assert len(umem.frame(2048 + 48)) == 2000
        for addr, length in ((2000, 100), (4 * 2048, 1), (-1, 1)):
            with pytest.raises(FrameError):
                umem.frame(addr, length)
        del view
        with pytest.raises(FrameError):
            umem.owner(1 << 30)


def test_close_refuses_while_views_live_then_succeeds() -> None:
    umem = Umem(frame_count=4)
    view = umem.frame(0, 64)
    with pytest.raises(UmemInUse):
        umem.close()
    assert not umem.closed
    view[0] = 7  # still mapped and usable
    del view
    arr = umem.array[:10]
    with pytest.raises(UmemInUse):
        umem.close()
    del arr
    gc.collect()
    umem.close()
    assert umem.closed
    with pytest.raises(UmemError):
        _ = umem.buffer
    umem.close()  # idempotent


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=40))
def test_allocator_never_hands_out_a_frame_twice(ops: list[tuple[bool, int]]) -> None:
    with Umem(frame_count=32) as umem:
        held: list[int] = []
        for is_alloc, k in ops:
            if is_alloc:
                if k > umem.free_frames:
                    with pytest.raises(UmemExhausted):
                        umem.alloc(k)
                    continue
                got = umem.alloc(k).tolist()
                assert not set(got) & set(held)
                held += got
            else:
                k = min(k, len(held))
                umem.free(held[:k])
                held = held[k:]
            assert umem.free_frames + len(held) == 32
            assert len(set(held)) == len(held)
        umem.free(held)
        assert umem.free_frames == 32
