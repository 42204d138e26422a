"""Backends: how one is chosen and reported, and the core guarantees on every backend available here."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaxalign.errors import UserError
from jaxalign.tools import PythonSandbox, SandboxUnavailableError, backends
from jaxalign.tools import sandbox as sandbox_module
from tests.tools.helpers import HANG_GUARD_S, SHORT_TIMEOUT_S, TIMEOUT_S

REPO = Path(__file__).resolve().parents[2]


def _make(backend: str) -> PythonSandbox:
    kwargs = {"timeout_s": TIMEOUT_S, "memory_mb": 256, "workers": 1, "backend": backend}
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
    r = each_backend.run(code, timeout_s=SHORT_TIMEOUT_S)  # stopped by a limit or by the timeout: both fine
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


def test_backend_is_reported_in_stats(each_backend: PythonSandbox) -> None:
    stats = each_backend.stats()
    assert stats["backend"] == each_backend.backend  # for run metadata: which isolation the run had
    assert all(isinstance(v, int) for k, v in stats.items() if k != "backend"), stats
    assert json.loads(json.dumps(stats)) == stats


def test_forced_unavailable_backend_raises(monkeypatch) -> None:
    monkeypatch.setattr(backends, "probe", lambda name: f"{name} is not here")
    with pytest.raises(SandboxUnavailableError, match=r"'bubblewrap' is not available \(bubblewrap: bubblewrap is "
                       r"not here\)") as info:
        PythonSandbox(backend="bubblewrap")  # never a silent fallback to a weaker backend
    assert isinstance(info.value, UserError) and isinstance(info.value, RuntimeError)  # the CLI: one line, exit 2
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        PythonSandbox(backend="docker")


@pytest.fixture
def no_bwrap_on_path(monkeypatch):
    """Hide bwrap (as on a machine without bubblewrap), with fresh probe caches."""
    monkeypatch.setenv("PATH", "/nonexistent")
    backends.probe.cache_clear()
    yield
    backends.probe.cache_clear()


def test_auto_without_bubblewrap_falls_back_with_a_warning(no_bwrap_on_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(sandbox_module, "_announced", set())  # the backend is logged once per process
    kwargs = {} if backends._rlimit_only_problem(sys.executable) is None else {"python": "/usr/bin/python3"}
    with caplog.at_level(logging.INFO, logger="jaxalign.tools"):
        with PythonSandbox(timeout_s=TIMEOUT_S, workers=1, **kwargs) as sb:
            assert sb.backend == (backends.NAMESPACES if os.geteuid() == 0 else backends.RLIMIT_ONLY)
            assert sb.run("print(6 * 7)").stdout == "42\n"
            assert not sb.run("open('/etc/x', 'w')").ok
        with pytest.raises(SandboxUnavailableError, match="bwrap is not installed"):
            PythonSandbox(backend="bubblewrap")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # one line, naming the weaker backend and why
    assert warnings[0].startswith(f"Python sandbox: falling back to the weaker {sb.backend} backend: bubblewrap "
                                  "is unavailable (bwrap is not installed"), warnings


def test_venv_reached_through_a_symlink_runs_under_bubblewrap(tmp_path: Path) -> None:
    """The interpreter, as the trainer names it, lies behind a link outside every bound directory
    (the sandbox's /tmp is its own): its target must be bound at that name, or the probe fails."""
    if backends.probe(backends.BUBBLEWRAP) is not None:
        pytest.skip(f"bubblewrap is not available here: {backends.probe(backends.BUBBLEWRAP)}")
    prefix = os.path.realpath(sys.prefix)
    exe = os.path.relpath(os.path.abspath(sys.executable), sys.prefix)
    if exe.startswith(".."):
        pytest.skip(f"the interpreter {sys.executable} is not inside its prefix {sys.prefix}")
    link = tmp_path / "venv"
    link.symlink_to(prefix, target_is_directory=True)
    script = ("import json, sys\nfrom jaxalign.tools import PythonSandbox\n"
              f"with PythonSandbox(backend='bubblewrap', timeout_s={TIMEOUT_S}, workers=1) as sb:\n"
              "    r = sb.run('import sys, numpy\\nprint(sys.prefix)')\n"
              "    print(json.dumps([sys.prefix, sb.backend, r.ok, r.stdout, r.error]))\n")
    out = subprocess.run([str(link / exe), "-c", script], capture_output=True, text=True, timeout=HANG_GUARD_S,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == [str(link), "bubblewrap", True, f"{link}\n", None]
