"""embed()'s arguments are checked before anything is claimed: a clear error, nothing
set up (no root, no interface needed)."""

from __future__ import annotations

import pytest

from joyride.embed import EmbedError
from joyride.embed.embedded import Embedded


@pytest.mark.parametrize("spin", [-0.001, 1.5, 5.0])
def test_spin_out_of_range_is_refused(spin: float) -> None:
    # The C data plane keeps the spin in a 32-bit count of nanoseconds: more than about
    # 4.29 s would wrap; a second is the bound JOYRIDE_DATAPLANE_SPIN_US has too.
    with pytest.raises(EmbedError, match="spin="):
        Embedded("jr-no-such-if0", [8080], spin=spin)


def test_no_ports_is_refused() -> None:
    with pytest.raises(EmbedError, match="at least one port"):
        Embedded("jr-no-such-if0", [])
