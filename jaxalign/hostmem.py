"""Host allocator settings that keep XLA:CPU from re-faulting its temporary buffer every step.

XLA:CPU allocates one temporary buffer per execution (all of a step's intermediates: 5-6 GB for a
SmolLM2-135M train step at B=4, T=512) with `posix_memalign` on one of its worker threads, and frees
it when the step ends. glibc serves a request that large from the thread's own arena with a fresh
`mmap` and returns it with `munmap` on free, so every step touches gigabytes of new 4 KiB pages:
1.6 M page faults and 5-7 s of kernel time in a 23 s step, measured with `getrusage` on this
project's 2-core CPU machine.

The remedy: glibc with transparent huge pages (`glibc.malloc.hugetlb=1`). The buffer is still mapped
and unmapped every step, so memory goes back to the system as before, but in 2 MiB pages: ~5 k
faults instead of 1.6 M, 19.3-21 s per step instead of 23.2-24.6 s, resident size flat (9 GB).
It needs THP in `madvise` or `always` mode (/sys/kernel/mm/transparent_hugepage/enabled); with
`never` it changes nothing.

Two ways of keeping the buffer instead were measured and rejected because the resident size grew
until the kernel's OOM killer stopped the run (24 GB on this machine):
- glibc's heap (one arena, no mmap, no trimming; jaxalign's first version): small allocations were
  carved out of the freed buffer, so the next step's request no longer fit and the heap grew by
  another 6 GB every few steps. Steady steps took 17.7-19 s.
- jemalloc preloaded with `dirty_decay_ms:-1,muzzy_decay_ms:-1`: 17.7-18.2 s per step and 9 GB for
  a lone SFT loop, but scripts/bench_sft.py (torch's training step in the same process) was killed
  at 24 GB: freed memory is never returned, and jemalloc keeps it per arena (likely the cause).

Allocator settings are read once, at process start. The `jaxalign` command therefore restarts
itself once with them (`reexec_with_tuned_malloc`); code that imports jaxalign's modules into its
own process can call the same function first thing, start it with `tuned_environ()` as its
environment, or run under `GLIBC_TUNABLES=$(python -m jaxalign.hostmem) python ...`. Settings the
caller already has in `GLIBC_TUNABLES` win; `JAXALIGN_SYSTEM_MALLOC=1` turns all of this off. Only
the training process is affected: sandbox workers get a fresh environment
(jaxalign.tools.backends.worker_env).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNABLES = {"glibc.malloc.hugetlb": "1"}  # map large blocks with transparent huge pages (2 MiB faults)
MARKER = "JAXALIGN_TUNED_MALLOC"  # set by the restart, so it happens once
OPT_OUT = "JAXALIGN_SYSTEM_MALLOC"


def merge_tunables(existing: str | None) -> str:
    """`existing` GLIBC_TUNABLES with jaxalign's settings added where it does not set them."""
    items = [kv for kv in (existing or "").split(":") if kv]
    present = {kv.split("=", 1)[0] for kv in items}
    items += [f"{k}={v}" for k, v in TUNABLES.items() if k not in present]
    return ":".join(items)


def tuned_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `environ` (default: this process's) with the allocator settings merged in."""
    env = dict(os.environ if environ is None else environ)
    env["GLIBC_TUNABLES"] = merge_tunables(env.get("GLIBC_TUNABLES"))
    env[MARKER] = "1"
    return env


def applies(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a restart would change anything: glibc Linux, not opted out, not yet restarted."""
    env = os.environ if environ is None else environ
    return (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
            and env.get(OPT_OUT, "") in ("", "0") and MARKER not in env)


def reexec_with_tuned_malloc() -> None:
    """Restarts the current command (same pid, same arguments) with the allocator settings.

    Call it first thing in a program's entry point, before threads or files are opened; returns
    without doing anything when `applies()` is false.
    """
    if not applies():
        return
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], tuned_environ())


def in_use() -> str:
    """"glibc-thp" when this process runs with the settings (restarted by jaxalign), else "system"."""
    return "glibc-thp" if os.environ.get(MARKER) else "system"


def add_argument(parser) -> None:
    """`--system-malloc` for scripts that call `from_args` (benchmarks compare both)."""
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep the default glibc allocator instead of jaxalign.hostmem's settings")


def from_args(args) -> str:
    """Restarts with the settings unless `--system-malloc`; returns `in_use()`."""
    if not args.system_malloc:
        reexec_with_tuned_malloc()
    return in_use()


if __name__ == "__main__":
    print(merge_tunables(os.environ.get("GLIBC_TUNABLES")))
