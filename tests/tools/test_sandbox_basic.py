"""Behaviour of stateless calls, sessions and the result fields."""

from __future__ import annotations

import threading

from jaxalign.tools import PythonSandbox, SandboxResult, backends
from tests.tools.helpers import SHORT_TIMEOUT_S, TIMEOUT_S, pinned


def test_backend_is_the_strongest_available(sandbox: PythonSandbox) -> None:
    expected = next(b for b in backends.BACKENDS if b == backends.RLIMIT_ONLY or backends.probe(b) is None)
    assert sandbox.backend == expected


def test_print_and_result_fields(sandbox: PythonSandbox) -> None:
    r = sandbox.run("print(1 + 1)")
    assert isinstance(r, SandboxResult)
    assert (r.stdout, r.stderr, r.ok, r.error, r.timed_out, r.truncated, r.sandbox_failure) == (
        "2\n", "", True, None, False, False, False)
    assert r.duration_s > 0


def test_exception_gives_one_line_error_and_traceback(sandbox: PythonSandbox) -> None:
    r = sandbox.run("x = 1\n1 / 0")
    assert not r.ok and not r.sandbox_failure
    assert r.error == "ZeroDivisionError: division by zero"
    assert "Traceback" in r.stderr and "1 / 0" in r.stderr
    assert "jail.py" not in r.stderr  # only the user's own frames are shown


def test_syntax_error(sandbox: PythonSandbox) -> None:
    r = sandbox.run("def f(:\n  pass")
    assert not r.ok and r.error.startswith("SyntaxError")


def test_bare_final_expression_is_printed(sandbox: PythonSandbox) -> None:
    assert sandbox.run("1 + 1").stdout == "2\n"
    assert sandbox.run("x = 'a'\nx * 2").stdout == "'aa'\n"  # repr, as in a notebook
    assert sandbox.run("None").stdout == ""
    assert sandbox.run("print('a')").stdout == "a\n"  # print() returns None: not printed twice


def test_system_exit(sandbox: PythonSandbox) -> None:
    assert sandbox.run("import sys; print(1); sys.exit(0)").ok
    r = sandbox.run("import sys; sys.exit(3)")
    assert not r.ok and r.error == "SystemExit: 3"


def test_stateless_calls_do_not_share_state(make_sandbox) -> None:
    sb = make_sandbox(workers=1)
    with pinned(sb) as run:  # both calls through the same server (the pool may hold two workers)
        assert run("secret = 42\nimport colorsys").ok
        r = run("import sys\nprint('secret' in globals(), 'colorsys' in sys.modules)")
    assert r.stdout == "False False\n"


def test_session_keeps_state_and_sessions_are_separate(sandbox: PythonSandbox) -> None:
    with sandbox.session() as s, sandbox.session() as other:
        assert s.run("x = 3").ok
        assert s.run("import math\ny = x * 2").ok
        assert s.run("x * 2").stdout == "6\n"
        assert s.run("print(math.sqrt(y))").stdout == "2.449489742783178\n"
        r = other.run("x")
        assert r.error == "NameError: name 'x' is not defined"


def test_numpy_and_sympy_import_inside(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import numpy as np, sympy as sp\nprint(int(np.arange(5).sum()), sp.factor(sp.Symbol('x')**2 - 1))",
                    timeout_s=60)
    assert r.ok, r.stderr
    assert r.stdout == "10 (x - 1)*(x + 1)\n"


def test_stdin_reads_eof(sandbox: PythonSandbox) -> None:
    r = sandbox.run("input()")
    assert not r.ok and not r.timed_out
    assert r.error == "EOFError: EOF when reading a line"
    assert sandbox.run("import sys; print(repr(sys.stdin.read()))").stdout == "''\n"


def test_invalid_utf8_and_binary_output(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import sys, os\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00')\nsys.stdout.flush()\n"
                    "_ = os.write(2, b'bad \\xc3')")
    assert r.ok
    assert r.stdout == "\ufffd\ufffd\x00"
    assert r.stderr == "bad \ufffd"


def test_output_is_truncated_with_a_marker(make_sandbox) -> None:
    sb = make_sandbox(max_output_chars=100)
    r = sb.run("print('x' * 1000)\nimport sys; _ = sys.stderr.write('e' * 50)")
    assert r.ok and r.truncated and r.error == "output truncated"
    assert r.stdout == "x" * 100 + "\n... [output truncated: 901 chars]"
    assert r.stderr == "e" * 50
    assert sb.stats()["truncated"] == 1


def test_parent_environment_does_not_leak(sandbox: PythonSandbox, monkeypatch) -> None:
    monkeypatch.setenv("JAXALIGN_TEST_SECRET", "hunter2")
    r = sandbox.run("import os\nprint(os.environ.get('JAXALIGN_TEST_SECRET'), 'hunter2' in str(os.environ))")
    assert r.stdout == "None False\n"


def test_timeout_can_be_set_per_call(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import time; time.sleep(0.3); print('done')", timeout_s=0.1)
    assert r.timed_out and r.error == "timeout"
    assert sandbox.run("import time; time.sleep(0.3); print('done')", timeout_s=TIMEOUT_S).stdout == "done\n"


def test_run_many_preserves_order(sandbox: PythonSandbox) -> None:
    codes = [f"import time; time.sleep({0.05 * (i % 3)}); print({i})" for i in range(12)] + ["1/0"]
    results = sandbox.run_many(codes)
    assert [r.stdout for r in results[:-1]] == [f"{i}\n" for i in range(12)]
    assert results[-1].error == "ZeroDivisionError: division by zero"


def test_concurrent_use_from_threads(sandbox: PythonSandbox) -> None:
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            with sandbox.session() as s:
                s.run(f"n = {i}")
                for _ in range(3):
                    assert sandbox.run(f"print({i} * 2)").stdout == f"{2 * i}\n"
                    assert s.run("n += 1").ok
                assert s.run("n").stdout == f"{i + 3}\n"
            assert [r.stdout for r in sandbox.run_many([f"print({i})", f"print({i + 1})"])] == [f"{i}\n", f"{i + 1}\n"]
        except Exception as e:  # collected: assertions in threads would be lost
            errors.append(f"thread {i}: {e!r}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_many_sessions_alive_at_once(make_sandbox) -> None:
    sb = make_sandbox(workers=2)
    sessions = [sb.session() for _ in range(64)]
    for i, s in enumerate(sessions):
        assert s.run(f"v = {i}").ok
    assert [s.run("v").stdout for s in sessions] == [f"{i}\n" for i in range(64)]
    for s in sessions:
        s.close()
    assert sb.stats()["sandbox_failures"] == 0


def test_stats_counters(make_sandbox) -> None:
    sb = make_sandbox()
    sb.run("print(1)")
    sb.run("1/0")
    sb.run("while True: pass", timeout_s=SHORT_TIMEOUT_S)
    sb.run("bytearray(10**10)")
    stats = sb.stats()
    assert {k: stats[k] for k in ("calls", "ok", "user_errors", "timeouts", "memory_errors", "sandbox_failures")} == {
        "calls": 4, "ok": 1, "user_errors": 1, "timeouts": 1, "memory_errors": 1, "sandbox_failures": 0}
    assert set(stats) >= {"truncated", "crashes", "workers_restarted"}


def test_resource_limits_are_applied(make_sandbox) -> None:
    sb = make_sandbox(memory_mb=300, disk_mb=10, max_open_files=100, max_procs=50)
    r = sb.run("import resource as r\nprint([r.getrlimit(x)[0] for x in (r.RLIMIT_AS, r.RLIMIT_FSIZE, "
               "r.RLIMIT_NOFILE, r.RLIMIT_CORE)], r.getrlimit(r.RLIMIT_CPU)[0] > 0, r.getrlimit(r.RLIMIT_NPROC)[0])")
    assert r.stdout == f"[{300 << 20}, {10 << 20}, 100, 0] True 50\n", r.stderr


def test_preloaded_modules_are_ready(make_sandbox) -> None:
    sb = make_sandbox(preload=["fractions"])
    assert sb.run("import sys\nprint('fractions' in sys.modules)").stdout == "True\n"
    assert sb.run("from fractions import Fraction\nFraction(1, 3) + Fraction(1, 6)").stdout == "Fraction(1, 2)\n"


def test_run_many_of_nothing(sandbox: PythonSandbox) -> None:
    assert sandbox.run_many([]) == []


def test_dropped_session_gives_its_worker_back(make_sandbox) -> None:
    import gc

    sb = make_sandbox(workers=1)
    s = sb.session()
    s.run("x = 1")
    worker = s._worker
    del s
    gc.collect()
    assert worker in sb._pool._idle  # reset (state wiped) and reusable
    with sb.session() as s2:
        assert s2.run("'x' in globals()").stdout == "False\n"
