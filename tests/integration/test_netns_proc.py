"""A thread in another network namespace than the process's main thread reads its own
namespace's ``/proc/net`` tables (``netns.proc_net``). ``/proc/net`` itself follows the
main thread: an embedded service's thread, reading it while a test's main thread had
entered the peer's namespace to connect, found none of its listeners, dropped them and
reset the connection (CI, session 33)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from joyride import netns
from joyride.service import apps

pytestmark = pytest.mark.integration


def test_a_thread_reads_its_own_namespaces_unix_table() -> None:
    name = f"jr-proc-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    listener_name = f"joyride/l/proc-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    seen: dict[str, object] = {}

    def in_namespace() -> None:
        with netns.inside(name):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(b"\0" + listener_name.encode())
                sock.listen()
                seen["own"] = listener_name in netns.proc_net("unix").read_text()
                seen["main_threads"] = listener_name in Path("/proc/net/unix").read_text()
                seen["listening_names"] = apps.listening_names()
            finally:
                sock.close()

    try:
        thread = threading.Thread(target=in_namespace)
        thread.start()
        thread.join(30)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    assert seen["own"] is True
    assert seen["main_threads"] is False  # the main thread's namespace: not there
    names = seen["listening_names"]
    assert isinstance(names, set) and listener_name in names
