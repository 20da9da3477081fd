"""Impairment settings and the nft/tc text they turn into (no privileges needed)."""

from __future__ import annotations

import pytest

from joyride.testbed.impair import (
    DUP_MARK,
    SCALE,
    Impairment,
    nft_table,
    tbf_args,
)


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": -0.1}, {"loss": 1.5}, {"duplicate": 2}, {"corrupt": -1}, {"reorder": 0.6},
     {"delay": -0.001}, {"rate_bps": 0}],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Impairment(**kwargs)


def test_no_impairment_needs_nothing() -> None:
    none = Impairment()
    assert none.is_none and not none.needs_nft and not none.needs_relay
    assert nft_table("egress", "dev0", none) is None
    assert nft_table("ingress", "dev0", none) is None


def test_loss_becomes_a_random_drop_on_egress() -> None:
    script = nft_table("egress", "dev0", Impairment(loss=0.25))
    assert script is not None
    assert 'hook egress device "dev0"' in script
    assert f"numgen random mod {SCALE} < {SCALE // 4} drop" in script
    assert "ingress" not in script


def test_corruption_is_the_relays_job_not_nfts() -> None:
    # nft at egress runs before Linux completes CHECKSUM_PARTIAL sums: a flip there
    # would get a valid checksum. Only the relay sees finished frames.
    corrupt = Impairment(corrupt=0.5)
    assert corrupt.needs_relay and not corrupt.needs_nft
    assert nft_table("egress", "dev0", corrupt) is None
    assert nft_table("ingress", "dev0", corrupt) is None


def test_loss_towards_the_peer_is_an_ingress_drop() -> None:
    script = nft_table("ingress", "dev0", Impairment(loss=0.5))
    assert script is not None
    assert 'hook ingress device "dev0"' in script and "egress" not in script


def test_duplicates_are_marked_so_they_are_not_duplicated_again() -> None:
    script = nft_table("egress", "dev0", Impairment(duplicate=0.1))
    assert script is not None
    assert f"meta mark != {DUP_MARK:#x}" in script
    assert f'meta mark set {DUP_MARK:#x} dup to "dev0"' in script


def test_duplication_towards_the_peer_is_refused() -> None:
    with pytest.raises(ValueError, match="duplication"):
        nft_table("ingress", "dev0", Impairment(duplicate=0.1))


def test_delay_and_reorder_need_the_relay() -> None:
    assert Impairment(delay=0.01).needs_relay
    assert Impairment(reorder=0.1).needs_relay
    assert not Impairment(loss=0.1).needs_relay


def test_tbf_burst_scales_with_rate() -> None:
    slow = tbf_args("dev0", 1_000_000)
    fast = tbf_args("dev0", 10_000_000_000)
    assert slow[slow.index("rate") + 1] == "1000000bit"
    assert int(slow[slow.index("burst") + 1]) == 16 * 1024
    assert int(fast[fast.index("burst") + 1]) == 10_000_000_000 // 8 // 1000
