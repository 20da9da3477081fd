"""ConnectionFailure: the one table from a connection's failure to its errno."""

from __future__ import annotations

import errno
import os

import pytest

from joyride.tcp.failure import ConnectionFailure, failure_errno


@pytest.mark.parametrize(("failure", "code", "kind"), [
    (ConnectionFailure.RESET, errno.ECONNRESET, ConnectionResetError),
    (ConnectionFailure.REFUSED, errno.ECONNREFUSED, ConnectionRefusedError),
    (ConnectionFailure.TIMEOUT, errno.ETIMEDOUT, TimeoutError),
])
def test_each_failure_has_the_kernels_errno_and_exception(
        failure: ConnectionFailure, code: int, kind: type[OSError]) -> None:
    assert failure.errno == code == failure_errno(failure)
    exc = failure.exception()
    assert type(exc) is kind and exc.errno == code
    # What OSError itself picks for that errno, with the C library's message.
    assert type(OSError(code, "")) is kind and exc.strerror == os.strerror(code)


def test_members_are_the_reasons_strings_and_no_failure_reports_the_default() -> None:
    assert {str(f) for f in ConnectionFailure} == {"reset", "refused", "timeout"}
    assert ConnectionFailure.RESET == "reset"
    assert failure_errno(None) == 0
    assert failure_errno(None, errno.ECONNREFUSED) == errno.ECONNREFUSED
