"""An exhaustive model of the channel protocol's wake-up steps (docs/channels.md).

Each side of ``cffi_build/chan.h`` is written here as a small state machine whose
steps are the header's steps, one shared-memory access or one system call each. A
breadth-first search runs every interleaving of the service and one application
calling pattern and reports any state in which nobody can move before the transfer
ended: a lost wake-up. The C code orders each "store a flag, then read the other
side's index" pair with a sequentially consistent fence (the store-buffering litmus
test), so sequential consistency is the right model for these steps.

This is a model of the protocol, not a second implementation: it is what the header's
comments argue, checked. ``test_chan_model.py`` runs it, and also runs broken variants
(a step left out) to show that the search finds the lost wake-up each step prevents.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

# ---------------------------------------------------------------------------------
# Readable: bytes from the service to the application (the rx ring), tokens on the
# socket for readiness, EOF by rx_eof then shutdown(SHUT_WR).


@dataclass(frozen=True)
class Rx:
    # shared memory
    tail: int = 0
    head: int = 0
    rx_armed: int = 1  # a channel starts armed: the application may wait before any read
    rx_retoken: int = 0
    svc_rx_armed: int = 0  # the service waits for room: the application rings
    eof: int = 0
    # tokens_sent - tokens_taken (only the difference matters; it keeps the space finite)
    tokens_unseen: int = 0
    putting: int = 0  # rx_putting: the service is between a tail (or re-token) and its token
    put_end: int = 0  # rx_put_end: the tail that put publishes (or the re-token saw)
    # the socket
    tokens: int = 0  # tokens queued to the application
    sock_eof: int = 0  # the service shut down its writing side
    bells: int = 0  # bytes queued to the service (doorbells, re-token requests)
    # the service
    pushed: int = 0
    s_pc: str = "loop"
    # the application's calling pattern and its read() in progress
    a_pc: str = "call"
    got: int = 0  # bytes this read() took
    total: int = 0  # bytes the application has read
    guarded: bool = True  # a token is queued or owed for bytes left in the ring
    left: int = 0
    edge: int = 0  # an epoll edge not yet reported (EPOLLET)
    spurious: int = 0  # reads woken by readiness that found nothing
    done: bool = False


@dataclass(frozen=True)
class RxConfig:
    units: int = 3  # bytes the service delivers
    cap: int = 2  # rx ring capacity
    buf: int = 1  # the application's read size
    # "lt": one read per readiness; "et": read to EAGAIN; "block": blocking reads;
    # "select": one blocking read per level-triggered readiness (iperf3's control
    # connection), which sleeps for ever if the readiness was a stale token
    pattern: str = "lt"
    skip: frozenset[str] = field(default_factory=frozenset)  # steps left out (tests)


def _putting(c: RxConfig) -> int:
    """rx_putting's value while the service puts (0 in the variant without it)."""
    return 0 if "putting" in c.skip else 1


def _rx_service(s: Rx, c: RxConfig) -> Iterator[tuple[str, Rx]]:
    room = c.cap - (s.tail - s.head)
    if s.a_pc == "hung":
        return  # the application sleeps in a read nothing will end (a stale token)
    if s.s_pc in ("loop", "sleep") and s.bells:
        # Woken by the application's bytes: drain them, then the re-token request
        # (jr_chan_svc_answer_retoken: rx_putting, fence, take).
        yield "svc serve", replace(s, bells=0, s_pc="retoken_flag")
    if s.s_pc == "retoken_flag":
        yield "svc set putting", replace(s, putting=_putting(c), put_end=s.tail,
                                         s_pc="retoken")
    if s.s_pc == "retoken":
        yield "svc xchg retoken", replace(s, rx_retoken=0,
                                          s_pc="count" if s.rx_retoken else "unput")
    if s.s_pc == "loop":
        if s.pushed < c.units and room > 0:
            # jr_chan_svc_deliver: rx_putting, then copy and release the tail
            yield "svc push", replace(s, tail=s.tail + 1, pushed=s.pushed + 1,
                                      putting=_putting(c), put_end=s.tail + 1, s_pc="xchg")
        elif s.pushed < c.units:  # full: wait for room (svc_rx_armed, fence, recheck)
            if "svc_room_arm" in c.skip:
                yield "svc sleep (no arm)", replace(s, s_pc="sleep")
            else:
                yield "svc arm room", replace(s, svc_rx_armed=1, s_pc="room_recheck")
        elif not s.eof and s.total == c.units:
            # The peer's FIN comes only after the application read every byte (it
            # answers them first), so EOF cannot rescue a byte stuck behind a lost
            # wake-up: that byte is a deadlock here, as it is a hang in life.
            yield "svc eof", replace(s, eof=1, s_pc="shut")
    if s.s_pc == "room_recheck":
        yield "svc recheck room", replace(s, s_pc="loop" if room > 0 else "sleep")
    if s.s_pc == "xchg":  # fence; xchg(rx_armed, 0)
        yield "svc xchg armed", replace(
            s, rx_armed=0,
            s_pc="count" if s.rx_armed else "unput")
    if s.s_pc == "count":  # counted before the send: a reader never spins on a token
        yield "svc count token", replace(s, tokens_unseen=s.tokens_unseen + 1, s_pc="send")
    if s.s_pc == "send":
        yield "svc send token", replace(s, tokens=s.tokens + 1, edge=1, s_pc="unput")
    if s.s_pc == "unput":  # the token sent (or none owed): clear rx_putting (release)
        yield "svc put done", replace(s, putting=0, s_pc="loop")
    if s.s_pc == "shut":
        yield "svc shutdown", replace(s, sock_eof=1, edge=1, s_pc="loop")


def _readable(s: Rx) -> bool:
    return s.tokens > 0 or s.sock_eof == 1


def _rx_return(s: Rx, c: RxConfig, result: int) -> Rx:
    """The read returned: result bytes, 0 for EOF, -1 for EAGAIN."""
    if result == 0:
        return replace(s, a_pc="end", done=True)
    if result < 0:
        # EAGAIN: the LT and ET patterns wait again; a wake-up that found nothing
        # is a spurious one (counted, allowed).
        return replace(s, a_pc="wait", spurious=min(s.spurious + 1, 2))
    after = "read" if c.pattern in ("et", "block") else "wait"  # lt, select: wait
    return replace(s, total=s.total + result, a_pc=after)


def _rx_app(s: Rx, c: RxConfig) -> Iterator[tuple[str, Rx]]:
    avail = s.tail - s.head
    pc = s.a_pc
    if pc == "call":
        yield "app start", replace(s, a_pc="read" if c.pattern == "block" else "wait")
    elif pc == "wait":
        # epoll_wait: level-triggered on a queued token or EOF; edge-triggered on a
        # token or EOF that arrived since the last report.
        if (c.pattern == "et" and s.edge) or (c.pattern != "et" and _readable(s)):
            yield "app woken", replace(s, edge=0, a_pc="read")
    elif pc == "read":
        yield "app read()", replace(s, a_pc="r_check", got=0, guarded=True)
    elif pc == "r_check":  # chan_app_rx_take
        if avail > 0:
            k = min(avail, c.buf - s.got)
            yield "app take", replace(s, head=s.head + k, got=s.got + k, left=avail - k,
                                      a_pc="r_room")
        else:
            yield "app found empty", replace(s, a_pc="r_drain_check")
    elif pc == "r_room":  # fence; xchg(svc_rx_armed, 0): ring the service waiting for room
        if s.svc_rx_armed and "app_room_bell" not in c.skip:
            yield "app ring room", replace(s, svc_rx_armed=0, bells=s.bells + 1,
                                           a_pc="r_after_take")
        else:
            yield "app no room bell", replace(s, a_pc="r_after_take")
    elif pc == "r_after_take":
        if s.left > 0 and s.got == c.buf:
            if s.guarded or "retoken" in c.skip:
                yield "app return (left, guarded)", _rx_return(s, c, s.got)
            else:
                yield "app request retoken", replace(s, rx_retoken=1, a_pc="r_retoken_bell")
        elif s.left > 0:
            yield "app take more", replace(s, a_pc="r_check")
        elif "eager_arm" in c.skip:
            yield "app return (emptied, not armed)", _rx_return(s, c, s.got)
        else:
            yield "app emptied", replace(s, a_pc="r_drain_check")
    elif pc == "r_retoken_bell":
        yield "app ring retoken", _rx_return(replace(s, bells=s.bells + 1), c, s.got)
    elif pc == "r_drain_check":  # tokens_sent != tokens_taken: a token waits to be drained
        pending = s.tokens_unseen != 0
        yield "app token check", replace(s, a_pc="r_recv" if pending else "r_arm", guarded=False)
    elif pc == "r_recv":  # recv(MSG_DONTWAIT): every queued token
        yield "app drain", replace(s, tokens=0, tokens_unseen=s.tokens_unseen - s.tokens,
                                   a_pc="r_arm")
    elif pc == "r_arm":  # rx_armed = 1; fence
        yield "app arm", replace(s, rx_armed=1, a_pc="r_recheck")
    elif pc == "r_recheck":
        if avail > 0 and "recheck" not in c.skip:
            yield "app recheck: data", replace(s, a_pc="r_cancel")
        elif s.got > 0 and c.pattern in ("block", "select") and "settle" not in c.skip:
            yield "app settle", replace(s, a_pc="r_withdraw")
        elif s.got > 0:
            yield "app return (armed)", _rx_return(s, c, s.got)
        else:
            yield "app recheck: empty", replace(s, a_pc="r_eof")
    elif pc == "r_cancel":  # xchg(rx_armed, 0): 0 means the service took it, a token comes
        yield "app cancel arm", replace(s, rx_armed=0, guarded=s.rx_armed == 0,
                                        a_pc="r_check" if s.got < c.buf else "r_after_take",
                                        left=avail)
    elif pc == "r_withdraw":  # jr_chan_app_token_owed
        if avail > 0:  # bytes came since the recheck: readiness is true, nothing to settle
            yield "app return (bytes came)", _rx_return(s, c, s.got)
        else:  # withdraw a re-token not yet taken
            yield "app withdraw retoken", replace(s, rx_retoken=0, a_pc="r_owed")
    elif pc == "r_owed" and not (s.putting and s.put_end <= s.head):
        # jr_chan_app_wait_put: until rx_putting is 0, if this read took its bytes
        if s.tokens_unseen != 0:  # a token for bytes it took: round again, to drain it
            yield "app owed a token", replace(s, a_pc="r_check")
        else:
            yield "app return (settled)", _rx_return(s, c, s.got)
    elif pc == "r_eof":
        if s.eof:
            yield "app sees eof", replace(s, a_pc="r_eof_recheck")
        elif c.pattern == "select":
            # Woken by readiness, the blocking read found nothing: it sleeps, and the
            # peer, which waits for an answer, sends nothing more.
            yield "app blocks after readiness", replace(s, a_pc="hung")
        elif c.pattern == "block":
            yield "app poll", replace(s, a_pc="r_poll")
        else:
            yield "app EAGAIN", _rx_return(s, c, -1)
    elif pc == "r_eof_recheck":  # bytes stored before eof are seen after it
        if avail > 0:
            yield "app eof: bytes first", replace(s, a_pc="r_check")
        else:
            yield "app EOF", _rx_return(s, c, 0)
    elif pc == "r_poll" and _readable(s):
        # What woke the read (a token, or EOF) stays queued: bytes it leaves are
        # guarded again.
        yield "app poll woken", replace(s, a_pc="r_check", guarded=True)


def _rx_final(s: Rx, c: RxConfig) -> str | None:
    if s.a_pc == "hung":
        return "a blocking read woken by readiness found nothing: a stale token"
    if not s.done:
        return "the application waits for ever: a lost wake-up"
    if s.total != c.units:
        return f"EOF after {s.total} of {c.units} bytes"
    return None


# ---------------------------------------------------------------------------------
# Writable: bytes from the application to the service (the tx ring), the filler that
# makes the application's socket unwritable while the ring is full, doorbells.

FULL_QUEUE = 2  # bytes queued to the service that make the application's socket unwritable


@dataclass(frozen=True)
class Tx:
    tail: int = 0
    head: int = 0
    seen: int = 0  # the service's tx_seen: taken, in place while borrowed (head..seen)
    tx_armed: int = 0
    svc_tx_armed: int = 0
    tx_eof: int = 0
    queued: int = 0  # bytes (doorbells, filler) queued to the service
    hup: int = 0  # the application closed its socket
    s_pc: str = "loop"
    taken: int = 0  # bytes the service consumed
    a_pc: str = "call"
    put: int = 0  # bytes this write() put
    total: int = 0  # bytes the application has written
    eager: bool = False
    spurious: int = 0  # writability reported while the ring was full
    done: bool = False


@dataclass(frozen=True)
class TxConfig:
    units: int = 3
    cap: int = 2
    buf: int = 2  # the application's write size
    pattern: str = "block"  # "block", "nonblock" (EPOLLOUT after EAGAIN), "pollfirst"
    skip: frozenset[str] = field(default_factory=frozenset)
    # Borrowed (dataplane.c, snd_borrow): the service takes tx's bytes in place
    # (jr_chan_svc_tx_peek) and gives their space back a byte at a time, whenever ACKs
    # come (jr_chan_svc_tx_release), waking the writer only once min_room is free.
    borrow: bool = False
    min_room: int = 0
    hold_cap: int = 99  # TCP's send buffer: the most it holds in place (snd.cap)


def _writable(s: Tx) -> bool:
    return s.queued < FULL_QUEUE


def _tx_service(s: Tx, c: TxConfig) -> Iterator[tuple[str, Tx]]:
    avail = s.tail - s.seen
    held = s.seen - s.head  # taken in place, not yet acknowledged
    if s.s_pc == "loop" and held > 0:  # an ACK, at any time: give one byte back
        yield "svc ACK gives back", replace(s, head=s.head + 1, s_pc="room")
    if s.s_pc == "loop":
        if avail > 0 and c.borrow and held < c.hold_cap:
            # chan_svc_tx_peek: take in place, up to the send buffer; keep the space
            k = min(avail, c.hold_cap - held)
            yield "svc take in place", replace(s, seen=s.seen + k, taken=s.taken + k)
        elif avail > 0 and not c.borrow:  # chan_svc_tx_take: copy out, release head
            yield "svc consume", replace(s, head=s.tail, seen=s.tail,
                                         taken=s.taken + avail, s_pc="xchg")
        elif s.hup and s.tx_eof and held == 0 and avail == 0:
            yield "svc done", replace(s, s_pc="done")
        elif c.borrow and held >= c.hold_cap:
            # The send buffer is full: no wait for bytes (chan_arm), so no drain and no
            # svc_tx_armed; an ACK wakes it.
            yield "svc sleeps for ACKs", replace(s, s_pc="sleep")
        else:
            # Going to sleep for bytes: drain what the application queued (the ring was
            # empty, so the filler there stood for a ring since emptied), arm, recheck.
            yield "svc found empty", replace(s, s_pc="z_drain")
    elif s.s_pc == "room":  # fence; look at tail: wake the writer only past min_room
        if c.cap - (s.tail - s.head) >= c.min_room:
            yield "svc room to wake for", replace(s, s_pc="xchg")
        else:
            yield "svc room below the mark", replace(s, s_pc="loop")
    elif s.s_pc == "z_drain":
        yield "svc drain bells", replace(s, queued=0, s_pc="arm")
    elif s.s_pc == "xchg":  # fence; xchg(tx_armed, 0): drain the filler after making room
        if s.tx_armed and "svc_drain" not in c.skip:
            yield "svc take tx arm", replace(s, tx_armed=0, s_pc="drain")
        else:
            yield "svc no tx arm", replace(s, s_pc="loop")
    elif s.s_pc == "drain":
        yield "svc drain filler", replace(s, queued=0, s_pc="loop")
    elif s.s_pc == "arm":
        yield "svc arm", replace(s, svc_tx_armed=1, s_pc="recheck")
    elif s.s_pc == "recheck":
        if avail > 0 and "svc_recheck" not in c.skip:
            yield "svc recheck: bytes", replace(s, s_pc="loop")
        else:
            yield "svc sleep", replace(s, s_pc="sleep")
    elif s.s_pc == "sleep" and (s.queued > 0 or s.hup):  # epoll: bytes or EOF
        yield "svc woken", replace(s, s_pc="loop")
    elif s.s_pc == "sleep" and held > 0:  # the network: an ACK for bytes held
        yield "svc woken by an ACK", replace(s, s_pc="loop")


def _tx_return(s: Tx, c: TxConfig, result: int) -> Tx:
    if result < 0:
        return replace(s, a_pc="pollout")
    total = s.total + result
    if total >= c.units:
        return replace(s, total=total, a_pc="shut")
    return replace(s, total=total, a_pc="pollout" if c.pattern == "pollfirst" else "write")


def _tx_app(s: Tx, c: TxConfig) -> Iterator[tuple[str, Tx]]:
    room = c.cap - (s.tail - s.head)
    pc = s.a_pc
    want = min(c.buf, c.units - s.total)
    if pc == "call":
        yield "app start", replace(s, a_pc="pollout" if c.pattern == "pollfirst" else "write")
    elif pc == "pollout":  # poll(POLLOUT) / epoll EPOLLOUT: the socket writable
        if _writable(s):
            full = room == 0
            yield "app writable", replace(s, a_pc="write", spurious=min(s.spurious + full, 2))
    elif pc == "write":
        yield "app write()", replace(s, a_pc="w_check", put=0, eager=False)
    elif pc == "w_check":
        if room > 0:
            k = min(room, want - s.put)
            yield "app put", replace(s, tail=s.tail + k, put=s.put + k, a_pc="w_bell",
                                     eager=room == k)
        else:
            yield "app found full", replace(s, a_pc="w_fill", eager=False)
    elif pc == "w_bell":  # fence; xchg(svc_tx_armed, 0): ring the sleeping service
        if s.svc_tx_armed and "app_bell" not in c.skip:
            bell = min(s.queued + 1, FULL_QUEUE)  # EAGAIN on a full socket: bytes wait already
            yield "app ring", replace(s, svc_tx_armed=0, queued=bell, a_pc="w_after")
        else:
            yield "app no bell", replace(s, a_pc="w_after")
    elif pc == "w_after":
        if s.put < want:
            yield "app put more", replace(s, a_pc="w_check")
        elif s.eager and "eager_fill" not in c.skip:
            yield "app filled the ring", replace(s, a_pc="w_fill")
        else:
            yield "app return", _tx_return(s, c, s.put)
    elif pc == "w_fill":  # bursts of filler until EAGAIN, or until tx has room again
        yield "app fill", replace(s, queued=FULL_QUEUE, a_pc="w_arm")
        if room > 0:  # jr_chan_app_fill's look between bursts (a service draining)
            yield "app fill stops: room", replace(s, a_pc="w_arm")
    elif pc == "w_arm":  # tx_armed = 1; fence
        yield "app arm", replace(s, tx_armed=1, a_pc="w_recheck")
    elif pc == "w_recheck":
        if s.put > 0:  # the eager fill after a write that filled the ring
            yield "app return (filled)", _tx_return(s, c, s.put)
        elif room > 0 and "app_recheck" not in c.skip:
            yield "app recheck: room", replace(s, a_pc="w_check")
        else:
            yield "app EAGAIN / block", _tx_return(s, c, -1)
    elif pc == "shut":  # all written and answered (the service took it all): close
        if s.taken == c.units:
            yield "app tx_eof", replace(s, tx_eof=1, a_pc="close")
    elif pc == "close":
        yield "app close", replace(s, hup=1, a_pc="end", done=True)


def _tx_final(s: Tx, c: TxConfig) -> str | None:
    if not s.done:
        return "the application waits for ever to write: a lost wake-up"
    if s.s_pc != "done":
        return "the service sleeps with bytes in the ring: a lost doorbell"
    if s.taken != c.units:
        return f"the service took {s.taken} of {c.units} bytes"
    return None


# ---------------------------------------------------------------------------------


@dataclass
class Result:
    states: int
    failure: str | None
    trace: list[str]
    max_spurious: int


def explore(start: object, config: object,
            sides: tuple[Callable[..., Iterator[tuple[str, object]]], ...],
            final: Callable[..., str | None], limit: int = 2_000_000,
            invariant: Callable[..., str | None] | None = None) -> Result:
    """Every interleaving from start. Fails on a state invariant rejects (checked on
    each state as it is reached: a lost wake-up found the moment it happens), on a
    terminal state that final rejects (a deadlock: nobody can move) and on a state from
    which no good end is reachable at all (a livelock: moves remain, but none of them
    leads out)."""
    parent: dict[object, tuple[object, str] | None] = {start: None}
    preds: dict[object, list[object]] = {start: []}
    queue: deque[object] = deque([start])
    good: list[object] = []
    spurious = 0

    def trace_to(state: object) -> list[str]:
        labels: list[str] = []
        at = state
        while (p := parent[at]) is not None:
            at, label = p
            labels.append(label)
        return labels[::-1]

    while queue:
        state = queue.popleft()
        spurious = max(spurious, getattr(state, "spurious", 0))
        why = invariant(state, config) if invariant is not None else None
        if why is not None:
            return Result(len(parent), why, trace_to(state), spurious)
        moves = [m for side in sides for m in side(state, config)]
        if not moves:
            why = final(state, config)
            if why is not None:
                return Result(len(parent), why, trace_to(state), spurious)
            good.append(state)
        for label, nxt in moves:
            if nxt not in parent:
                parent[nxt] = (state, label)
                preds[nxt] = []
                queue.append(nxt)
            preds[nxt].append(state)
        if len(parent) > limit:
            raise RuntimeError("state space larger than the limit")
    # Livelock: every reachable state must be able to reach a good end.
    ends_reachable = set(good)
    back = deque(good)
    while back:
        for p in preds[back.popleft()]:
            if p not in ends_reachable:
                ends_reachable.add(p)
                back.append(p)
    for state in parent:
        if state not in ends_reachable:
            return Result(len(parent), "no way out: a livelock", trace_to(state), spurious)
    return Result(len(parent), None, [], spurious)


def check_rx(config: RxConfig) -> Result:
    return explore(Rx(), config, (_rx_service, _rx_app), _rx_final)


def check_tx(config: TxConfig) -> Result:
    return explore(Tx(), config, (_tx_service, _tx_app), _tx_final)


# ---------------------------------------------------------------------------------
# The door (embedded mode, chan.h's struct jr_door): the application's writes and its
# shutdown make a sleeping service look by ringing one eventfd for the process, written
# only by the first ring after the service armed it. The service polls the flow while
# it runs (ringpoll_scan), and before it sleeps arms the door, then the channel's flag
# (svc_tx_armed), then looks again at tx (and at tx_eof: the review's finding).


@dataclass(frozen=True)
class Door:
    # shared memory
    tail: int = 0  # tx bytes the application wrote
    head: int = 0  # tx bytes the service took
    tx_eof: int = 0
    svc_tx_armed: int = 0
    door_armed: int = 0
    efd: int = 0  # the eventfd's count
    # the service: "scan" polls; then arms and looks again; "sleep" waits for efd
    s_pc: str = "scan"
    finished: bool = False  # the service took every byte and the EOF
    # the application: writes `units` bytes, then shuts down writing
    a_pc: str = "write"
    written: int = 0


@dataclass(frozen=True)
class DoorConfig:
    units: int = 2
    skip: frozenset[str] = field(default_factory=frozenset)  # steps left out (tests)


def _door_service(s: Door, c: DoorConfig) -> Iterator[tuple[str, Door]]:
    if s.finished:
        return
    if s.s_pc == "scan":  # ringpoll_scan / chan_read: take what tx holds, or its EOF
        if s.tail > s.head:
            yield "svc take", replace(s, head=s.tail)
        elif s.tx_eof:
            yield "svc eof", replace(s, finished=True)
        else:
            nxt = "chan_arm" if "door_arm" in c.skip else "door_arm"
            yield "svc settle", replace(s, s_pc=nxt)
    elif s.s_pc == "door_arm":  # jr_door_arm: store, fence
        yield "svc arm door", replace(s, door_armed=1, s_pc="chan_arm")
    elif s.s_pc == "chan_arm":  # jr_chan_svc_tx_wait: store, fence
        yield "svc arm tx", replace(s, svc_tx_armed=1, s_pc="recheck")
    elif s.s_pc == "recheck":  # look again: bytes, then (the fix) tx_eof
        eof_seen = s.tx_eof and "eof_recheck" not in c.skip
        if s.tail > s.head or eof_seen:
            yield "svc work after arming", replace(s, s_pc="scan")
        else:
            yield "svc sleep", replace(s, s_pc="sleep")
    elif s.s_pc == "sleep" and s.efd > 0:  # TAG_DOOR: door_rung puts the flow back
        yield "svc woken", replace(s, efd=0, s_pc="scan")


def _door_ring(s: Door) -> Door:
    """jr_door_ring: xchg(armed, 0); the eventfd write if it was armed."""
    return replace(s, door_armed=0, efd=s.efd + s.door_armed)


def _door_app(s: Door, c: DoorConfig) -> Iterator[tuple[str, Door]]:
    if s.a_pc == "write" and s.written < c.units:
        yield "app put", replace(s, tail=s.tail + 1, written=s.written + 1, a_pc="xchg")
    elif s.a_pc == "write":
        yield "app shut down", replace(s, tx_eof=1, a_pc="ring_eof")
    elif s.a_pc == "xchg":  # jr_chan_write: xchg(svc_tx_armed), the bell if it was set
        if s.svc_tx_armed:
            yield "app took the arm", _door_ring(replace(s, svc_tx_armed=0, a_pc="write"))
        else:
            yield "app no arm", replace(s, a_pc="write")
    elif s.a_pc == "ring_eof":  # jr_chan_shutdown_write: the bell, always
        yield "app rings for eof", replace(_door_ring(s), a_pc="done")


def _door_final(s: Door, c: DoorConfig) -> str | None:
    if s.finished and s.head == c.units:
        return None
    return f"lost wake-up: service {s.s_pc}, {s.tail - s.head} bytes in tx, eof {s.tx_eof}"


def check_door(config: DoorConfig) -> Result:
    return explore(Door(), config, (_door_service, _door_app), _door_final)
