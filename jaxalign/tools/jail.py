"""The user-code process inside the sandbox: confinement, then a notebook-style cell runner.

Stdlib only, imported by ``worker.py`` inside the sandbox. ``child_main`` runs in a process freshly
forked from the worker server. It confines itself (new session, rlimits, unprivileged uid, no new
privileges, a seccomp filter), then runs one cell (stateless call) or a loop of cells (session), and
reports each outcome as a framed message on its result pipe. Output goes to fd-level pipes read by
the server, so ``sys.stdout.buffer``, ``os.write(1, ...)`` and subprocesses are all captured.
"""

from __future__ import annotations

import ast
import ctypes
import fcntl
import linecache
import os
import platform
import resource
import signal
import struct
import sys
import traceback
from typing import Any

import protocol

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
RESULT_FD, REQUEST_FD = 3, 4
CELL = "<cell>"
_KEEP_ALIVE: list[Any] = []
_HERE = os.path.dirname(os.path.abspath(__file__))


def prctl(option: int, arg: int = 0, arg3: Any = 0) -> None:
    """Call prctl(2), raising OSError on failure."""
    if _libc.prctl(option, arg, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


# --- seccomp -----------------------------------------------------------------------------------
# Defence in depth on top of namespaces: even in the rlimit-only backend this blocks network sockets
# (and, where the host's unix sockets are visible, every socket: socketpair still works),
# ptrace/process_vm_* (no reading other processes), SysV IPC (its objects outlive the process, so
# they would leak state and memory between calls), and namespace/mount/keyring/bpf/io_uring
# syscalls (kernel attack surface that math code never needs).
_ARCHES = {  # machine -> (AUDIT_ARCH, socket, clone, clone3, blocked syscall numbers)
    "x86_64": (0xC000003E, 41, 56, 435, (
        101, 310, 311,  # ptrace, process_vm_readv/writev
        29, 30, 31, 67, 64, 65, 66, 220, 68, 69, 70, 71,  # SysV shm, sem, msg
        250, 248, 249, 321, 298, 323,  # keyctl, add_key, request_key, bpf, perf_event_open, userfaultfd
        272, 308, 165, 166, 155, 425, 426, 427)),  # unshare, setns, mount, umount2, pivot_root, io_uring
    "aarch64": (0xC00000B7, 198, 220, 435, (
        117, 270, 271,
        194, 196, 195, 197, 190, 193, 191, 192, 186, 189, 188, 187,
        219, 217, 218, 280, 241, 282,
        97, 268, 40, 39, 41, 425, 426, 427)),
}
_ALLOW, _ERRNO, _CLONE_NS_FLAGS = 0x7FFF0000, 0x00050000, 0x7E020000


def _seccomp_program(machine: str, unix_sockets: bool) -> list[tuple[int, int, int, int]] | None:
    if machine not in _ARCHES:
        return None
    arch, nr_socket, nr_clone, nr_clone3, blocked = _ARCHES[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    deny = (ret, 0, 0, _ERRNO | 1)  # EPERM
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), deny, (ld, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), deny]  # x32 ABI syscalls would bypass the numbers below
    prog += [(jeq, 0, 1, nr_clone3), (ret, 0, 0, _ERRNO | 38)]  # ENOSYS: glibc falls back to clone()
    for nr in blocked:
        prog += [(jeq, 0, 1, nr), deny]
    prog += [(jeq, 0, 3, nr_clone), (ld, 0, 0, 16), (jset, 0, 1, _CLONE_NS_FLAGS), deny]
    prog += [(ld, 0, 0, 0), (jeq, 1, 0, nr_socket), (ret, 0, 0, _ALLOW)]
    family = 1 if unix_sockets else 0xFFFFFFFF  # AF_UNIX, or no family at all
    prog += [(ld, 0, 0, 16), (jeq, 1, 0, family), (ret, 0, 0, _ERRNO | 13), (ret, 0, 0, _ALLOW)]  # EACCES
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _compile_seccomp(unix_sockets: bool) -> tuple[Any, Any] | None:
    prog = _seccomp_program(platform.machine(), unix_sockets)
    if prog is None:
        return None
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    return buf, _SockFprog(len(prog), ctypes.addressof(buf))


# Built once in the server at import: forked children inherit it, and building it per call (uname,
# ctypes classes) would cost milliseconds of copy-on-write faults in every child.
_SECCOMP = {unix: _compile_seccomp(unix) for unix in (False, True)}


def install_seccomp(unix_sockets: bool) -> bool:
    """Install the filter (requires no_new_privs); False on an architecture without a table."""
    compiled = _SECCOMP[unix_sockets]
    if compiled is None:
        return False
    prctl(PR_SET_SECCOMP, 2, ctypes.byref(compiled[1]))
    return True


# --- confinement -------------------------------------------------------------------------------
def _set_limit(which: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(which, (soft, soft if hard is None else hard))


def confine(cfg: dict[str, Any], workdir: str) -> None:
    """Apply every per-process restriction; raises if one that must hold cannot be applied."""
    mb = 1 << 20
    cpu = int(cfg["timeout_s"]) + 2
    _set_limit(resource.RLIMIT_AS, cfg["memory_mb"] * mb)
    _set_limit(resource.RLIMIT_FSIZE, cfg["disk_mb"] * mb)
    _set_limit(resource.RLIMIT_NOFILE, cfg["max_open_files"])
    _set_limit(resource.RLIMIT_CORE, 0)
    # CPU time is per process and cumulative, so each cell gets its own soft limit (see run_cell)
    # under an open hard limit; the wall-clock kill by the server is the real bound.
    _set_limit(resource.RLIMIT_CPU, cpu, resource.RLIM_INFINITY)
    uid = cfg["uid"]
    if uid is not None and os.getuid() == 0:
        # RLIMIT_NPROC is ignored for root, so it only binds after the switch; a uid unique to this
        # worker makes it a per-sandbox cap instead of one shared by every sandbox.
        _set_limit(resource.RLIMIT_NPROC, cfg["max_procs"])
        os.chown(workdir, uid, uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
            raise RuntimeError("privilege drop failed")
        prctl(PR_SET_DUMPABLE, 1)  # after setuid the kernel hides /proc/self from the process itself
    elif cfg["max_procs"]:
        _set_limit(resource.RLIMIT_NPROC, cfg["max_procs"])
    prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (sudo, su) can never raise privileges again
    if cfg["seccomp"]:
        install_seccomp(cfg["unix_sockets"])


def _setup_process(workdir: str, out_fd: int, err_fd: int, res_fd: int, req_fd: int) -> None:
    os.setsid()  # own process group, detached from the server's
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the server that reports on us
    # Move the sources above the targets first, so that no dup2 below clobbers a source.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in (out_fd, err_fd, res_fd, req_fd)]
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # stdin is empty: input() raises EOFError, never hangs
    for fd, target in zip(high, (1, 2, RESULT_FD, REQUEST_FD)):
        os.dup2(fd, target)
    os.closerange(REQUEST_FD + 1, 1 << 20)
    os.chdir(workdir)


def _reset_interpreter(workdir: str, env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env, HOME=workdir, TMPDIR=workdir, MPLCONFIGDIR=workdir, XDG_CACHE_HOME=workdir)
    # The server's stream objects own fds 0-2; if they were garbage-collected they would close the
    # pipes that now sit on those fds, so keep them alive (the process ends with os._exit).
    _KEEP_ALIVE.extend([sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__])
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", errors="backslashreplace", buffering=1,
                                       closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1,
                                       closefd=False)
    sys.argv = [""]
    sys.path[:] = [""] + [p for p in sys.path if p and p != _HERE]  # as for `python -c`
    signal.signal(signal.SIGINT, signal.default_int_handler)


# --- cells -------------------------------------------------------------------------------------
def _user_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != CELL:
        tb = tb.tb_next  # hide the runner's own frames: the model should see only its code
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _error_line(exc: BaseException) -> str:
    """One line, e.g. "ZeroDivisionError: division by zero" (first line of a multi-line message)."""
    head, _, message = traceback.format_exception_only(type(exc), exc)[-1].strip().partition(":")
    message = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    return f"{head}: {message}" if message else head


def run_cell(code: str, namespace: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one cell in ``namespace``; a bare final expression is printed (repr, unless None)."""
    used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(used + timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    linecache.cache[CELL] = (len(code), None, code.splitlines(True), CELL)
    outcome: dict[str, Any] = {"ok": True, "error": None, "kind": "ok"}
    try:
        tree = ast.parse(code, CELL, "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, CELL, "exec"), namespace)  # inside the sandbox, never the trainer
        if last is not None:
            value = eval(compile(ast.Expression(last.value), CELL, "eval"), namespace)
            if value is not None:
                print(repr(value))
    except SystemExit as e:
        if e.code not in (None, 0):
            outcome = {"ok": False, "error": f"SystemExit: {e.code}"[:300], "kind": "exception"}
    except BaseException as e:  # report everything the cell raised, like a notebook
        try:
            sys.stderr.write(_user_traceback(e))
            line = _error_line(e)
        except BaseException:  # formatting can fail under a memory limit
            line = type(e).__name__
        kind = "memory" if isinstance(e, MemoryError) else "exception"
        outcome = {"ok": False, "error": line[:300], "kind": kind}
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # a closed or broken stream must not hide the result
            pass
    return outcome


def _warm_up() -> None:
    """Touch the parse/compile/exec/report paths once while the child waits for its code: in a
    fresh fork, the first use copies ~1 ms worth of the server's pages (copy-on-write)."""
    tree = ast.parse("_x = sum(range(10))\n_x", CELL, "exec")
    exec(compile(tree, CELL, "exec"), {"__builtins__": __builtins__})
    protocol.encode({"ok": True, "error": None, "kind": "ok", "w": repr(tree.body[-1])})


def child_main(cfg: dict[str, Any], workdir: str, fds: tuple[int, int, int, int], once: bool) -> None:
    """Entry point of a forked user-code process; never returns.

    The process confines itself before it receives any code, so the server can fork it ahead of
    time. It then serves cells from its request pipe in one namespace: a single cell when ``once``
    (a stateless call), or until the pipe closes (a session).
    """
    status = 70
    try:
        _setup_process(workdir, *fds)
        confine(cfg, workdir)
        _reset_interpreter(workdir, cfg["env"])
        protocol.write_message(RESULT_FD, {"started": True})  # from here on, failures are the code's own
        _warm_up()
        owner = os.getpid()
        namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        while True:
            request = protocol.read_message(REQUEST_FD)
            if request is None:
                status = 0
                break
            outcome = run_cell(request["code"], namespace, request["timeout_s"])
            if os.getpid() != owner:  # a process forked by the cell: finish like `python -c` would
                status = 0 if outcome["ok"] else 1
                break
            protocol.write_message(RESULT_FD, outcome)
            if once:
                status = 0
                break
    except BaseException as e:  # confinement failed: report, never run the code
        try:
            protocol.write_message(RESULT_FD, {"ok": False, "kind": "setup", "error": f"{type(e).__name__}: {e}"})
        except BaseException:
            pass
    os._exit(status)
