"""``joyride ss [IFACE] [-l|-a] [-i] [-p] [--json] [--state S] [--port N]``: Joyride's
connections and listeners, as ``ss -tnip`` shows the kernel's.

Any user may read the table, as anyone may run ``ss`` (``control.READ_ONLY``); the rows
come from the service (``joyride.service.sockettable``), the program names from /proc
here, as ``ss -p`` finds them: a process the caller may not see shows its pid only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from joyride.errors import JoyrideError

SS_STATES: Final = ("ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2",
                    "TIME-WAIT", "UNCONN", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING")
# Other spellings a user may give --state (RFC 9293's and ss's own aliases).
_ALIASES: Final = {"ESTABLISHED": "ESTAB", "SYN-RECEIVED": "SYN-RECV", "LISTENING": "LISTEN",
                   "CLOSED": "UNCONN", "CLOSE": "UNCONN"}
# ss's state groups (`ss state connected`, `state synchronized`, `state all`).
_GROUPS: Final = {
    "ALL": frozenset(SS_STATES),
    "CONNECTED": frozenset(SS_STATES) - {"LISTEN", "UNCONN"},
    "SYNCHRONIZED": frozenset(SS_STATES) - {"LISTEN", "UNCONN", "SYN-SENT"},
}


class NothingAttached(JoyrideError):
    exit_code = 3


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ss", help="Joyride's connections and listeners, like `ss -tnip`")
    parser.add_argument("ifname", metavar="IFACE", nargs="?", default=None,
                        help="one interface (default: every attached one here)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("-l", "--listening", action="store_true", help="listeners only")
    which.add_argument("-a", "--all", action="store_true", help="listeners and connections")
    parser.add_argument("-i", "--info", action="store_true",
                        help="TCP internals (cwnd, rtt, rto, retransmissions, ...)")
    parser.add_argument("-p", "--processes", action="store_true",
                        help="the owning process (pid, program)")
    parser.add_argument("-n", "--numeric", action="store_true",
                        help="accepted for ss's sake: addresses are always numeric")
    parser.add_argument("-t", "--tcp", action="store_true",
                        help="accepted for ss's sake: Joyride's sockets are all TCP")
    parser.add_argument("--state", action="append", default=[], metavar="STATE",
                        help="only sockets in STATE (ss's names, e.g. established, "
                             "time-wait, listening; or connected, synchronized, all); "
                             "repeatable")
    parser.add_argument("--port", type=int, action="append", default=[], metavar="N",
                        help="only sockets with local or peer port N; repeatable")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from joyride.service import client, control

    states = wanted_states(args.state, listening=args.listening, everything=args.all)
    rows: list[dict[str, Any]] = []
    omitted = 0
    for ifname in _interfaces(args.ifname):
        reply = client.ask(ifname, {"op": "sockets", "info": bool(args.info)},
                           max_reply=control.MAX_REPLY)
        omitted += int(reply.get("omitted", 0))
        rows += [{**row, "ifname": ifname} for row in reply["sockets"]]
    rows = select(rows, states, set(args.port))
    if args.processes:
        for row in rows:
            row["program"] = program_name(row.get("pid"))
    if args.json:
        print(json.dumps(rows, sort_keys=True))
    else:
        for line in format_table(rows, info=args.info, processes=args.processes):
            print(line)
    if omitted:
        print(f"joyride: {omitted} more sockets not shown (the service's reply is "
              "capped)", flush=True)
    return 0


def _interfaces(ifname: str | None) -> list[str]:
    if ifname:
        return [ifname]
    from joyride.claim.statedir import StateDir

    try:
        names = [d.ifname for d in StateDir.all_in_netns()]
    except PermissionError as exc:
        raise NothingAttached("cannot list the attached interfaces as this user: "
                              "name one (joyride ss IFACE)") from exc
    if not names:
        raise NothingAttached("no Joyride service is attached in this network namespace")
    return names


def wanted_states(names: Iterable[str], *, listening: bool, everything: bool
                  ) -> frozenset[str]:
    """The ss states to show: ``--state`` names if given, else as ss's -l/-a say."""
    chosen: set[str] = set()
    for raw in names:
        name = raw.strip().upper().replace("_", "-")
        name = _ALIASES.get(name, name)
        if name in _GROUPS:
            chosen |= _GROUPS[name]
        elif name in SS_STATES:
            chosen.add(name)
        else:
            raise JoyrideError(f"unknown state {raw!r} (one of {', '.join(SS_STATES)}, "
                               "or connected, synchronized, all)")
    if chosen:
        return frozenset(chosen)
    if listening:
        return frozenset({"LISTEN"})
    return _GROUPS["ALL"] if everything else _GROUPS["CONNECTED"]


def select(rows: list[dict[str, Any]], states: frozenset[str], ports: set[int]
           ) -> list[dict[str, Any]]:
    def port_of(addr: str) -> int | None:
        tail = addr.rpartition(":")[2]
        return int(tail) if tail.isdigit() else None

    return [row for row in rows if row["state"] in states and (
        not ports or port_of(row["local"]) in ports or port_of(row["peer"]) in ports)]


def program_name(pid: int | None, proc: Path = Path("/proc")) -> str | None:
    """The program's name, as ``ss -p`` prints it, or None if it is not visible."""
    if not pid:
        return None
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def format_table(rows: list[dict[str, Any]], *, info: bool, processes: bool) -> list[str]:
    """``ss``'s layout: a header, a line per socket, ``-i``'s line under each."""
    head = ["State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port"]
    cells = [[row["state"], str(row["recv_q"]), str(row["send_q"]), row["local"],
              row["peer"]] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(head)]

    def line(values: list[str], tail: str) -> str:
        text = " ".join(v.ljust(w) if i != 1 and i != 2 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(values, widths, strict=True)))
        return (text + (" " + tail if tail else "")).rstrip()

    out = [line(head, "Process" if processes else "")]
    for row, values in zip(rows, cells, strict=True):
        out.append(line(values, _process(row) if processes else ""))
        if info:
            out.append("\t " + info_line(row))
    return out


def _process(row: dict[str, Any]) -> str:
    pids = row.get("pids") or ([row["pid"]] if row.get("pid") else [])
    if not pids:
        return ""
    name = row.get("program") or "?"
    return "users:(" + ",".join(f'("{name}",pid={pid})' for pid in pids) + ")"


def info_line(row: dict[str, Any]) -> str:
    """``ss -i``'s second line: ``key:value`` tokens, then Joyride's own."""
    i = row.get("info")
    parts: list[str] = []
    if i:
        parts += [i["cc"], f"wscale:{i['wscale'][0]},{i['wscale'][1]}",
                  f"rto:{_num(i['rto_ms'])}", f"rtt:{_num(i['rtt_ms'])}/{_num(i['rttvar_ms'])}",
                  f"ato:{_num(i['ato_ms'])}", f"mss:{i['mss']}", f"pmtu:{i['pmtu']}",
                  f"rcvmss:{i['rcvmss']}", f"cwnd:{i['cwnd']}"]
        if i.get("ssthresh") is not None:
            parts.append(f"ssthresh:{i['ssthresh']}")
        parts += [f"bytes_sent:{i['bytes_sent']}", f"bytes_acked:{i['bytes_acked']}",
                  f"bytes_received:{i['bytes_received']}", f"segs_out:{i['segs_out']}",
                  f"segs_in:{i['segs_in']}"]
        if i.get("delivery_rate"):
            parts.append(f"delivery_rate:{i['delivery_rate']}bps")
        if i["unacked"]:
            parts.append(f"unacked:{i['unacked']}")
        if i["retrans"]:
            parts.append(f"retrans:0/{i['retrans']}")
        parts += [f"rcv_space:{i['rcv_space']}", f"snd_wnd:{i['snd_wnd']}"]
        if i["notsent"]:
            parts.append(f"notsent:{i['notsent']}")
        if i["recovering"]:
            parts.append("recovering")
        share = i.get("fast_path_share")
        if share is not None:
            parts.append(f"fastpath:{share * 100:.0f}%")
    if "timer_ms" in row:
        parts.append(f"timer:(timewait,{row['timer_ms']}ms)")
    parts.append(f"joyride:{row['owner']}")
    return " ".join(parts)


def _num(value: float) -> str:
    """Milliseconds as ss prints them (up to three decimals, no trailing zeros)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")

