"""One veth bed and one attached steering program, shared by a module's tests.

BCC compiles take seconds; the program, its maps and the bed are safe to share because
every test measures counter *differences* and restores the ports it changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from steer_cli import pin_neighbours
from steer_frames import Endpoints, mac_bytes

from joyride.steer import Steering
from joyride.testbed import Testbed


@pytest.fixture(scope="module")
def quiet_bed() -> Iterator[Testbed]:
    with Testbed() as bed:
        pin_neighbours(bed)
        yield bed


@pytest.fixture(scope="module")
def steering(quiet_bed: Testbed) -> Iterator[Steering]:
    with quiet_bed.joy.inside():
        steer = Steering(quiet_bed.joy.ifname)
    try:
        with quiet_bed.joy.inside():
            assert steer.attach("native") == "native"
        yield steer
    finally:
        with quiet_bed.joy.inside():
            steer.close()


@pytest.fixture(scope="module")
def to_joy(quiet_bed: Testbed) -> Endpoints:
    """Addresses for frames the peer sends to the Joyride side."""
    return Endpoints(mac_bytes(quiet_bed.peer.mac), mac_bytes(quiet_bed.joy.mac),
                     quiet_bed.peer.ip_bytes, quiet_bed.joy.ip_bytes)
