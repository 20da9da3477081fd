"""An exhaustive model of the arena's bell (docs/channels.md, "Service mode: the process's
bell"), as chan_model.py is of the channel's tokens.

The service's side is ``jr_chan_svc_deliver`` (``cffi_build/chan.h``): publish the bytes
(``jr_chan_svc_rx_put``), fence, take every bit of ``rx_armed`` at once; for a bell arm
push the slot on the arena's bell, fence, take the bell's ``armed`` and write one byte
on the door if it was set (``jr_arena_bell_ring``); for any other bit count and send a
token. The application's side is one thread of an event loop on one registration of the
connection (level- or edge-triggered), in the shim's ``epoll_wait`` (``jr_bell_wait``,
``jr_bell_harvest`` in ``preload/joyride_epoll.c``) and its reads (``jr_chan_read``,
with the shim's ``jr_bell_unseen`` as ``io->unseen``). Each step is one shared-memory
access or one system call; the fenced store-then-look pairs make sequential consistency
the right model (chan_model.py says why), except in the one broken variant that leaves
out the service's fence (``svc_fence``: its look at ``armed`` goes before its push).

A breadth-first search runs every interleaving of a bounded number of arrivals and
checks three things:

- no reachable state has the application asleep in the kernel with bytes in rx, no
  byte on the door, no token on the socket that the kernel would report, and the
  service done (a lost wake-up, found the moment it happens);
- every state where nobody can move has every byte read (no other deadlock);
- from every reachable state such an end can still be reached (no livelock).

``test_bell_model.py`` runs it, and runs broken variants (a step left out) to show the
search finds the lost wake-up each step prevents. What it shows besides: the bell arm is
sticky (only the service's take, which pushes, and a read's cancel of its own arm clear
it), so the arms overlap. The read's look after its arm matters only for a read no
harvest armed for (one a token announced); the harvest's arm of an empty entry only
from a start with no arm, or when the application also reads without an event (then a
push can stand for bytes a read already took); the ET report's arm never alone (the
reads to EAGAIN arm after it).

Not modelled: the queue's overflow (``lost``: the queue holds every push here), rx's
EOF and room (rx holds every arrival), the bell turned off, a second thread (the shim
turns the bell off for a set two threads wait on), blocking reads and ``poll``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from chan_model import Result, explore

TOKEN = 1  # JR_RX_ARM_TOKEN
BELL = 2  # JR_RX_ARM_BELL

# Steps a broken variant leaves out (BellConfig.skip).
SKIPS = {
    "sleep_relook": "the wait arms the bell and sleeps without looking at the queue again",
    "read_relook": "a read that found rx empty arms the bell and returns without looking "
                   "at rx again",
    "harvest_arm": "the harvest unlists an empty slot without arming the bell",
    "svc_fence": "the service looks at the bell's armed before its push is visible",
    "lt_as_et": "a level-triggered entry leaves the ready list when reported (as ET)",
    "et_report_arm": "an edge-triggered entry leaves the ready list when reported without "
                     "arming the bell",
}


@dataclass(frozen=True)
class Bell:
    # shared memory: the channel
    tail: int = 0  # rx bytes the service published
    head: int = 0  # rx bytes the application took
    rx_armed: int = TOKEN  # bits: TOKEN, BELL
    unseen: int = 0  # tokens_sent - tokens_taken (the service counts before it sends)
    # shared memory: the arena's bell
    queue: int = 0  # slots pushed and not yet taken
    armed: int = 0  # the bell's armed word: the application sleeps (or is about to)
    # the kernel
    door: int = 0  # wake bytes queued on the door (registered level-triggered)
    tokens: int = 0  # tokens queued on the connection's socket
    edge: int = 0  # a token came since the kernel last reported the socket (EPOLLET)
    # the service
    sent: int = 0  # arrivals published
    s_todo: tuple[str, ...] = ()  # this arrival's steps still to take
    # the application: the shim's state (under its lock) and the thread's
    listed: bool = False  # the entry is on the ready list
    a_pc: str = "h_take"
    n: int = 0  # events this harvest reported (0 or 1: one registration)
    second: bool = False  # the harvest after the door rang (jr_bell_wait's "more")
    k_door: bool = False  # the kernel's events: the door's
    k_sock: bool = False  # ... and the socket's (a token's EPOLLIN)
    got: int = 0  # bytes this read took
    guarded: bool = True  # jr_chan_read's guarded
    total: int = 0  # bytes the application has read


@dataclass(frozen=True)
class BellConfig:
    units: int = 2  # arrivals, one byte each
    buf: int = 1  # the application's read size
    trigger: str = "lt"  # the registration: "lt" (one read per event) or "et" (to EAGAIN)
    max_events: int = 2  # epoll_wait's maxevents
    # Where it starts (rx empty): "fresh", a new channel (token-armed) just registered,
    # so listed (jr_bell_ctl marks it); "early", the same, but a harvest already looked
    # at it before the ring was in ring mode and unlisted it unarmed ("tokens announce
    # it"); "bell", a read emptied rx and armed the bell (unlisted), which is also a
    # channel born armed for the bell that a harvest looked at before its verdict
    # (chan.h's birth_arm); "born", a channel born armed for the bell, still listed by
    # its registration; "unarmed", listed with no arm at all: the registration's mark,
    # and the harvest's arm after it, are all that can announce the first arrival.
    start: str = "fresh"
    # The application may also read before any wait (a client that reads its answer
    # right after writing its request), not only after an event.
    eager: bool = False
    skip: frozenset[str] = field(default_factory=frozenset)  # steps left out (tests)


def initial(c: BellConfig) -> Bell:
    arms = {"fresh": (TOKEN, True), "early": (TOKEN, False), "bell": (BELL, False),
            "born": (BELL, True), "unarmed": (0, True)}
    rx_armed, listed = arms[c.start]
    return Bell(rx_armed=rx_armed, listed=listed, a_pc="call" if c.eager else "h_take")


def _sock_ready(s: Bell, c: BellConfig) -> bool:
    """The kernel reports the socket's EPOLLIN: a token queued (LT) or one new (ET)."""
    return bool(s.edge) if c.trigger == "et" else s.tokens > 0


def _service_done(s: Bell, c: BellConfig) -> bool:
    return s.sent == c.units and not s.s_todo


# ---------------------------------------------------------------------------------
# The service: jr_chan_svc_deliver, one arrival at a time.


def _service(s: Bell, c: BellConfig) -> Iterator[tuple[str, Bell]]:
    if not s.s_todo:
        if s.sent < c.units:  # copy in, release tail
            yield "svc put", replace(s, tail=s.tail + 1, sent=s.sent + 1, s_todo=("xchg",))
        return
    step, rest = s.s_todo[0], s.s_todo[1:]
    if step == "xchg":  # fence; a = xchg(rx_armed, 0)
        a = s.rx_armed
        todo: tuple[str, ...] = ()
        if a & BELL:  # jr_arena_bell_ring
            if "svc_fence" in c.skip:
                todo += ("bell_xchg", "door", "push")
            else:
                todo += ("push", "bell_xchg", "door")
        if a & ~BELL:  # jr_chan_svc_send_token: counted, then sent
            todo += ("count", "send")
        yield f"svc xchg rx_armed={a}", replace(s, rx_armed=0, s_todo=todo)
    elif step == "push":  # jr_slotq_push: the slot, then tail (release)
        yield "svc push", replace(s, queue=s.queue + 1, s_todo=rest)
    elif step == "bell_xchg":  # fence; xchg(bell.armed, 0): the door only if it was set
        if s.armed:
            yield "svc take bell arm", replace(s, armed=0, s_todo=rest)
        else:
            yield "svc bell not armed", replace(s, s_todo=tuple(t for t in rest if t != "door"))
    elif step == "door":
        yield "svc write door", replace(s, door=s.door + 1, s_todo=rest)
    elif step == "count":
        yield "svc count token", replace(s, unseen=s.unseen + 1, s_todo=rest)
    elif step == "send":
        yield "svc send token", replace(s, tokens=s.tokens + 1, edge=1, s_todo=rest)


# ---------------------------------------------------------------------------------
# The application: jr_bell_wait (with jr_bell_harvest) until it returns an event, then
# the reads the registration asks for, then jr_bell_wait again.


def _report(s: Bell, c: BellConfig, label: str) -> Iterator[tuple[str, Bell]]:
    """The harvest found bytes: an event; an ET entry leaves the list and arms again."""
    if c.trigger == "et" or "lt_as_et" in c.skip:
        nxt = "h_done" if "et_report_arm" in c.skip else "h_et_arm"
        yield f"{label}, report, unlist", replace(s, n=1, listed=False, a_pc=nxt)
    else:
        yield f"{label}, report (stays listed)", replace(s, n=1, a_pc="h_done")


def _after_harvest(s: Bell, c: BellConfig) -> tuple[str, Bell]:
    if s.second:  # the events merged after the door: return them, or wait again
        if s.n or s.k_sock:
            return "app epoll_wait returns", _read_start(s)
        return "app only the door: wait again", _wait_start(s)
    if s.n == 0:  # about to sleep: arm the bell, look again (jr_arena_bell_arm)
        return "app found nothing", replace(s, a_pc="w_arm")
    if s.n == c.max_events:  # maxevents 1, and the bell had one
        return "app epoll_wait returns (bell only)", _read_start(s)
    return "app poll the kernel", replace(s, a_pc="k_poll")


def _wait_start(s: Bell, pc: str = "h_take") -> Bell:
    """jr_bell_wait's loop from its top (pc "call": a new epoll_wait, eager reads only)."""
    return replace(s, a_pc=pc, n=0, second=False, k_door=False, k_sock=False)


def _read_start(s: Bell) -> Bell:
    return replace(s, a_pc="r_look", got=0, guarded=True, n=0, second=False,
                   k_door=False, k_sock=False)


def _kernel_returns(s: Bell, c: BellConfig, slots: int) -> Iterator[tuple[bool, bool]]:
    """The kernel's events: up to slots of the ready ones, any of them (its ready list
    turns); the rest stay ready."""
    ready = [w for w, on in (("door", s.door > 0), ("sock", _sock_ready(s, c))) if on]
    if len(ready) <= slots:
        yield "door" in ready, "sock" in ready
    else:
        for w in ready:
            yield w == "door", w == "sock"


def _woken(s: Bell, c: BellConfig, door: bool, sock: bool, label: str) -> tuple[str, Bell]:
    edge = 0 if sock and c.trigger == "et" else s.edge
    what = "+".join(w for w, on in (("door", door), ("sock", sock)) if on) or "nothing"
    return f"{label}: {what}", replace(s, k_door=door, k_sock=sock, edge=edge, a_pc="k_disarm")


def _return(s: Bell, c: BellConfig, got: int) -> Bell:
    """jr_chan_read returned got bytes (0: EAGAIN)."""
    s = replace(s, total=s.total + got)
    if c.trigger == "et" and got > 0:
        return replace(s, a_pc="r_start")  # edge-triggered: read again, to EAGAIN
    return _wait_start(s, "call" if c.eager else "h_take")


def _app(s: Bell, c: BellConfig) -> Iterator[tuple[str, Bell]]:
    avail = s.tail - s.head
    pc = s.a_pc
    # -- jr_bell_harvest (under the shim's lock; the service runs on meanwhile)
    if pc == "call":  # between two epoll_waits (BellConfig.eager): read, or wait
        yield "app reads before waiting", _read_start(s)
        yield "app epoll_wait()", replace(s, a_pc="h_take")
    elif pc == "h_take":  # jr_arena_bell_take: every pushed slot onto the ready list
        yield "app take queue", replace(s, queue=0, listed=s.listed or s.queue > 0, a_pc="h_look")
    elif pc == "h_look":
        if not s.listed:
            yield "app harvest: not listed", replace(s, a_pc="h_done")
        elif avail > 0:
            yield from _report(s, c, "app harvest: bytes")
        elif "harvest_arm" in c.skip:
            yield "app harvest: empty, unlist (not armed)", replace(s, listed=False, a_pc="h_done")
        else:
            yield "app harvest: empty", replace(s, a_pc="h_arm")
    elif pc == "h_arm":  # fetch_or(rx_armed, BELL); fence
        yield "app harvest arms", replace(s, rx_armed=s.rx_armed | BELL, a_pc="h_relook")
    elif pc == "h_relook":
        if avail > 0:
            yield from _report(s, c, "app harvest relook: bytes")
        else:
            yield "app harvest relook: empty, unlist", replace(s, listed=False, a_pc="h_done")
    elif pc == "h_et_arm":  # an ET entry, reported: fetch_or(rx_armed, BELL)
        yield "app harvest arms (ET)", replace(s, rx_armed=s.rx_armed | BELL, a_pc="h_done")
    elif pc == "h_done":
        yield _after_harvest(s, c)
    # -- jr_bell_wait
    elif pc == "w_arm":  # jr_slotq_arm: armed = 1; fence
        nxt = "k_sleep" if "sleep_relook" in c.skip else "w_look"
        yield "app arm bell", replace(s, armed=1, a_pc=nxt)
    elif pc == "w_look":  # ... and look at the queue again
        if s.queue > 0:
            yield "app arm: queue not empty, harvest again", replace(s, a_pc="h_take")
        else:
            yield "app sleep", replace(s, a_pc="k_sleep")
    elif pc == "k_sleep":  # real_epoll_wait, blocking: the door or the socket wakes it
        for door, sock in _kernel_returns(s, c, c.max_events):
            if door or sock:
                yield _woken(s, c, door, sock, "app woken")
    elif pc == "k_poll":  # real_epoll_wait(0) with the rest of the caller's array
        for door, sock in _kernel_returns(s, c, c.max_events - s.n):
            yield _woken(s, c, door, sock, "app kernel polled")
    elif pc == "k_disarm":  # awake: armed = 0
        yield "app disarm bell", replace(s, armed=0, a_pc="k_merge")
    elif pc == "k_merge":  # jr_events_merge: drain the door if it was reported
        left = 0 if s.k_door else s.door
        total = 1 if (s.n or s.k_sock) else 0
        label = "app drain door" if s.k_door else "app merge"
        if s.k_door and s.n == 0 and total < c.max_events:  # the bell rang: its pushes
            yield f"{label}, harvest", replace(s, door=left, second=True, a_pc="h_take")
        elif total > 0:
            yield f"{label}, epoll_wait returns", _read_start(replace(s, door=left))
        else:  # only the door and nothing to report: again
            yield f"{label}, wait again", _wait_start(replace(s, door=left))
    # -- jr_chan_read
    elif pc == "r_start":
        yield "app read()", _read_start(s)
    elif pc == "r_look":
        if avail > 0:
            k = min(c.buf - s.got, avail)
            took = replace(s, head=s.head + k, got=s.got + k)
            if avail > k and s.guarded:  # the buffer is full, bytes remain: announced
                yield "app take, return (bytes left)", _return(took, c, took.got)
            elif avail > k:
                yield "app take, bytes left unseen", replace(took, a_pc="r_unseen")
            else:
                yield "app take all", replace(took, a_pc="r_drain")
        else:
            yield "app found empty", replace(s, a_pc="r_drain")
    elif pc == "r_drain":  # tokens_sent != tokens_taken: recv the queued ones
        nxt = "r_recv" if s.unseen != 0 else "r_arm"
        yield "app token count", replace(s, guarded=False, a_pc=nxt)
    elif pc == "r_recv":
        yield "app drain tokens", replace(s, tokens=0, unseen=s.unseen - s.tokens, a_pc="r_arm")
    elif pc == "r_arm":  # fetch_or(rx_armed, BELL); fence
        armed = replace(s, rx_armed=s.rx_armed | BELL)
        if "read_relook" in c.skip:
            yield "app read arms, returns", _return(armed, c, s.got)
        else:
            yield "app read arms", replace(armed, a_pc="r_relook")
    elif pc == "r_relook":
        if avail > 0:
            yield "app read relook: bytes", replace(s, a_pc="r_cancel")
        else:
            yield "app read relook: empty, return", _return(s, c, s.got)
    elif pc == "r_cancel":  # x = fetch_and(rx_armed, ~BELL): BELL in x, it was ours
        ours = bool(s.rx_armed & BELL)
        cancelled = replace(s, rx_armed=s.rx_armed & ~BELL, guarded=not ours)
        if s.got < c.buf:
            yield "app cancel arm, take more", replace(cancelled, a_pc="r_look")
        elif ours:
            yield "app cancel own arm, bytes unseen", replace(cancelled, a_pc="r_unseen")
        else:
            yield "app arm taken (a push comes), return", _return(cancelled, c, s.got)
    elif pc == "r_unseen":  # jr_bell_unseen: the entry onto the ready list
        yield "app mark listed, return", _return(replace(s, listed=True), c, s.got)


# ---------------------------------------------------------------------------------


def lost_wakeup(s: Bell, c: BellConfig) -> bool:
    """The invariant's breach: asleep with bytes in rx and nothing left to wake it."""
    return (s.a_pc == "k_sleep" and s.tail > s.head and s.door == 0
            and not _sock_ready(s, c) and _service_done(s, c))


def _final(s: Bell, c: BellConfig) -> str | None:
    if s.total != c.units:
        return f"deadlock: {s.total} of {c.units} bytes read, application at {s.a_pc}"
    return None


def _invariant(s: Bell, c: BellConfig) -> str | None:
    if lost_wakeup(s, c):
        return "lost wake-up: asleep with bytes in rx, no door byte, no token, the service done"
    return None


def check(config: BellConfig, limit: int = 1_000_000) -> Result:
    """chan_model's search over every interleaving, with the lost wake-up checked on
    each state as it is reached."""
    bad = SKIPS.keys() & config.skip
    if bad != config.skip:
        raise ValueError(f"unknown steps: {sorted(config.skip - bad)}")
    return explore(initial(config), config, (_service, _app), _final, limit, _invariant)
