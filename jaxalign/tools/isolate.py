"""Namespace setup for the "namespaces" backend, run by ``worker.py`` as root (stdlib only).

This is ``unshare --net --pid --fork --mount --ipc --uts --mount-proc`` done with direct syscalls, so
that the process tree dies with the trainer: each process in the chain holds PR_SET_PDEATHSIG, which
the ``unshare`` binary cannot set for itself. Inside, the whole filesystem is remounted read-only
except a size-limited tmpfs that holds the per-call working directories.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import sys

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
_OPTION_FLAGS = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21,
                 "strictatime": 1 << 24}
PR_SET_PDEATHSIG = 1


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)  # mountinfo writes " " as \040


def _mounts() -> list[tuple[str, int]]:
    """(mount point, flags to keep) for every mount visible in this mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            flags = sum(_OPTION_FLAGS.get(opt, 0) for opt in fields[5].split(","))
            out.append((_unescape(fields[4]), flags))
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hidden_ancestor(path: str) -> str | None:
    """The highest proper ancestor of ``path`` that other users cannot traverse (e.g. /root, 0700)."""
    current = ""
    for part in os.path.abspath(path).strip("/").split("/")[:-1]:
        current += "/" + part
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def _expose(paths: list[str]) -> None:
    """Make ``paths`` reachable for the unprivileged uid when an ancestor is private to root.

    A pyenv interpreter under /root (0700) would be unreadable after the privilege drop. The private
    ancestor is covered by an empty tmpfs and only the needed directories are bound back (which
    also hides the rest of it, e.g. /root/.ssh), as bubblewrap does.
    """
    handles = [(p, os.open(p, os.O_PATH)) for p in paths if os.path.isdir(p) and _hidden_ancestor(p)]
    for cover in sorted({_hidden_ancestor(p) for p, _ in handles}):
        _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path, fd in handles:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)


def make_readonly_except(workroot: str, size_mb: int, expose: list[str]) -> None:
    """Mount a tmpfs on ``workroot``, expose ``expose``, and remount every other mount read-only."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below may propagate back to the host
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # only this pid namespace
    os.umask(0o022)
    _expose(expose)
    _mount("tmpfs", workroot, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode=0755")
    failed = []
    for target, flags in _mounts():
        if _under(target, workroot) or _under(target, "/proc"):
            continue
        try:
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | flags)
        except OSError as e:
            failed.append(f"{target} ({e.strerror})")
    if any(t.split(" (")[0] == "/" for t in failed):
        raise OSError(f"cannot remount / read-only: {failed}")
    if failed:
        print(f"jaxalign sandbox: could not remount read-only: {', '.join(failed)}", file=sys.stderr)


def enter_namespaces(workroot: str, size_mb: int, expose: list[str]) -> None:
    """Unshare mount/uts/ipc/net/pid namespaces and return in the new pid namespace's init.

    The calling process stays outside as a waiter that mirrors the init's exit status.
    """
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    alive_r, alive_w = os.pipe()
    pid = os.fork()  # after CLONE_NEWPID, the next child is pid 1 of the new namespace
    if pid:
        os.close(alive_r)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 1)
    os.close(alive_w)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    if select.select([alive_r], [], [], 0)[0]:  # the waiter died before PDEATHSIG was armed
        os._exit(1)
    os.close(alive_r)
    make_readonly_except(workroot, size_mb, expose)
    _libc.sethostname(b"sandbox", 7)
