"""Debian-packaged daemons nobody here wrote, run as their packages run them, under
``joyride run`` on an accelerated port (issue 14): each runs as its own service user,
its own clients talk to it from the peer namespace, and the data is checked end to end.

- **PostgreSQL** (a relational database that forks a backend per connection), its
  server run as ``postgres`` on a cluster made by ``initdb`` as ``postgres`` (Debian's
  packaged ``postgresql.conf`` sample, Debian's authentication: peer locally, SCRAM
  over TCP), with only the listen address, port and socket directory overridden and a
  ``pg_hba.conf`` line for the peer: ``pgbench -i`` and ``-c 4 -t 200`` from the peer,
  TPC-B's balances read back consistent, rows written with ``COPY`` and read back by
  checksum and in full.
- **memcached** (a threaded key-value cache) started as root with the options of the
  packaged ``/etc/memcached.conf`` (``-u memcache``, ``-m 64``) plus ``-t 4``:
  libmemcached's ``memcslap``, ``memccp``/``memccat`` and a text-protocol client on
  four connections at once, every value checked by hash.
- **Node.js** (a JavaScript runtime) serving HTTP as ``nobody``: ``curl`` downloads a
  body whose sha256 it checks and uploads one whose sha256 the server echoes.

Each test counts the connections the service delivered, and stops its daemon (by pid)
and removes the directory it made, whatever happens.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import parent, stop
from service_helpers import JOYRIDE, attached, stats, wait_for

from joyride.testbed import Node, Testbed

pytestmark = pytest.mark.integration

PG_PORT, MEMCACHED_PORT, NODE_PORT = 5432, 11211, 8095
PG_PASSWORD = "joyride-packaged-a"
MEMCACHED_CONF = Path("/etc/memcached.conf")


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    with Testbed() as bed, attached(bed, "--ports", f"{PG_PORT},{MEMCACHED_PORT},{NODE_PORT}"):
        yield bed


# -- processes, users, directories -------------------------------------------------------


def delivered(bed: Testbed) -> int:
    return int(stats(bed.joy)["datapath"]["service"].get("delivered", 0))


def uids(pid: int) -> list[int]:
    """Real, effective, saved and file-system uid of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


@contextlib.contextmanager
def owned_dir(user: str, prefix: str) -> Iterator[Path]:
    """A temporary directory the daemon's user owns (pytest's tmp_path sits where only
    root may enter), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: str) -> list[str]:
    """Run the rest of the command as ``user``, with that user's groups (as su/runuser)."""
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
            "env", f"HOME={entry.pw_dir}", f"USER={user}", f"LOGNAME={user}"]


def start(bed: Testbed, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``joyride run -- ARGV`` in the Joyride namespace, its stdout and stderr to ``log``."""
    with log.open("wb") as out:
        return bed.joy.popen(JOYRIDE, "run", "--", *argv, stdout=out, stderr=subprocess.STDOUT)


def wait_serving(bed: Testbed, proc: subprocess.Popen[bytes], port: int, log: Path,
                 timeout: float = 30.0) -> None:
    """Until the daemon accepts a connection from the peer; fails with its log if it
    exits first."""

    def connects() -> bool:
        with bed.peer.inside():
            sock = socket.socket()
        sock.settimeout(1.0)
        try:
            sock.connect((bed.joy.ip, port))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    wait_for(lambda: proc.poll() is not None or connects(), timeout,
             f"port {port} to accept connections")
    assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"


def shim_lines(log: Path) -> list[str]:
    """The shim's and ``joyride run``'s own lines: a refusal, or a fallback to the kernel."""
    return [line for line in log.read_text(errors="replace").splitlines()
            if line.startswith("joyride:")]


def text(node: Node, *args: str, timeout: float = 60.0, input: bytes | None = None) -> str:
    proc = node.run(*args, check=False, timeout=timeout, input=input)
    out = proc.stdout.decode()
    assert proc.returncode == 0, f"{' '.join(args)} -> {proc.returncode}: {out}" \
                                 f"{proc.stderr.decode()}"
    return out


# -- PostgreSQL ---------------------------------------------------------------------------


def pg_bindir() -> Path:
    """The newest packaged server's binaries (Debian keeps them per major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    assert found, "postgresql is not installed: run scripts/setup.sh"
    return found[-1].parent


def rows(n: int) -> list[tuple[int, str]]:
    return [(k, hashlib.sha256(f"joyride {k}".encode()).hexdigest() * 4) for k in range(n)]


def test_postgresql_as_postgres_pgbench_and_rows(bed: Testbed) -> None:
    bindir = pg_bindir()
    postgres = pwd.getpwnam("postgres")
    with owned_dir("postgres", "joyride-pg-a-") as home:
        log = home / "postgres.log"
        (home / "pw").write_text(PG_PASSWORD + "\n")
        os.chown(home / "pw", postgres.pw_uid, postgres.pw_gid)
        data = home / "data"
        # As pg_createcluster makes a cluster: initdb as postgres, peer auth on the
        # local socket, SCRAM over TCP (the password is set by initdb).
        init = subprocess.run([*as_user("postgres"), str(bindir / "initdb"), "-D", str(data),
                               "-U", "postgres", "--pwfile", str(home / "pw"),
                               "--auth-local=peer", "--auth-host=scram-sha-256",
                               "--encoding=UTF8", "--locale=C", "--no-sync"],
                              capture_output=True, timeout=60)
        assert init.returncode == 0, init.stdout.decode() + init.stderr.decode()
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {bed.peer.ip}/32 scram-sha-256\n")
        before = delivered(bed)
        server = start(bed, [*as_user("postgres"), str(bindir / "postgres"), "-D", str(data),
                             "-c", f"listen_addresses={bed.joy.ip}", "-c", f"port={PG_PORT}",
                             "-c", f"unix_socket_directories={home}"], log)
        try:
            wait_serving(bed, server, PG_PORT, log)
            assert (Path(f"/proc/{server.pid}/exe").resolve() ==
                    (bindir / "postgres").resolve())
            assert uids(server.pid) == [postgres.pw_uid] * 4
            _pg_checks(bed, server.pid, postgres.pw_uid)
            # pgbench -i, pgbench (4 clients; it may open one more), the psql sessions.
            assert delivered(bed) - before >= 8
        finally:
            stop(server, signal.SIGINT)  # fast shutdown
        assert shim_lines(log) == [], log.read_text()


def _pg_checks(bed: Testbed, postmaster: int, uid: int) -> None:
    client = ["env", f"PGPASSWORD={PG_PASSWORD}"]
    where = ["-h", bed.joy.ip, "-p", str(PG_PORT), "-U", "postgres"]
    psql = [*client, "psql", *where, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]

    # The backend is a child the postmaster forked, running as postgres, and it sees the
    # peer's real address (pg_hba.conf matched it: SCRAM for the peer's /32).
    session = bed.peer.popen(*psql, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert session.stdin is not None and session.stdout is not None
        session.stdin.write(b"SELECT pid, client_addr, inet_server_addr(), inet_server_port() "
                            b"FROM pg_stat_activity WHERE pid = pg_backend_pid();\n")
        session.stdin.flush()
        line = session.stdout.readline().decode().strip()
        backend, client_addr, server_addr, server_port = line.split("|")
        assert (client_addr, server_addr, server_port) == (bed.peer.ip, bed.joy.ip,
                                                           str(PG_PORT)), line
        assert int(backend) != postmaster and parent(int(backend)) == postmaster
        assert uids(int(backend)) == [uid] * 4
    finally:
        if session.stdin is not None:
            session.stdin.close()
        session.wait(30)

    init = text(bed.peer, *client, "pgbench", *where, "-i", "-s", "1", "postgres")
    bench = text(bed.peer, *client, "pgbench", *where, "-c", "4", "-j", "2", "-t", "200",
                 "postgres")
    assert re.search(r"number of transactions actually processed: 800/800", bench), bench
    assert re.search(r"number of failed transactions: 0 ", bench), bench
    # TPC-B's invariant, read back: every transaction added the same delta to an account,
    # a teller, a branch and one history row.
    sums = text(bed.peer, *psql, "-c",
                "SELECT (SELECT count(*) FROM pgbench_history), "
                "(SELECT sum(delta) FROM pgbench_history), "
                "(SELECT sum(abalance) FROM pgbench_accounts), "
                "(SELECT sum(tbalance) FROM pgbench_tellers), "
                "(SELECT sum(bbalance) FROM pgbench_branches)").strip().split("|")
    assert sums[0] == "800" and len(set(sums[1:])) == 1, (sums, init)

    # Rows written with COPY (768 KiB from the peer), then their checksum and the rows
    # themselves read back (the server's way to the peer).
    written = rows(3000)
    script = ("CREATE TABLE joyride_rows (k int PRIMARY KEY, v text NOT NULL);\n"
              "COPY joyride_rows (k, v) FROM STDIN;\n"
              + "".join(f"{k}\t{v}\n" for k, v in written) + "\\.\n"
              "SELECT count(*), md5(string_agg(v, ',' ORDER BY k)) FROM joyride_rows;\n")
    out = text(bed.peer, *psql, "-q", "-f", "-", input=script.encode())
    expected = hashlib.md5(",".join(v for _, v in written).encode()).hexdigest()
    assert out == f"3000|{expected}\n", out
    back = text(bed.peer, *psql, "-c", "SELECT k, v FROM joyride_rows ORDER BY k")
    assert back == "".join(f"{k}|{v}\n" for k, v in written)


# -- memcached ----------------------------------------------------------------------------


def packaged_memcached_options(ip: str, port: int) -> tuple[list[str], str]:
    """The options of the packaged /etc/memcached.conf (one per line, as its init
    script reads them), less daemonizing, its log file, pid file, address and port;
    and the user it names with ``-u``."""
    assert MEMCACHED_CONF.exists(), "memcached is not installed: run scripts/setup.sh"
    options: list[str] = []
    for line in MEMCACHED_CONF.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] in ("-d", "logfile", "-l", "-p", "-P"):
            continue
        options += words
    assert "-u" in options, f"{MEMCACHED_CONF} names no user: {options}"
    return [*options, "-l", ip, "-p", str(port), "-t", "4"], options[options.index("-u") + 1]


def value(key: str) -> bytes:
    """A value of 1 B to 12 KiB (two of them 300 KiB and 900 KiB), from its key alone."""
    seed = hashlib.sha256(key.encode()).digest()
    size = {7: 300 << 10, 11: 900 << 10}.get(int(key.rsplit("-", 1)[1]), 1 + seed[0] * 48)
    return (seed * (size // 32 + 1))[:size]


class TextClient:
    """memcached's text protocol over one TCP connection made in the peer namespace."""

    def __init__(self, node: Node, ip: str, port: int) -> None:
        with node.inside():
            self.sock = socket.create_connection((ip, port), timeout=20)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "memcached closed the connection"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n", 1)
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            assert chunk, "memcached closed the connection"
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def set_many(self, items: dict[str, bytes], flags: int) -> None:
        """Pipelined: every set sent, then every reply read."""
        self.sock.sendall(b"".join(b"set %s %d 0 %d\r\n%s\r\n" % (k.encode(), flags, len(v), v)
                                   for k, v in items.items()))
        replies = [self.line() for _ in items]
        assert replies == [b"STORED"] * len(items), set(replies)

    def get_many(self, keys: list[str]) -> dict[str, tuple[int, bytes]]:
        self.sock.sendall(b"get " + b" ".join(k.encode() for k in keys) + b"\r\n")
        got: dict[str, tuple[int, bytes]] = {}
        while (head := self.line()) != b"END":
            _, key, flags, size = head.split()
            got[key.decode()] = (int(flags), self.exactly(int(size)))
            assert self.exactly(2) == b"\r\n"
        return got

    def command(self, cmd: str) -> bytes:
        self.sock.sendall(cmd.encode() + b"\r\n")
        return self.line()

    def close(self) -> None:
        self.sock.close()


def _memcached_client(bed: Testbed, worker: int, keys: int, errors: list[str]) -> None:
    try:
        client = TextClient(bed.peer, bed.joy.ip, MEMCACHED_PORT)
        try:
            names = [f"joyride-a-{worker}-{n}" for n in range(keys)]
            for batch in range(0, keys, 50):
                client.set_many({k: value(k) for k in names[batch:batch + 50]}, flags=worker)
            for batch in range(0, keys, 40):
                got = client.get_many(names[batch:batch + 40])
                assert set(got) == set(names[batch:batch + 40]), "keys missing"
                for key, (flags, data) in got.items():
                    assert flags == worker, key
                    assert hashlib.sha256(data).digest() == \
                        hashlib.sha256(value(key)).digest(), key
            for _ in range(250):  # the four clients count on one shared key
                assert client.command("incr joyride-a-counter 1").isdigit()
        finally:
            client.close()
    except BaseException as exc:  # reported by the test's thread
        errors.append(f"client {worker}: {exc!r}")


def test_memcached_as_memcache_four_threads(bed: Testbed, tmp_path: Path) -> None:
    argv, user = packaged_memcached_options(bed.joy.ip, MEMCACHED_PORT)
    uid = pwd.getpwnam(user).pw_uid
    log = tmp_path / "memcached.log"
    before = delivered(bed)
    # Started as root, as its init script starts it; memcached drops to the -u user
    # itself before it listens.
    server = start(bed, ["memcached", *argv], log)
    try:
        wait_serving(bed, server, MEMCACHED_PORT, log)
        assert uids(server.pid) == [uid] * 4
        servers = f"--servers={bed.joy.ip}:{MEMCACHED_PORT}"
        # libmemcached's own load generator, 8 connections.
        for test in ("set", "get"):
            out = text(bed.peer, "memcslap", servers, "--concurrency=8",
                       "--execute-number=1000", f"--test={test}")
            assert re.search(rf"Time to {test}\s+8000 keys by\s+8 threads", out), out
        # Its copy tools: a 512 KiB file stored under its name and read back (memccat
        # ends the value with a newline of its own).
        blob = tmp_path / "joyride-a-blob"
        blob.write_bytes(hashlib.sha256(b"blob").digest() * (16 << 10))
        text(bed.peer, "memccp", servers, str(blob))
        got = bed.peer.run("memccat", servers, blob.name, timeout=60).stdout
        assert got.endswith(b"\n")
        assert hashlib.sha256(got[:-1]).digest() == hashlib.sha256(blob.read_bytes()).digest()
        # Four connections at once on memcached's four threads, 400 keys each.
        setup = TextClient(bed.peer, bed.joy.ip, MEMCACHED_PORT)
        try:
            assert setup.command("set joyride-a-counter 0 0 1\r\n0") == b"STORED"
            errors: list[str] = []
            workers = [threading.Thread(target=_memcached_client, args=(bed, w, 400, errors))
                       for w in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(45)
            assert not any(w.is_alive() for w in workers), "a client hung"
            assert errors == []
            assert setup.get_many(["joyride-a-counter"]) == {"joyride-a-counter": (0, b"1000")}
            stat = {}
            setup.sock.sendall(b"stats\r\n")
            while (head := setup.line()) != b"END":
                _, name, val = head.decode().split(" ", 2)
                stat[name] = val
            assert stat["threads"] == "4" and stat["evictions"] == "0", stat
        finally:
            setup.close()
        # memcslap 16, memccp/memccat 2, the text clients 5.
        assert delivered(bed) - before >= 23
    finally:
        stop(server)
    assert shim_lines(log) == [], log.read_text()


# -- Node.js ------------------------------------------------------------------------------

NODE_SERVER = r"""
'use strict';
// GET /body: SIZE bytes of chained sha256 blocks; POST /upload: "<sha256 hex> <bytes>
// <peer address>" of what was received.
const http = require('http');
const crypto = require('crypto');
const [port, host, size] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const blocks = [];
let block = crypto.createHash('sha256').update('joyride').digest();
for (let n = 0; n * 32 < size; n++) {
  blocks.push(block);
  block = crypto.createHash('sha256').update(block).digest();
}
const body = Buffer.concat(blocks).subarray(0, size);
http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/body') {
    res.writeHead(200, {'Content-Type': 'application/octet-stream'});
    res.end(body);
  } else if (req.method === 'POST' && req.url === '/upload') {
    const hash = crypto.createHash('sha256');
    let n = 0;
    req.on('data', (chunk) => { hash.update(chunk); n += chunk.length; });
    req.on('end', () => {
      res.writeHead(200, {'Content-Type': 'text/plain'});
      res.end(`${hash.digest('hex')} ${n} ${req.socket.remoteAddress}\n`);
    });
  } else {
    res.writeHead(404);
    res.end();
  }
}).listen(port, host, () => console.log(`listening as uid ${process.getuid()}`));
"""


def node_body(size: int) -> bytes:
    blocks: list[bytes] = []
    block = hashlib.sha256(b"joyride").digest()
    while len(blocks) * 32 < size:
        blocks.append(block)
        block = hashlib.sha256(block).digest()
    return b"".join(blocks)[:size]


def test_nodejs_http_as_nobody(bed: Testbed, tmp_path: Path) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "nodejs is not installed: run scripts/setup.sh"
    nobody = pwd.getpwnam("nobody")
    size = 4 << 20
    with owned_dir("root", "joyride-node-a-") as home:
        script = home / "server.js"
        script.write_text(NODE_SERVER)
        script.chmod(0o644)
        log = tmp_path / "node.log"
        before = delivered(bed)
        server = start(bed, ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                             "--clear-groups", node, str(script), str(NODE_PORT), bed.joy.ip,
                             str(size)], log)
        try:
            wait_serving(bed, server, NODE_PORT, log)
            assert uids(server.pid) == [nobody.pw_uid] * 4
            url = f"http://{bed.joy.ip}:{NODE_PORT}"
            # Twice on one connection (keep-alive), then on a new one.
            first, second = tmp_path / "1.bin", tmp_path / "2.bin"
            text(bed.peer, "curl", "-sS", "--fail", f"{url}/body", "-o", str(first),
                 f"{url}/body", "-o", str(second))
            got = bed.peer.run("curl", "-sS", "--fail", f"{url}/body", timeout=60).stdout
            want = hashlib.sha256(node_body(size)).hexdigest()
            for data in (first.read_bytes(), second.read_bytes(), got):
                assert hashlib.sha256(data).hexdigest() == want
            upload = tmp_path / "upload.bin"
            upload.write_bytes(hashlib.sha256(b"upload").digest() * ((6 << 20) // 32) + b"end")
            reply = text(bed.peer, "curl", "-sS", "--fail", "-H", "Expect:", "--data-binary",
                         f"@{upload}", f"{url}/upload")
            assert reply.split() == [hashlib.sha256(upload.read_bytes()).hexdigest(),
                                     str(upload.stat().st_size), bed.peer.ip], reply
            assert delivered(bed) - before >= 4  # probe, 1 keep-alive, 1 download, upload
        finally:
            stop(server)
        lines = log.read_text().splitlines()
        assert f"listening as uid {nobody.pw_uid}" in lines and shim_lines(log) == [], lines
