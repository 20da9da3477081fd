"""NewReno (RFC 5681/3465/6928) and CUBIC (RFC 9438) window rules at explicit times."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.congestion import (
    CONGESTION_CONTROLS,
    CUBIC_ALPHA,
    CUBIC_BETA,
    CUBIC_C,
    INITIAL_SSTHRESH,
    CongestionControl,
    Cubic,
    NewReno,
    initial_window,
    make_congestion_control,
)

MSS = 1000


# --- shared: initial window, registry ------------------------------------------------


@pytest.mark.parametrize(("mss", "iw"), [(536, 5360), (1460, 14600), (1000, 10000),
                                         (4000, 14600), (9000, 18000)])
def test_initial_window_rfc6928(mss: int, iw: int) -> None:
    # RFC 6928 §2: IW = min(10*MSS, max(2*MSS, 14600)).
    assert initial_window(mss) == iw
    assert NewReno(mss).cwnd == iw
    assert Cubic(mss).cwnd == iw


def test_initial_ssthresh_arbitrarily_high() -> None:
    # RFC 5681 §3.1.
    assert NewReno(MSS).ssthresh == INITIAL_SSTHRESH


def test_explicit_initial_window() -> None:
    assert NewReno(MSS, initial_window=3 * MSS).cwnd == 3 * MSS


def test_registry_and_factory() -> None:
    assert set(CONGESTION_CONTROLS) == {"cubic", "newreno"}
    assert isinstance(make_congestion_control("cubic", MSS), Cubic)
    assert isinstance(make_congestion_control("NewReno", MSS), NewReno)
    with pytest.raises(ValueError, match="unknown congestion control"):
        make_congestion_control("bbr", MSS)


def test_set_mss_recomputes_pristine_iw_only() -> None:
    cc = NewReno(536)
    assert cc.cwnd == 5360
    cc.set_mss(1460)  # handshake negotiated a bigger MSS before any data
    assert cc.cwnd == 14600
    cc.on_ack(0.0, 1460, None, 14600)
    grown = cc.cwnd
    cc.set_mss(1000)
    assert cc.cwnd == grown
    cc.set_mss(0)  # ignored, never divides by zero later
    assert cc.mss == 1000


# --- NewReno --------------------------------------------------------------------------


def test_slow_start_counts_every_segment_a_stretch_ack_covers() -> None:
    # RFC 5681 §3.1 eq. (2) with RFC 3465 §2.2 byte counting, L unbounded as Linux's
    # tcp_slow_start: a stretch ACK (GRO at the receiver) grows cwnd by all it covers,
    # up to ssthresh; the rest belongs to congestion avoidance.
    cc = NewReno(MSS, initial_window=2 * MSS)
    cc.on_ack(0.0, 500, None, 2 * MSS)
    assert cc.cwnd == 2 * MSS + 500
    cc.on_ack(0.0, 5 * MSS, None, 2 * MSS)
    assert cc.cwnd == 7 * MSS + 500
    cc.ssthresh = 10 * MSS
    cc.on_ack(0.0, 20 * MSS, None, 7 * MSS)
    # To ssthresh (10), and the 17.5 SMSS left over are congestion avoidance's bytes:
    # a full window of them, one SMSS more (RFC 3465 §2.1).
    assert cc.cwnd == 11 * MSS


def test_slow_start_doubles_per_rtt() -> None:
    cc = NewReno(MSS, initial_window=4 * MSS)
    for _ in range(4):  # one ACK per segment for one window
        cc.on_ack(0.0, MSS, None, 4 * MSS)
    assert cc.cwnd == 8 * MSS


def test_congestion_avoidance_one_smss_per_cwnd_acked() -> None:
    # RFC 5681 §3.1 / RFC 3465 §2.1: +1 SMSS once cwnd bytes have been acked.
    cc = NewReno(MSS, initial_window=10 * MSS)
    cc.ssthresh = 10 * MSS
    for _ in range(9):
        cc.on_ack(0.0, MSS, None, 10 * MSS)
        assert cc.cwnd == 10 * MSS
    cc.on_ack(0.0, MSS, None, 10 * MSS)
    assert cc.cwnd == 11 * MSS
    # A single huge ACK still yields one SMSS (at most one per RTT).
    cc.on_ack(0.0, 100 * MSS, None, 11 * MSS)
    assert cc.cwnd == 12 * MSS


def test_slow_start_leftover_goes_to_avoidance() -> None:
    cc = NewReno(MSS, initial_window=10 * MSS)
    cc.ssthresh = 11 * MSS
    cc.on_ack(0.0, 2 * MSS, None, 10 * MSS)
    assert cc.cwnd == 11 * MSS  # capped at ssthresh, the extra 1000 bytes counted
    assert not cc.in_slow_start


def test_fast_retransmit_halves_flight() -> None:
    # RFC 5681 §3.2 step 2: ssthresh = max(FlightSize/2, 2*SMSS); cwnd = ssthresh here
    # (the connection applies any inflation).
    cc = NewReno(MSS)
    cc.on_congestion(1.0, 20 * MSS)
    assert cc.ssthresh == 10 * MSS and cc.cwnd == 10 * MSS and cc.in_recovery
    cc.on_congestion(1.0, 3 * MSS)
    assert cc.ssthresh == 2 * MSS  # floor of eq. (4)


def test_recovery_exit_deflates_to_ssthresh() -> None:
    # RFC 6582 §3.2 step 3: full ACK -> cwnd = ssthresh.
    cc = NewReno(MSS)
    cc.on_congestion(1.0, 20 * MSS)
    cc.cwnd += 5 * MSS  # the connection's recovery inflation
    cc.on_recovery_exit(1.5)
    assert cc.cwnd == 10 * MSS and not cc.in_recovery
    cc.cwnd = 3 * MSS
    cc.on_recovery_exit(2.0)  # not in recovery: no change
    assert cc.cwnd == 3 * MSS
    # RFC 6582 §3.2 step 3 option 1, chosen by the connection, is kept.
    cc.on_congestion(3.0, 20 * MSS)
    cc.cwnd = 4 * MSS  # min(ssthresh, max(FlightSize, SMSS) + SMSS)
    cc.on_recovery_exit(3.5)
    assert cc.cwnd == 4 * MSS


def test_rto_loss_window() -> None:
    # RFC 5681 §3.1: on RTO ssthresh per eq. (4), cwnd = LW = 1 SMSS.
    cc = NewReno(MSS)
    cc.on_congestion(1.0, 20 * MSS)
    cc.on_rto(2.0, 12 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 6 * MSS and not cc.in_recovery
    cc.on_recovery_exit(2.5)  # recovery was aborted by the RTO: no inflation back
    assert cc.cwnd == MSS


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_abc_limit_is_one_smss_after_rto(name: str) -> None:
    # RFC 3465 §2.3: L = 1*SMSS in slow start after an RTO; unbounded again afterwards.
    cc = make_congestion_control(name, MSS)
    cc.on_rto(1.0, 20 * MSS)
    cc.on_ack(1.1, 3 * MSS, 0.1, MSS)
    assert cc.cwnd == 2 * MSS
    while cc.cwnd < cc.ssthresh:
        cc.on_ack(1.2, MSS, 0.1, cc.cwnd)
    cc.ssthresh = INITIAL_SSTHRESH  # a fresh slow start (e.g. after idle)
    before = cc.cwnd
    cc.on_ack(1.3, 3 * MSS, 0.1, cc.cwnd)
    assert cc.cwnd == before + 3 * MSS


def test_idle_restart_window() -> None:
    # RFC 5681 §4.1: cwnd = min(IW, cwnd) after idle > RTO; RFC 2861 §3 keeps 3/4
    # of the old window in ssthresh.
    cc = NewReno(MSS)
    cc.cwnd = 40 * MSS
    cc.ssthresh = 20 * MSS
    cc.on_idle(10.0, 1.0)
    assert cc.cwnd == 10 * MSS and cc.ssthresh == 30 * MSS
    small = NewReno(MSS, initial_window=10 * MSS)
    small.cwnd = 4 * MSS
    small.on_idle(10.0, 1.0)
    assert small.cwnd == 4 * MSS


# --- CUBIC ----------------------------------------------------------------------------


def _cubic_after_loss(w_max_segs: int = 100) -> Cubic:
    cc = Cubic(MSS)
    cc.cwnd = w_max_segs * MSS
    cc.on_congestion(0.0, w_max_segs * MSS)
    cc.on_recovery_exit(0.0)
    return cc


def test_cubic_beta_on_loss() -> None:
    # RFC 9438 §4.6: ssthresh = flight_size * 0.7, cwnd = ssthresh; W_max = cwnd.
    cc = _cubic_after_loss(100)
    assert cc.ssthresh == 70 * MSS and cc.cwnd == 70 * MSS
    assert cc.w_max == 100 * MSS
    assert CUBIC_BETA == 0.7 and CUBIC_C == 0.4


def test_cubic_k_matches_formula() -> None:
    # RFC 9438 §4.2 eq. (2): K = cbrt((W_max - cwnd_epoch)/C) = cbrt(30/0.4).
    cc = _cubic_after_loss(100)
    cc.on_ack(10.0, 1, 0.1, 70 * MSS)
    assert cc.epoch_start == 10.0
    assert cc.k == pytest.approx((30 / 0.4) ** (1 / 3))


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0, 6.0])
def test_cubic_window_follows_curve(t: float) -> None:
    # RFC 9438 §4.2: acknowledging one full window at time t moves cwnd to
    # target = W_cubic(t + RTT), clamped to [cwnd, 1.5*cwnd].
    rtt = 0.1
    cc = _cubic_after_loss(100)
    cc.on_ack(0.0, 1, rtt, 70 * MSS)  # epoch starts at t = 0
    k = (30 / 0.4) ** (1 / 3)
    before = cc.cwnd
    cc.on_ack(t, before, rtt, before)
    w_cubic = (0.4 * (t + rtt - k) ** 3 + 100) * MSS
    # Reno-friendly estimate after one window: 70 + alpha segments.
    w_est_t = (0.4 * (t - k) ** 3 + 100) * MSS
    expected = min(max(w_cubic, before), 1.5 * before)
    assert w_est_t > 70 * MSS + CUBIC_ALPHA * MSS + MSS  # cubic region for these t
    assert cc.cwnd == pytest.approx(expected, abs=2)


def test_cubic_concave_then_plateau_then_convex() -> None:
    # RFC 9438 §4.4/§4.5: growth slows near W_max (concave) and speeds up beyond it.
    cc = _cubic_after_loss(100)
    cc.on_ack(0.0, 1, 0.0, 70 * MSS)
    k = cc.k
    assert cc.w_cubic(0.0) == pytest.approx(70 * MSS, abs=1)
    assert cc.w_cubic(k) == pytest.approx(100 * MSS)
    slope_before = cc.w_cubic(k - 1) - cc.w_cubic(k - 2)
    slope_at = cc.w_cubic(k + 0.5) - cc.w_cubic(k - 0.5)
    slope_after = cc.w_cubic(k + 2) - cc.w_cubic(k + 1)
    assert slope_at < slope_before and slope_at < slope_after


def test_cubic_reno_friendly_region() -> None:
    # RFC 9438 §4.3: with a short RTT and small window Reno grows faster than the
    # cubic curve early in the epoch; cwnd follows W_est = cwnd_epoch + alpha*... .
    cc = Cubic(MSS)
    cc.cwnd = 20 * MSS
    cc.on_congestion(0.0, 20 * MSS)  # W_max 20 segs, cwnd 14 segs
    cc.on_recovery_exit(0.0)
    cc.on_ack(0.0, 1, 0.01, 14 * MSS)
    start = cc.cwnd
    assert start == 14 * MSS
    # Ack 10 windows quickly (10 ms apart, cubic curve barely moves).
    t = 0.0
    for _ in range(10):
        t += 0.01
        cc.on_ack(t, cc.cwnd, 0.01, cc.cwnd)
    assert cc.w_cubic(t) < cc.w_est
    # Each window adds about alpha_cubic segments (Reno with beta 0.5 equivalent).
    assert cc.cwnd == pytest.approx(14 * MSS + 10 * CUBIC_ALPHA * MSS, rel=0.02)


def test_cubic_alpha_becomes_one_after_cwnd_prior() -> None:
    # RFC 9438 §4.3: once W_est >= cwnd_prior, alpha_cubic = 1.
    cc = Cubic(MSS)
    cc.cwnd = 10 * MSS
    cc.on_congestion(0.0, 10 * MSS)
    cc.on_recovery_exit(0.0)
    cc.on_ack(0.0, 1, 0.001, 7 * MSS)
    cc.w_est = 10 * MSS  # reached cwnd_prior
    before = cc.w_est
    cc.on_ack(0.001, 7 * MSS, 0.001, 7 * MSS)
    assert cc.w_est - before == pytest.approx(MSS * 7 * MSS / (7 * MSS))


def test_cubic_fast_convergence() -> None:
    # RFC 9438 §4.7: losing again below the previous W_max sets
    # W_max = cwnd * (1 + beta) / 2.
    cc = _cubic_after_loss(100)  # W_max 100, cwnd 70
    cc.cwnd = 80 * MSS
    cc.on_congestion(5.0, 80 * MSS)
    assert cc.w_max == pytest.approx(80 * MSS * 1.7 / 2)
    assert cc.ssthresh == 56 * MSS
    slow = Cubic(MSS, fast_convergence=False)
    slow.cwnd = 100 * MSS
    slow.on_congestion(0.0, 100 * MSS)
    slow.cwnd = 80 * MSS
    slow.on_congestion(5.0, 80 * MSS)
    assert slow.w_max == 80 * MSS


def test_cubic_epoch_reset_on_congestion() -> None:
    cc = _cubic_after_loss(100)
    cc.on_ack(1.0, MSS, 0.1, 70 * MSS)
    assert cc.epoch_start == 1.0
    cc.on_congestion(3.0, cc.cwnd)
    assert cc.epoch_start is None
    cc.on_recovery_exit(3.2)
    cc.on_ack(3.5, MSS, 0.1, cc.cwnd)
    assert cc.epoch_start == 3.5


def test_cubic_rto() -> None:
    # RFC 9438 §4.8: cwnd = 1 SMSS, ssthresh with beta_cubic; next CA stage starts
    # with W_max = cwnd at its start and K = 0.
    cc = Cubic(MSS)
    cc.cwnd = 50 * MSS
    cc.on_rto(1.0, 40 * MSS)  # ssthresh from cwnd, the larger (Linux's tcp_enter_loss)
    assert cc.cwnd == MSS and cc.ssthresh == 35 * MSS and cc.epoch_start is None
    while cc.in_slow_start:
        cc.on_ack(2.0, 2 * MSS, 0.1, cc.cwnd)
    cc.on_ack(2.5, MSS, 0.1, cc.cwnd)
    assert cc.k == 0.0
    assert cc.w_max == pytest.approx(35 * MSS, abs=MSS)


@pytest.mark.parametrize("flight", [20, 50, 80])
def test_cubic_ssthresh_from_the_larger_of_flight_and_cwnd_rfc9438_4_6(flight: int) -> None:
    """RFC 9438 §4.6: ssthresh = flight_size * beta_cubic; an implementation may use
    cwnd where cwnd cannot grow while the flight falls short of it (RFC 7661 here), and
    Linux's CUBIC does. A flight below cwnd (PRR's after a recent recovery) no longer
    cuts below beta * cwnd; a larger one (limited transmit aside) counts whole."""
    cc = Cubic(MSS)
    cc.cwnd = 50 * MSS
    cc.on_congestion(1.0, flight * MSS)
    assert cc.ssthresh == int(max(flight, 50) * MSS * 0.7)
    assert cc.cwnd == cc.ssthresh and cc.w_max == 50 * MSS


def test_cubic_idle_restarts_epoch() -> None:
    cc = _cubic_after_loss(100)
    cc.on_ack(1.0, MSS, 0.1, 70 * MSS)
    cc.on_idle(100.0, 1.0)
    assert cc.epoch_start is None
    assert cc.cwnd == initial_window(MSS)
    assert cc.ssthresh == 70 * MSS  # already above 3/4 of cwnd: kept
    big = _cubic_after_loss(100)
    big.ssthresh = 10 * MSS
    big.on_idle(100.0, 1.0)
    assert big.ssthresh == int(0.75 * 70 * MSS)


def test_cubic_recovery_exit_restarts_the_epoch_rfc9438_4_2() -> None:
    """Found by test_windows_stay_sane: ACKs during recovery started an epoch whose
    W_est survived recovery exit, so a 1-byte ACK after it doubled cwnd."""
    cc = make_congestion_control("cubic", MSS)
    cc.cwnd = 2 * MSS
    cc.on_congestion(0.0, 0)
    cc.on_ack(0.0, 7557, None, 7557)
    cc.on_recovery_exit(0.0)
    assert cc.cwnd == cc.ssthresh == 2 * MSS
    cc.on_ack(0.0, 1, None, 1)
    assert cc.cwnd <= 2 * MSS + 1


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["cubic", "newreno"]),
    st.lists(
        st.tuples(
            st.sampled_from(["ack", "loss", "rto", "exit", "idle"]),
            st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
            st.integers(min_value=-10, max_value=200_000),
            st.one_of(st.none(), st.floats(min_value=0, max_value=1, allow_nan=False)),
        ),
        max_size=80,
    ),
)
def test_windows_stay_sane(name: str, events: list[tuple[str, float, int, float | None]]) -> None:
    cc: CongestionControl = make_congestion_control(name, MSS)
    now = 0.0
    for kind, dt, amount, rtt in events:
        now += dt
        flight = max(amount, 0)
        if kind == "ack":
            before = cc.cwnd
            cc.on_ack(now, amount, rtt, flight)
            assert cc.cwnd >= before  # growth only outside loss events
            # Slow start (every byte acked, up to ssthresh), the 1.5x target clamp
            # and the Reno-friendly estimate (alpha <= 1 SMSS per window acked) bound
            # the growth per ACK; +2 for the rounding of the estimate and of cwnd to
            # whole bytes (hypothesis found cubic at 18513 against a floor-rounded
            # bound of 18512).
            reno = before + amount * MSS // max(before, 1) + 2
            assert cc.cwnd <= max(min(before + amount, max(cc.ssthresh, before)) + reno - before,
                                  int(1.5 * before) + 1, reno)
        elif kind == "loss":
            cc.on_congestion(now, flight)
            assert cc.ssthresh >= 2 * MSS and cc.cwnd == cc.ssthresh
        elif kind == "rto":
            cc.on_rto(now, flight)
            assert cc.cwnd == MSS and cc.ssthresh >= 2 * MSS
        elif kind == "exit":
            cc.on_recovery_exit(now)
        else:
            cc.on_idle(now, 1.0)
        assert cc.cwnd >= MSS
