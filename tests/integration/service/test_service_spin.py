"""The service's spin (docs/dataplane.md, "Spinning"): after traffic the C loop polls
for the answer instead of sleeping, but only while one or two flows are busy. A single
ping-pong connection makes it spin (or decide not to because a task waits for a CPU);
eight busy connections make it decide not to spin for the flows. Both with every byte
checked by hash, under ``joyride run`` in the default (stream) mode."""

from __future__ import annotations

import subprocess
import sys

import pytest
from service_helpers import JOYRIDE, stats, wait_port
from test_ring_bell import CLIENT, SERVER

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def spin_counters(bed: Testbed) -> dict[str, int]:
    plane = stats(bed.joy)["datapath"]["dataplane"]
    return {k: int(plane[k]) for k in ("spin_yields", "spins_skipped_busy",
                                       "spins_skipped_flows")}


def test_one_flow_spins_and_many_do_not(service_bed: Testbed) -> None:
    bed = service_bed
    bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, "lt", "8098",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 8098)
    before = spin_counters(bed)
    out = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, "8098", "1", "200",
                       timeout=180).stdout.decode().strip()
    assert out == "True", out
    one = spin_counters(bed)
    # One connection waiting for each answer: the loop spun (each empty poll yields) or
    # found a task waiting for a CPU, and decided each time.
    assert (one["spin_yields"] + one["spins_skipped_busy"] >
            before["spin_yields"] + before["spins_skipped_busy"]), (before, one)
    out = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, "8098", "8", "60",
                       timeout=180).stdout.decode().strip()
    assert out == "True", out
    many = spin_counters(bed)
    assert many["spins_skipped_flows"] > one["spins_skipped_flows"], (one, many)
