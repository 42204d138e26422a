"""The core guarantees hold on every backend available here, not only on the strongest one."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaxalign.tools import PythonSandbox, SandboxUnavailableError, backends

REPO = Path(__file__).resolve().parents[2]


def _make(backend: str) -> PythonSandbox:
    kwargs = {"timeout_s": 2.0, "memory_mb": 256, "workers": 1, "backend": backend}
    if backend == backends.RLIMIT_ONLY and backends._rlimit_only_problem(sys.executable):
        kwargs["python"] = "/usr/bin/python3"  # e.g. a pyenv interpreter under /root (0700)
    try:
        return PythonSandbox(**kwargs)
    except SandboxUnavailableError as e:
        pytest.skip(f"backend not available on this machine: {e}")


@pytest.fixture(scope="module", params=backends.BACKENDS)
def each_backend(request) -> Iterator[PythonSandbox]:
    sb = _make(request.param)
    assert sb.backend == request.param
    yield sb
    sb.close()


def test_runs_code_and_sessions(each_backend: PythonSandbox) -> None:
    assert each_backend.run("print(1 + 1)").stdout == "2\n"
    with each_backend.session() as s:
        s.run("x = 20")
        assert s.run("x + 1").stdout == "21\n"


def test_no_network(each_backend: PythonSandbox) -> None:
    r = each_backend.run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)")
    assert not r.ok and not r.timed_out


def test_no_writes_to_repo_root_or_etc(each_backend: PythonSandbox) -> None:
    for target in (str(REPO / "sandbox_was_here.txt"), "/root/sandbox_was_here.txt", "/etc/sandbox_was_here.txt"):
        r = each_backend.run(f"open({target!r}, 'w').write('x')")
        assert not r.ok, target
        assert not os.path.exists(target)
    r = each_backend.run("open('mine.txt', 'w').write('x')\nimport os; print(os.listdir('.'))")
    assert r.stdout == "['mine.txt']\n"


def test_cannot_touch_the_parent(each_backend: PythonSandbox) -> None:
    pid = os.getpid()
    assert not each_backend.run(f"import os; os.kill({pid}, 9)").ok
    assert not each_backend.run(f"open('/proc/{pid}/environ', 'rb').read()").ok
    assert not each_backend.run(f"open('/proc/{pid}/mem', 'rb').read(1)").ok


@pytest.mark.parametrize("code", ["import os\nwhile True:\n    os.fork()", "while True:\n    pass",
                                  "x = bytearray(10 * 1024**3)", "import os\nos.kill(os.getpid(), 9)"])
def test_contains_and_recovers(each_backend: PythonSandbox, code: str) -> None:
    r = each_backend.run(code)
    assert not r.ok and not r.sandbox_failure, r.error
    assert each_backend.run("print('next')").stdout == "next\n"


def test_no_sysv_ipc_and_no_host_unix_sockets(each_backend: PythonSandbox) -> None:
    r = each_backend.run("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                         "print(libc.shmget(0, 4096, 0o1600), ctypes.get_errno())")
    assert r.stdout == "-1 1\n", r.stderr  # SysV objects would outlive the call: refused (EPERM)
    assert each_backend.run("import socket\na, b = socket.socketpair()\na.send(b'x')\nb.recv(1)").stdout == "b'x'\n"
    r = each_backend.run("import socket\nsocket.socket(socket.AF_UNIX).connect('/run/dbus/system_bus_socket')")
    assert not r.ok  # bwrap: no /run at all; elsewhere socket() itself is refused
    r = each_backend.run("import socket\nsocket.socket(socket.AF_UNIX)")
    assert r.ok == (each_backend.backend == backends.BUBBLEWRAP)
