"""Isolation backends: which ones work on this machine, and the command line that starts a worker.

From strongest to weakest:

* ``bubblewrap``: ``bwrap`` with new net/pid/ipc/uts namespaces, a read-only view of /usr, /etc and
  the interpreter, fresh /proc and /dev, and a private size-limited tmpfs /tmp for working dirs.
  Run as root, no user namespace is needed and the server keeps only the capabilities it uses to
  drop user code to an unprivileged uid.
* ``namespaces``: the same namespaces made by the worker itself with unshare(2) (root only), with
  every mount remounted read-only except a tmpfs for working dirs.
* ``rlimit-only``: a plain process; user code still gets rlimits, an unprivileged uid (as root) and
  the seccomp filter (no network sockets), but sees the host filesystem and process table.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from jaxalign.tools.results import SandboxUnavailableError

BUBBLEWRAP, NAMESPACES, RLIMIT_ONLY = "bubblewrap", "namespaces", "rlimit-only"
BACKENDS = (BUBBLEWRAP, NAMESPACES, RLIMIT_ONLY)
TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(TOOLS_DIR, "worker.py")
BWRAP_WORKROOT = "/tmp"  # inside the bwrap sandbox: a private tmpfs
# What the in-sandbox server needs as root: switch uid/gid, signal and clean up after user processes.
_SERVER_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER")
_LIB_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def is_root() -> bool:
    """Whether this process can drop user code to another uid (and so use RLIMIT_NPROC)."""
    return os.geteuid() == 0


def worker_env(python: str) -> dict[str, str]:
    """The complete environment of a worker: nothing is inherited, so no secret leaks in."""
    return {
        "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        # One thread per BLAS/OpenMP pool: threads count against RLIMIT_NPROC, and each glibc arena
        # reserves address space that counts against RLIMIT_AS.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _interpreter_dirs(python: str) -> list[str]:
    """The directories ``python`` needs, spelt as the host reaches them (symlinks not resolved)."""
    exe_dir = os.path.dirname(os.path.abspath(python))
    dirs = [exe_dir, os.path.dirname(exe_dir), TOOLS_DIR]  # the parent is the prefix (a venv: its pyvenv.cfg)
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        dirs += [os.path.dirname(os.path.abspath(sys.executable)), sys.prefix, sys.exec_prefix, sys.base_prefix,
                 sys.base_exec_prefix, *site.getsitepackages()]
    else:
        dirs.append(os.path.dirname(os.path.dirname(os.path.realpath(python))))
    return dirs


def python_paths(python: str) -> list[str]:
    """Directories the interpreter needs inside the sandbox: prefixes, site-packages, worker code.

    For the running interpreter these are read from ``sys``; the venv or a CI checkout may live under
    /tmp or /root, which the sandbox would otherwise hide. Each directory is listed resolved and, when
    a symlink leads to it (a venv or checkout reached through a link), also as the host spells it: the
    worker is started, and finds its prefix and site-packages, by that spelling, so bwrap binds the
    link's target there too (a bind's source is resolved on the host).
    """
    paths = set()
    for path in map(os.path.abspath, _interpreter_dirs(python)):
        if os.path.isdir(path):
            paths |= {path, os.path.realpath(path)}
    kept: list[str] = []
    # Drop paths already covered by a kept one or by the /usr bind: a link inside a bound directory
    # is bound with it, and its target is in the list.
    for path in sorted(paths, key=len):
        if not any(_within(path, k) for k in [*kept, "/usr"]):
            kept.append(path)
    return kept


@functools.lru_cache(maxsize=1)
def _bwrap_features() -> frozenset[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return frozenset()
    out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    return frozenset(opt for opt in ("--size", "--perms") if opt in out.stdout + out.stderr)


def bwrap_prefix(paths: Sequence[str], disk_mb: int) -> list[str]:
    """The bwrap command line up to (not including) the ``--`` before the worker command."""
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if not is_root():
        argv.append("--unshare-user")
    argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for d in _LIB_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    features = _bwrap_features()
    # /tmp comes before the interpreter binds: a venv or checkout under /tmp is bound on top of it.
    argv += ["--perms", "0755"] if "--perms" in features else []
    argv += ["--size", str(disk_mb << 20)] if "--size" in features else []
    argv += ["--tmpfs", BWRAP_WORKROOT]
    made = {"/", BWRAP_WORKROOT}
    for path in paths:
        # bwrap would create missing parents with the host's modes (e.g. /root as 0700, which the
        # sandbox uid could not traverse), so create them explicitly as 0755 first.
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/" + "/".join(parts[:i])
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", parent] if "--perms" in features else ["--dir", parent]
        argv += ["--ro-bind", path, path]
    argv += ["--remount-ro", "/", "--chdir", BWRAP_WORKROOT]
    if is_root():
        argv += ["--cap-drop", "ALL"] + [a for cap in _SERVER_CAPS for a in ("--cap-add", cap)]
    return argv


def worker_argv(backend: str, python: str, cfg: dict[str, Any]) -> list[str]:
    """Command line of one worker server for ``backend`` with its JSON configuration."""
    command = [python, "-I", "-B", WORKER, json.dumps(cfg)]
    if backend == BUBBLEWRAP:
        return [*bwrap_prefix(cfg["expose"], cfg["disk_mb"]), "--", *command]
    return command


def _unreadable_for_others(paths: Sequence[str]) -> list[str]:
    bad = []
    for path in paths:
        current = ""
        for part in path.strip("/").split("/"):
            current += "/" + part
            if not os.stat(current).st_mode & 0o001:
                bad.append(current)
                break
    return bad


def _rlimit_only_problem(python: str) -> str | None:
    if not is_root():
        return None  # no uid switch, so nothing extra must be readable
    bad = _unreadable_for_others(python_paths(python)) if os.path.exists(python) else []
    if bad:
        return (f"the interpreter needs {bad[0]}, which the unprivileged sandbox uid cannot read; install "
                f"bubblewrap or pass an interpreter outside it (python=...)")
    return None


@functools.cache
def probe(backend: str) -> str | None:
    """None if a namespace ``backend`` works here, else the reason it does not (cached per process)."""
    python = sys.executable
    if backend == BUBBLEWRAP:
        if shutil.which("bwrap") is None:
            return "bwrap is not installed (apt-get install bubblewrap)"
        # The worker script itself in probe mode, started as workers are: this checks that the
        # interpreter, its site-packages and the worker code are all reachable inside.
        argv = [*bwrap_prefix(python_paths(python), 16), "--", python, "-I", "-B", WORKER, json.dumps({"probe": True})]
    elif backend == NAMESPACES:
        if not is_root():
            return "needs root (unshare of mount and pid namespaces)"
        workroot = tempfile.mkdtemp(prefix="jaxalign-sandbox-probe-")
        cfg = {"probe": True, "unshare": True, "workroot": workroot, "disk_mb": 1, "expose": python_paths(python)}
        argv = [python, "-I", "-B", WORKER, json.dumps(cfg)]
    else:
        raise ValueError(f"probe() covers {BUBBLEWRAP!r} and {NAMESPACES!r}, not {backend!r}")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=worker_env(python), cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"probe failed: {e}"
    finally:
        if backend == NAMESPACES:
            shutil.rmtree(workroot, ignore_errors=True)
    return None if proc.returncode == 0 else f"probe exited with {proc.returncode}: {proc.stderr.strip()[-500:]}"


def select_backend(requested: str, python: str) -> tuple[str, dict[str, str]]:
    """Resolve ``"auto"`` to the strongest working backend; a forced unavailable one raises.

    Returns the backend and, for each stronger backend that was skipped, the reason.
    """
    if requested != "auto" and requested not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {requested!r}; expected 'auto' or one of {BACKENDS}")
    reasons = {}
    for name in BACKENDS if requested == "auto" else (requested,):
        reason = _rlimit_only_problem(python) if name == RLIMIT_ONLY else probe(name)
        if reason is None:
            return name, reasons
        reasons[name] = reason
    detail = "; ".join(f"{k}: {v}" for k, v in reasons.items())
    raise SandboxUnavailableError(f"sandbox backend {requested!r} is not available ({detail})")
