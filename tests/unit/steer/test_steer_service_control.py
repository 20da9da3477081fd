"""Control protocol and request handling; bad requests never raise out of the service."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from joyride.claim.statedir import RUN_DIR_ENV, ServiceState, StateDir
from joyride.service import control
from joyride.service.service import Service, ServiceConfig
from joyride.steer.counters import SteerCounters
from joyride.steer.ports import PortSet
from joyride.steer.program import EPHEMERAL, LISTEN, PortConflict


class FakeSteering:
    """The part of ``Steering`` the control operations use, without a kernel."""

    def __init__(self) -> None:
        self.owned: dict[str, dict[int, int]] = {"tcp": {}, "udp": {}}

    def add_ports(self, ports: Any, proto: str = "tcp", kind: int = LISTEN) -> None:
        clash = [p for p in ports if self.owned[proto].get(p, kind) != kind]
        if clash:
            raise PortConflict(f"{clash}")
        self.owned[proto].update(dict.fromkeys(ports, kind))

    def remove_ports(self, ports: Any, proto: str = "tcp") -> None:
        for p in ports:
            self.owned[proto].pop(p, None)

    def ports(self, proto: str = "tcp", kind: int | None = None) -> PortSet:
        return PortSet(p for p, k in self.owned[proto].items() if kind is None or k == kind)

    def counters(self) -> SteerCounters:
        return SteerCounters({"steered_tcp": 3, "pass_port_tcp": 1})


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    cfg = ServiceConfig("eth0", PortSet([80]), ephemeral=PortSet.parse("60000-60009"))
    svc = Service(cfg, state_dir=StateDir("eth0"))
    fake = FakeSteering()
    fake.add_ports([80])
    fake.add_ports(cfg.ephemeral, "tcp", EPHEMERAL)
    svc.steering = fake  # type: ignore[assignment]
    svc.state = ServiceState("eth0", 2, 1, 1, mode="native", ports="80", started_at=1.0)
    return svc


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json\n", "malformed control message"),
        (b"[1]\n", "JSON object"),
        (b'{"op": "reboot"}\n', "unknown control operation"),
        (b'{"op": "ports"}\n', "bad request"),
        (b'{"op": "ports", "action": "add", "ports": "0"}\n', "port 0"),
        (b'{"op": "ports", "action": "flip", "ports": "81"}\n', "unknown ports action"),
        (b'{"op": "ports", "action": "add", "ports": "81", "proto": "sctp"}\n',
         "unknown protocol"),
        (b'{"op": "ports", "action": "add", "ports": "60005"}\n', "ephemeral range"),
        (b'{"op": "ports", "action": "del", "ports": "81"}\n', "not accelerated"),
        (b"\xff\xfe\n", "malformed control message"),
    ],
)
def test_bad_requests_get_error_replies(service: Service, line: bytes, message: str) -> None:
    reply = service.handle_line(line)
    assert reply["ok"] is False
    assert message in reply["error"]
    assert isinstance(reply["exit_code"], int) and reply["exit_code"] != 0


def test_ports_add_and_del_update_the_state_file(service: Service) -> None:
    reply = service.handle_line(b'{"op": "ports", "action": "add", "ports": "81-83"}\n')
    assert reply == {"ok": True, "ports": "80-83", "udp_ports": ""}
    saved = service.dir.load()
    assert saved is not None and saved.ports == "80-83"
    reply = service.handle_line(
        b'{"op": "ports", "action": "add", "ports": "53", "proto": "udp"}\n')
    assert reply["udp_ports"] == "53"
    reply = service.handle_line(b'{"op": "ports", "action": "del", "ports": "80,82"}\n')
    assert reply["ports"] == "81,83"


def test_stats_status_and_shutdown(service: Service) -> None:
    stats = service.handle({"op": "stats"})
    assert stats["steer"] == {"steered_tcp": 3, "pass_port_tcp": 1}
    assert stats["totals"]["steered"] == 3 and stats["totals"]["pass"] == 1
    assert service.handle({"op": "status"})["state"]["ports"] == "80"
    assert service.handle({"op": "shutdown"}) == {"ok": True}
    assert service.stop_reason.startswith("shutdown")


def test_request_round_trip_over_a_unix_socket(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    listener = control.listen(path)
    assert path.stat().st_mode & 0o777 == 0o666  # every user; each request authorized
    service._listener = listener
    done = threading.Event()

    def serve_one() -> None:
        listener.setblocking(True)
        service._accept()
        done.set()

    thread = threading.Thread(target=serve_one)
    thread.start()
    try:
        reply = control.request(path, {"op": "status"}, timeout=5)
    finally:
        thread.join(5)
        listener.close()
    assert done.is_set() and reply["state"]["ifname"] == "eth0"


def test_request_errors(tmp_path: Path) -> None:
    with pytest.raises(control.ServiceNotRunning):
        control.request(tmp_path / "absent.sock", {"op": "status"})
    with pytest.raises(control.ControlError, match="malformed"):
        control.decode(b"{")
