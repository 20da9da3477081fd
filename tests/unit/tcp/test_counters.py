"""``Counters``: the parts of ``collections.Counter`` the stack relies on."""

from __future__ import annotations

from joyride.tcp.counters import Counters


def test_missing_reason_reads_zero_and_is_not_inserted() -> None:
    c = Counters()
    assert c["drop_paws"] == 0
    assert "drop_paws" not in c
    assert c.get("drop_paws") is None


def test_increments_and_update_add() -> None:
    c = Counters()
    c["segments_received"] += 3
    c["segments_received"] += 2
    c.update({"segments_received": 5, "drop_paws": 1}, retransmitted_segments=2)
    c.update()
    assert c == {"segments_received": 10, "drop_paws": 1, "retransmitted_segments": 2}
    copy = Counters(c)
    copy["drop_paws"] += 1
    assert c["drop_paws"] == 1 and copy["drop_paws"] == 2


def test_item_assignment_is_dicts_own() -> None:
    # The reason this is not collections.Counter: no Python-level __setitem__ or
    # __delitem__, so CPython keeps dict's C slot for ``counters[k] += n``.
    assert "__setitem__" not in vars(Counters) and "__delitem__" not in vars(Counters)
