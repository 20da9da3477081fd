"""Isolation with ``--group``: the application socket is for root and that group only
(without it, every user: test_forged_delivery); a port below 1024 needs
CAP_NET_BIND_SERVICE; one uid cannot join another's port; changing the service stays
root's. Unprivileged processes run with setpriv inside the bed."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import app_path, ask_as, attached, wait_port

from joyride.service import appclient
from joyride.testbed import Node, Testbed

pytestmark = pytest.mark.integration

GROUP = 4242  # a gid with no name: nothing on the machine changes
MEMBER = 4243
OTHER_MEMBER = 4245
OUTSIDER = 4244
REPO = Path(__file__).resolve().parents[3]

# Speaks the application protocol through joyride.service.appclient as the calling
# user; prints the errno (0 on success) of a listen on argv[2].
LISTEN = """
import errno, sys
from pathlib import Path
from joyride.service import appclient
try:
    sock = appclient.listen(int(sys.argv[2]), path=Path(sys.argv[1]))
except appclient.NotAccelerated:
    print("not-accelerated")
except OSError as exc:
    print(errno.errorcode.get(exc.errno or 0, exc.errno))
else:
    print("ok")
    sys.stdout.flush()
    sys.stdin.read()  # hold the listener until the test closes stdin
"""


def as_user(node: Node, uid: int, gid: int, *argv: str, **kwargs: object
            ) -> subprocess.Popen[bytes]:
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
           "env", f"PYTHONPATH={REPO}", "/usr/bin/python3", *argv]
    return node.popen(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def try_listen(bed: Testbed, uid: int, gid: int, port: int
               ) -> tuple[str, subprocess.Popen[bytes]]:
    proc = as_user(bed.joy, uid, gid, "-c", LISTEN, str(app_path(bed.joy)), str(port),
                   stdin=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if line != "ok":
        _, err = proc.communicate(timeout=10)
        assert line, err.decode()
    return line, proc


def test_isolation_rules() -> None:
    with Testbed() as bed, attached(bed, "--ports", "80,8085,8086", "--group", str(GROUP)):
        # Outside the group: the socket's directory does not even let it in.
        verdict, _ = try_listen(bed, OUTSIDER, OUTSIDER, 8085)
        assert verdict == "EACCES"
        # A member may listen on an unprivileged accelerated port...
        verdict, holder = try_listen(bed, MEMBER, GROUP, 8085)
        assert verdict == "ok"
        try:
            # ...another uid, even in the group, cannot take connections for it...
            verdict, _ = try_listen(bed, OTHER_MEMBER, GROUP, 8085)
            assert verdict == "EADDRINUSE"
            # ...and without CAP_NET_BIND_SERVICE port 80 is refused, as bind(2) would.
            verdict, _ = try_listen(bed, MEMBER, GROUP, 80)
            assert verdict == "EACCES"
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(10)
        # Root may (it has the capability).
        with bed.joy.inside():
            sock = appclient.listen(80, path=app_path(bed.joy))
        sock.close()
        # A member may read the counters, not change the service; an outsider cannot
        # reach the service at all.
        assert "datapath" in json.loads(ask_as(bed.joy, MEMBER, GROUP, {"op": "stats"}))
        assert ask_as(bed.joy, MEMBER, GROUP, {"op": "shutdown"}).startswith(
            "error: permission denied")
        assert "Permission denied" in ask_as(bed.joy, OUTSIDER, OUTSIDER, {"op": "stats"})


def test_unmodified_program_denied_outside_the_group(tmp_path: Path) -> None:
    """Through the shim: an outsider's listen() on an accelerated port fails with EACCES
    (the service exists and refuses it), a member's is served by Joyride."""
    shim = sorted((REPO / "joyride").glob("libjoyride_preload*.so"))[-1]
    with Testbed() as bed, attached(bed, "--ports", "8087", "--group", str(GROUP)):
        env = ["env", f"LD_PRELOAD={shim}", f"JOYRIDE_SOCKET={app_path(bed.joy)}"]
        outsider = bed.joy.popen(
            "setpriv", f"--reuid={OUTSIDER}", f"--regid={OUTSIDER}", "--clear-groups", *env,
            "/usr/bin/python3", "-m", "http.server", "-b", "0.0.0.0", "-d", str(tmp_path),
            "8087", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = outsider.communicate(timeout=20)
        assert outsider.returncode != 0
        assert b"PermissionError" in err
        # One line from the shim says why, not a bare EACCES.
        assert b"joyride: the Joyride service" in err and b"--group" in err
        member = bed.joy.popen(
            "setpriv", f"--reuid={MEMBER}", f"--regid={GROUP}", "--clear-groups", *env,
            "/usr/bin/python3", "-m", "http.server", "-b", "0.0.0.0", "-d", str(tmp_path),
            "8087", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(bed.peer, bed.joy.ip, 8087)
        # Any HTTP answer will do (the directory is not the member's to read).
        code = bed.peer.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://{bed.joy.ip}:8087/", timeout=30).stdout
        assert code.isdigit() and code != b"000"
        out = bed.joy.run(str(Path(sys.executable).with_name("joyride")), "stats",
                          bed.joy.ifname, "--json")
        assert json.loads(out.stdout)["datapath"]["service"]["delivered"] >= 1
        member.terminate()


def test_a_port_is_shared_only_among_so_reuseport_listeners() -> None:
    """Linux's rule, across processes and within one: a second listener on a port is
    EADDRINUSE unless it and every live one set SO_REUSEPORT; a closed listener frees
    the port at once."""
    with Testbed() as bed, attached(bed, "--ports", "8097,8098"), bed.joy.inside():
        path = app_path(bed.joy)
        first = appclient.listen(8097, path=path)
        with pytest.raises(OSError) as refused:
            appclient.listen(8097, path=path)
        assert refused.value.errno == errno.EADDRINUSE
        first.close()
        appclient.listen(8097, path=path).close()  # free again once the first is gone
        shared = [appclient.listen(8098, path=path, reuseport=True) for _ in range(2)]
        try:
            with pytest.raises(OSError) as refused:
                appclient.listen(8098, path=path)  # without SO_REUSEPORT: not among them
            assert refused.value.errno == errno.EADDRINUSE
        finally:
            for sock in shared:
                sock.close()


def test_unmodified_servers_share_a_port_only_with_so_reuseport(tmp_path: Path) -> None:
    """Through the shim: a second http.server on the same port fails to start with
    EADDRINUSE, as on the kernel."""
    shim = sorted((REPO / "joyride").glob("libjoyride_preload*.so"))[-1]
    with Testbed() as bed, attached(bed, "--ports", "8097"):
        env = ["env", f"LD_PRELOAD={shim}", f"JOYRIDE_SOCKET={app_path(bed.joy)}"]
        argv = [*env, "/usr/bin/python3", "-m", "http.server", "-b", "0.0.0.0", "-d",
                str(tmp_path), "8097"]
        first = bed.joy.popen(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(bed.peer, bed.joy.ip, 8097)
            second = bed.joy.run(*argv, check=False, timeout=30)
            assert second.returncode != 0
            assert b"Address already in use" in second.stderr
        finally:
            first.terminate()
            first.wait(10)
