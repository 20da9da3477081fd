"""Debian-packaged daemons nobody here wrote, run as their packages run them (their
packaged users and configuration, overriding only the address, the port and where state
goes), under ``joyride run`` on an accelerated port, with real clients in the peer
namespace and the data checked end to end by sha256 (issue 14):

* OpenSSH's sshd: privilege-separated. It starts as root, re-execs itself for each
  connection, runs the pre-authentication child as the ``sshd`` user in a chroot, reads
  IP_OPTIONS on every connection (and drops one that seems to carry options), and runs
  the session as the user who logged in; ``ssh`` and ``scp`` (SFTP) from the peer.
* openbsd-inetd: a server that runs each connection in a child it execs, as the user
  its configuration names (``nobody``), with the connection as stdin and stdout.
* Apache httpd with mpm_prefork: a forking server whose children serve as ``www-data``;
  concurrent ``curl`` clients.

Every test asserts that its connections came through Joyride (the service's delivery
counter) and stops its daemon by pid.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import descendants, login_user, must_exist, public_dir, stop, uids, wait_gone
from service_helpers import JOYRIDE, attached, stats, wait_for, wait_port

from joyride.testbed import Node, Testbed

pytestmark = pytest.mark.integration

SSH_PORT = 2222
INETD_PORT = 2121
HTTP_PORT = 8096
SSHD = "/usr/sbin/sshd"
INETD = "/usr/sbin/inetd"
APACHE = "/usr/sbin/apache2"


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    with Testbed() as bed, attached(bed, "--ports", f"{SSH_PORT},{INETD_PORT},{HTTP_PORT}"):
        yield bed


def delivered(bed: Testbed) -> int:
    return int(stats(bed.joy)["datapath"]["service"].get("delivered", 0))


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} missing)"


@contextlib.contextmanager
def daemon(node: Node, log: Path, *argv: str) -> Iterator[subprocess.Popen[Any]]:
    """``joyride run -- argv`` in the node's namespace, its stdout and stderr (the shim's
    lines too) to ``log``; stopped by its pid afterwards, with every process it left."""
    with log.open("wb") as out:
        # --iface: a new namespace can reuse the inode of one whose service died without
        # removing its state directory (a crashed run's, killed by testbed.sweep), and
        # without it `joyride run` counts that dead service too and refuses to choose.
        # A session of its own, as a daemon started by init has: apache2 signals its
        # whole process group when it stops, which would otherwise be pytest's.
        proc = node.popen(JOYRIDE, "run", "--iface", node.ifname, "--", *argv, stdout=out,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        left = descendants(proc.pid)
        stop(proc, timeout=10.0)
        assert not wait_gone(left), f"{argv[0]} left processes behind: {log_tail(log)}"


def wait_listening(bed: Testbed, port: int, log: Path) -> None:
    try:
        wait_port(bed.peer, bed.joy.ip, port)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the daemon's output:\n{log_tail(log)}") from None


def hashes_of(payloads: list[bytes]) -> list[str]:
    return [hashlib.sha256(p).hexdigest() for p in payloads]


# ---------------------------------------------------------------------------- sshd

SSH_OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]


def sshd_config(state: Path, user: str) -> Path:
    """The packaged /etc/ssh/sshd_config behind a few overrides (sshd keeps the first
    value it reads for a keyword, so the overrides come first)."""
    config = state / "sshd_config"
    config.write_text(
        "# Overrides for the test; the rest is the packaged configuration.\n"
        f"Port {SSH_PORT}\n"
        "AddressFamily inet\n"
        "ListenAddress 0.0.0.0\n"
        f"HostKey {state}/ssh_host_ed25519_key\n"
        f"PidFile {state}/sshd.pid\n"
        "AuthenticationMethods publickey\n"
        "PasswordAuthentication no\n"
        f"AllowUsers {user}\n"
        "\n" + Path("/etc/ssh/sshd_config").read_text())
    return config


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "joyride-test",
                    "-f", str(path)], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def privsep_dir() -> Iterator[None]:
    """sshd's privilege-separation chroot, /run/sshd, as the package's init script and
    systemd unit create it (root, 0755); removed afterwards if this made it."""
    path = Path("/run/sshd")
    made = not path.exists()
    if made:
        path.mkdir(mode=0o755)
    try:
        yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()


def preauth_child_runs_as_sshd(bed: Testbed, sshd_pid: int) -> tuple[int, int]:
    """Open a connection, exchange banners and wait for the server's KEXINIT: sshd's
    privilege-separated child sends it, so it is running now, and stays so while the
    connection waits. Returns that child's (pid, uid)."""
    privsep_uid = pwd.getpwnam("sshd").pw_uid
    with bed.peer.inside():
        sock = socket.create_connection((bed.joy.ip, SSH_PORT), timeout=10)
    with sock:
        banner = b""
        while not banner.endswith(b"\n"):
            chunk = sock.recv(1)
            assert chunk, f"sshd closed the connection after {banner!r}"
            banner += chunk
        assert banner.startswith(b"SSH-2.0-OpenSSH"), banner
        sock.sendall(b"SSH-2.0-JoyrideProbe\r\n")
        assert sock.recv(4096), "no KEXINIT from the pre-authentication child"
        found: list[tuple[int, int]] = []

        def child() -> bool:
            found[:] = [(pid, ids[0]) for pid in descendants(sshd_pid)
                        if (ids := uids(pid)) is not None and ids == (privsep_uid,) * 2]
            return bool(found)

        wait_for(child, 10.0, "a process of the sshd user below the daemon")
        return found[0]


def test_openssh_server_privsep_ssh_and_scp(bed: Testbed, tmp_path: Path) -> None:
    """sshd as packaged (privilege separation, re-exec per connection, PAM) under
    ``joyride run``: 4 MiB through ``ssh ... sha256sum``, ``scp`` both ways, each
    checked by hash; the pre-auth child runs as ``sshd`` and the session as the user,
    and the key is admitted only from the peer's address (``from=``)."""
    must_exist(SSHD, "/usr/bin/ssh", "/usr/bin/scp")
    state = tmp_path / "sshd"
    state.mkdir(mode=0o700)
    keygen(state / "ssh_host_ed25519_key")
    keygen(tmp_path / "client_key")
    with public_dir("jr-sshd-b-") as base, login_user(base / "home") as user, privsep_dir():
        account = pwd.getpwnam(user)
        home = Path(account.pw_dir)
        dot_ssh = home / ".ssh"
        dot_ssh.mkdir(mode=0o700)
        keys = dot_ssh / "authorized_keys"
        # from=: sshd admits the key only from the peer's address, as it sees it.
        keys.write_bytes(f'from="{bed.peer.ip}" '.encode()
                         + (tmp_path / "client_key.pub").read_bytes())
        keys.chmod(0o600)
        for path in (dot_ssh, keys):
            os.chown(path, account.pw_uid, account.pw_gid)
        download = os.urandom(3 << 20)
        (home / "down.bin").write_bytes(download)
        os.chown(home / "down.bin", account.pw_uid, account.pw_gid)
        upload = os.urandom(3 << 20)
        (tmp_path / "up.bin").write_bytes(upload)

        config = sshd_config(state, user)
        before = delivered(bed)
        log = tmp_path / "sshd.log"
        with daemon(bed.joy, log, SSHD, "-D", "-e", "-f", str(config)) as proc:
            wait_listening(bed, SSH_PORT, log)
            pid, _ = preauth_child_runs_as_sshd(bed, proc.pid)
            assert pid != proc.pid
            key = ["-i", str(tmp_path / "client_key")]
            target = f"{user}@{bed.joy.ip}"

            stdin = os.urandom(4 << 20)
            out = bed.peer.run("ssh", *SSH_OPTS, *key, "-p", str(SSH_PORT), target,
                               "id -un; sha256sum", input=stdin, check=False, timeout=60)
            assert out.returncode == 0, (out.stderr, log_tail(log))
            assert out.stdout.decode().split() == [user, hashes_of([stdin])[0], "-"]

            scp = ["scp", *SSH_OPTS, *key, "-q", "-P", str(SSH_PORT)]
            up = bed.peer.run(*scp, str(tmp_path / "up.bin"), f"{target}:up.bin",
                              check=False, timeout=60)
            assert up.returncode == 0, (up.stderr, log_tail(log))
            assert hashes_of([(home / "up.bin").read_bytes()]) == hashes_of([upload])
            assert (home / "up.bin").stat().st_uid == account.pw_uid  # written as the user

            down = bed.peer.run(*scp, f"{target}:down.bin", str(tmp_path / "down.bin"),
                                check=False, timeout=60)
            assert down.returncode == 0, (down.stderr, log_tail(log))
            assert hashes_of([(tmp_path / "down.bin").read_bytes()]) == hashes_of([download])

            assert f"Accepted publickey for {user} from {bed.peer.ip} port" in log.read_text()
            # The port probe, the pre-auth probe, ssh, and the two scp connections.
            assert delivered(bed) - before >= 5
            assert proc.poll() is None, log_tail(log)
            # Every session has ended before the user is deleted.
            assert not wait_gone([p for p in descendants(proc.pid)
                                  if (uids(p) or (0,))[0] == account.pw_uid])


# ---------------------------------------------------------------------------- inetd

def exchange_in_parallel(bed: Testbed, port: int, payloads: list[bytes]) -> list[bytes]:
    """One connection per payload, all open at once: each sends its payload, shuts its
    side down, and reads the reply to the end."""
    with bed.peer.inside():
        socks = [socket.create_connection((bed.joy.ip, port), timeout=30) for _ in payloads]
    replies: list[bytes] = [b""] * len(payloads)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with socks[i] as sock:
                sock.sendall(payloads[i])
                sock.shutdown(socket.SHUT_WR)
                while chunk := sock.recv(65536):
                    replies[i] += chunk
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a connection hung"
    assert not errors, errors
    return replies


def test_inetd_execs_a_child_per_connection_as_nobody(bed: Testbed, tmp_path: Path) -> None:
    """openbsd-inetd (foreground, as the init script runs it but without detaching)
    with a one-line inetd.conf: each connection runs in a child that takes the
    connection as stdin/stdout, becomes ``nobody`` and execs the service, which says
    who it is and hashes what it read. 8 connections at once, 1 MiB each."""
    must_exist(INETD)
    pidfile = Path("/run/inetd.pid")  # inetd writes it wherever its config is
    had_pidfile = pidfile.exists()
    with public_dir("jr-inetd-b-") as base:
        service = base / "hash-service"
        service.write_text("#!/bin/sh\n/usr/bin/id -un\nexec /usr/bin/sha256sum\n")
        service.chmod(0o755)
        config = base / "inetd.conf"
        config.write_text(f"{INETD_PORT}\tstream\ttcp4\tnowait\tnobody\t{service}\t"
                          "hash-service\n")
        before = delivered(bed)
        log = tmp_path / "inetd.log"
        try:
            with daemon(bed.joy, log, INETD, "-i", str(config)) as proc:
                wait_listening(bed, INETD_PORT, log)
                payloads = [os.urandom(1 << 20) for _ in range(8)]
                replies = exchange_in_parallel(bed, INETD_PORT, payloads)
                expected = [f"nobody\n{h}  -\n".encode() for h in hashes_of(payloads)]
                assert replies == expected, log_tail(log)
                # Again, after the first children are gone: inetd keeps accepting.
                more = [os.urandom(256 << 10) for _ in range(4)]
                assert exchange_in_parallel(bed, INETD_PORT, more) == [
                    f"nobody\n{h}  -\n".encode() for h in hashes_of(more)]
                assert delivered(bed) - before >= 13  # the probe and 12 connections
                assert proc.poll() is None, log_tail(log)
        finally:
            if not had_pidfile:
                pidfile.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- apache

def apache_config(base: Path) -> Path:
    """A minimal httpd.conf over the packaged server root: the packaged mpm_prefork,
    authz_core, mime and dir modules with their packaged settings, user www-data."""
    config = base / "apache2.conf"
    config.write_text(f"""
ServerRoot /etc/apache2
ServerName joyride-test
Listen 0.0.0.0:{HTTP_PORT}
PidFile {base}/run/apache2.pid
DefaultRuntimeDir {base}/run
User www-data
Group www-data
ErrorLog {base}/logs/error.log
LogLevel warn
Include mods-available/mpm_prefork.load
Include mods-available/mpm_prefork.conf
Include mods-available/authz_core.load
Include mods-available/mime.load
Include mods-available/mime.conf
Include mods-available/dir.load
Include mods-available/dir.conf
# Who served each request: the client's address, the serving process, status, size.
LogFormat "%h %P %>s %B" joyride
CustomLog {base}/logs/access.log joyride
DocumentRoot {base}/www
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory {base}/www>
    Require all granted
</Directory>
""")
    return config


def test_apache_prefork_children_serve_as_www_data(bed: Testbed, tmp_path: Path) -> None:
    """apache2 with mpm_prefork, started as root in the foreground (as the packaged
    systemd unit and apache2ctl start it, minus the detaching): its forked children
    serve as www-data. 8 concurrent curl clients, 2 requests each on one connection,
    every body checked by hash; the access log names the peer and a www-data child."""
    must_exist(APACHE, "/usr/bin/curl")
    www_data = pwd.getpwnam("www-data").pw_uid
    with public_dir("jr-apache-b-") as base:
        for sub in ("run", "logs", "www"):
            (base / sub).mkdir(mode=0o755)
        body = os.urandom(2 << 20)
        (base / "www" / "file.bin").write_bytes(body)
        (base / "www" / "file.bin").chmod(0o644)
        config = apache_config(base)
        before = delivered(bed)
        log = tmp_path / "apache2.log"
        with daemon(bed.joy, log, APACHE, "-f", str(config), "-D", "FOREGROUND") as proc:
            wait_listening(bed, HTTP_PORT, log)
            url = f"http://{bed.joy.ip}:{HTTP_PORT}/file.bin"
            outs = [tmp_path / f"got{i}-{j}.bin" for i in range(8) for j in range(2)]
            clients = [bed.peer.popen("curl", "-sS", "--fail", "--max-time", "30",
                                      url, "-o", str(outs[2 * i]), url, "-o",
                                      str(outs[2 * i + 1]), stderr=subprocess.PIPE)
                       for i in range(8)]
            for client in clients:
                _, err = client.communicate(timeout=60)
                assert client.returncode == 0, (err, log_tail(base / "logs" / "error.log"))
            assert hashes_of([p.read_bytes() for p in outs]) == hashes_of([body]) * 16
            assert delivered(bed) - before >= 9  # the probe and 8 clients
            access = base / "logs" / "access.log"

            def logged() -> list[list[str]]:
                return [line.split() for line in access.read_text().splitlines()]

            # A child logs a request after sending its response.
            wait_for(lambda: len(logged()) >= 16, 10.0, "16 lines in the access log")
            served = logged()
            assert len(served) == 16, served
            assert {(ip, status, size) for ip, _, status, size in served} == {
                (bed.peer.ip, "200", str(len(body)))}
            servers = {int(pid) for _, pid, _, _ in served}
            assert proc.pid not in servers  # the root parent serves nothing
            # Its children run as www-data (one just forked is root for a moment, until
            # it drops privileges); those that served and are still there (prefork may
            # retire spare ones) are among them.
            children: dict[int, tuple[int, int]] = {}

            def all_www_data() -> bool:
                children.clear()
                children.update({pid: ids for pid in descendants(proc.pid)
                                 if (ids := uids(pid)) is not None})
                return bool(children) and set(children.values()) == {(www_data, www_data)}

            wait_for(all_www_data, 10.0, "apache2's children to run as www-data")
            assert {pid for pid in servers if uids(pid) is not None} <= set(children)
            assert proc.poll() is None, log_tail(log)
