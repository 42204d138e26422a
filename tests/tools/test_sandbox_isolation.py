"""Isolation: network, filesystem, the calling process and privileges."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from jaxalign.tools import PythonSandbox, backends
from tests.tools.helpers import TIMEOUT_S, pinned

REPO = Path(__file__).resolve().parents[2]


def test_no_network_to_the_internet(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\nprint('connected')")
    assert not r.ok and not r.timed_out and "connected" not in r.stdout
    assert r.error.split(":")[0] in ("PermissionError", "OSError", "ConnectionRefusedError")


def test_no_network_to_a_server_of_the_parent() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        with PythonSandbox(timeout_s=TIMEOUT_S, workers=1) as sb:
            code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
            r = sb.run(code)
            assert not r.ok and "connected" not in r.stdout
            r = sb.run(f"import socket\ns = socket.socket(socket.AF_INET6)\ns.connect(('::1', {port}))")
            assert not r.ok
        # A connect that succeeded would sit in the accept queue by now (the calls have returned):
        # an empty queue, checked without waiting, means nobody ever reached the parent's server.
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


@pytest.mark.parametrize("target", [str(REPO / "sandbox_was_here.txt"), "/root/sandbox_was_here.txt",
                                    "/etc/sandbox_was_here.txt", "/usr/sandbox_was_here.txt"])
def test_no_writes_outside_the_working_dir(sandbox: PythonSandbox, target: str) -> None:
    r = sandbox.run(f"open({target!r}, 'w').write('x')")
    assert not r.ok and r.error.split(":")[0] in ("PermissionError", "OSError", "FileNotFoundError"), r.error
    assert not os.path.exists(target)


def test_shared_tmp_is_not_writable(sandbox: PythonSandbox) -> None:
    if sandbox.backend == backends.RLIMIT_ONLY:
        pytest.skip("rlimit-only has no mount namespace: host /tmp stays world-writable (documented)")
    for path in ("/tmp/sandbox_was_here.txt", "/dev/shm/sandbox_was_here.txt", "/var/tmp/sandbox_was_here.txt"):
        r = sandbox.run(f"open({path!r}, 'w').write('x')")
        assert not r.ok, path


def test_working_dir_is_private_writable_and_cleaned_up(make_sandbox) -> None:
    sb = make_sandbox(workers=1)
    with pinned(sb) as run:  # one server, so the later calls see the same work root as the first
        first = run("import os\nopen('a.txt', 'w').write('hello')\nos.mkdir('d')\nprint(os.getcwd())")
        assert first.ok, first.stderr
        cwd = first.stdout.strip()
        for _ in range(3):
            assert run("open('f.txt', 'w').write('x' * 100000)").ok
        # Every call's directory is removed when it ends: listing the work root shows only our own.
        r = run(f"import os\nhere = os.getcwd()\nprint(here != {cwd!r}, os.path.exists({cwd!r}), os.listdir('.'))\n"
                "print([d for d in os.listdir('..') if d.startswith('sbx-') and d != os.path.basename(here)])")
    assert r.stdout == "True False []\n[]\n", r.stderr
    with sb.session() as s1, sb.session() as s2:
        s1.run("open('state.txt', 'w').write('1')")
        assert s1.run("import os; os.listdir('.')").stdout == "['state.txt']\n"  # files persist in a session
        assert s2.run("import os; os.listdir('.')").stdout == "[]\n"
        assert s1.run("import os; os.getcwd()").stdout != s2.run("import os; os.getcwd()").stdout
    with sb.session() as s3:  # may reuse the worker of a closed session: its files are gone
        assert s3.run("import os; os.listdir('.')").stdout == "[]\n"
    assert sb.run("import tempfile, os\nprint(os.path.dirname(tempfile.mkdtemp()) == os.getcwd())").stdout == "True\n"


def test_code_cannot_signal_the_parent(sandbox: PythonSandbox) -> None:
    import signal

    r = sandbox.run(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\nprint('sent')")
    assert not r.ok and "sent" not in r.stdout
    r = sandbox.run(f"import os, signal\nos.killpg(os.getpgid({os.getpid()}), signal.SIGKILL)")
    assert not r.ok
    sandbox.run("import os, signal\nos.kill(-1, signal.SIGKILL)")  # everything it may signal: only itself
    assert sandbox.run("print('still here')").stdout == "still here\n"
    os.kill(os.getpid(), 0)  # we are alive, obviously; and the signal handler was never bypassed
    assert signal.getsignal(signal.SIGTERM) is not None


@pytest.mark.parametrize("name", ["mem", "environ", "maps"])
def test_code_cannot_read_the_parent(sandbox: PythonSandbox, name: str) -> None:
    r = sandbox.run(f"open('/proc/{os.getpid()}/{name}', 'rb').read(64)")
    assert not r.ok and r.error.split(":")[0] in ("PermissionError", "FileNotFoundError"), r.error


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid switch needs root; unprivileged runs keep the caller's uid")
def test_code_runs_unprivileged_with_seccomp(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import os\nstatus = open('/proc/self/status').read()\n"
                    "print(os.getuid() != 0, os.getgid() != 0, os.getgroups())\n"
                    "print([l.split()[1] for l in status.splitlines() if l.split(':')[0] in "
                    "('CapEff', 'CapPrm', 'NoNewPrivs', 'Seccomp')])")
    assert r.stdout == "True True []\n['0000000000000000', '0000000000000000', '1', '2']\n", r.stderr
    r = sandbox.run("import ctypes\nprint(ctypes.CDLL(None, use_errno=True).ptrace(0, 0, 0, 0), ctypes.get_errno())")
    assert r.stdout == "-1 1\n"  # PTRACE_TRACEME refused by seccomp (EPERM)


def test_sandbox_sees_no_host_processes(sandbox: PythonSandbox) -> None:
    if sandbox.backend == backends.RLIMIT_ONLY:
        pytest.skip("rlimit-only has no pid namespace (documented)")
    r = sandbox.run(f"import os\nprint(os.path.exists('/proc/{os.getpid()}'), len([p for p in os.listdir('/proc') "
                    "if p.isdigit()]) < 10)")
    assert r.stdout == "False True\n"
