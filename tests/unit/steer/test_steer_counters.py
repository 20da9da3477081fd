"""Counter names come from the C enum; snapshots group and subtract by reason."""

from __future__ import annotations

import pytest

from joyride.steer.counters import GROUPS, SteerCounters, counter_names, group_of

SAMPLE = """
enum jr_counter {
	JR_C_STEERED_TCP,       /* a comment, JR_C_NOT_A_NAME */
	JR_C_PASS_PORT_TCP,
	/* JR_C_COMMENTED_OUT, */
	JR_C_ERR_ETH_TRUNC,
	JR_C_NR
};
"""


def test_names_parsed_in_order_without_comments() -> None:
    assert counter_names(SAMPLE) == ("steered_tcp", "pass_port_tcp", "err_eth_trunc")


def test_real_program_counters_cover_every_reason_group() -> None:
    names = counter_names()
    assert {group_of(n) for n in names} == set(GROUPS)
    for expected in ("steered_tcp", "steered_udp", "redirect_miss", "pass_fragment",
                     "pass_vlan", "err_ip_ihl", "err_ip_totlen", "err_tcp_trunc"):
        assert expected in names


@pytest.mark.parametrize(
    "source",
    [
        "no enum here",
        "enum jr_counter { JR_C_A, JR_C_B, };",  # no JR_C_NR terminator
        "enum jr_counter { JR_C_A, JR_C_A, JR_C_NR };",
    ],
)
def test_bad_enum_is_refused(source: str) -> None:
    with pytest.raises(ValueError):
        counter_names(source)


def test_group_of_unknown_prefix_is_refused() -> None:
    with pytest.raises(ValueError):
        group_of("dropped_x")


def test_snapshot_sums_cpus_groups_and_subtracts() -> None:
    names = ("steered_tcp", "redirect_miss", "pass_port_tcp", "err_ip_ihl")
    before = SteerCounters.from_per_cpu(names, [[1, 2], [0, 0], [3, 0], [0, 1]])
    after = SteerCounters.from_per_cpu(names, [[5, 2], [1, 0], [3, 4], [0, 1]])
    assert before["steered_tcp"] == 3
    assert after.totals() == {"steered": 7, "redirect_miss": 1, "pass": 7, "err": 1}
    delta = after - before
    assert delta.nonzero() == {"steered_tcp": 4, "redirect_miss": 1, "pass_port_tcp": 4}


def test_snapshot_requires_one_row_per_name() -> None:
    with pytest.raises(ValueError):
        SteerCounters.from_per_cpu(("a_x",), [[1], [2]])
