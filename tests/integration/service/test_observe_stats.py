"""``joyride stats``: its text view shows TCP's loss and recovery counters; ``--watch``
reports changes, and says in one line (exit 3) when no service is attached."""

from __future__ import annotations

import pytest
from service_helpers import cli

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def test_text_view_shows_recovery_counters(service_bed: Testbed) -> None:
    out = cli(service_bed.joy, "stats", service_bed.joy.ifname, "--all").stdout
    assert "  tcp: segments_received" in out and "retransmitted_segments" in out
    assert "  recovery: dsack_received" in out and "undo_rto" in out


def test_watch_reports_changes(service_bed: Testbed) -> None:
    out = cli(service_bed.joy, "stats", service_bed.joy.ifname, "--watch", "0.2",
              "--count", "2").stdout
    assert out.count("change over 0.2 s") == 2


def test_watch_without_a_service_says_so_in_one_line(service_bed: Testbed) -> None:
    out = cli(service_bed.peer, "stats", service_bed.peer.ifname, "--watch", "0.2",
              "--count", "1", check=False)
    assert out.returncode == 3 and not out.stdout
    assert len(out.stderr.strip().splitlines()) == 1 and "not attached" in out.stderr
