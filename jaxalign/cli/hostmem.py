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
environment, or run under `GLIBC_TUNABLES=$(python -m jaxalign.cli.hostmem) python ...`. Settings
the caller already has in `GLIBC_TUNABLES` win; `JAXALIGN_SYSTEM_MALLOC=1` turns all of this off.
Only the training process is affected: sandbox workers get a fresh environment
(jaxalign.tools.backends.worker_env).

The restart happens only when JAX will run on the CPU: on TPU and GPU hosts the step's temporaries
live in device memory and the host allocator is not on the hot path. The decision is taken before
JAX is imported, since the restart must come first (`backend_is_cpu`): JAX_PLATFORMS (or the older
JAX_PLATFORM_NAME) decides when set; otherwise an accelerator counts when both its device files
and JAX's plugin for it are present, as JAX itself would find them.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pkgutil
import platform
import sys
from collections.abc import Collection, Mapping
from fnmatch import fnmatch

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


# An accelerator JAX would use: its device files (any one present) and its PJRT plugin modules (any one
# findable). Device files as jax._src.hardware_utils checks them; /dev/vfio/vfio alone is the VFIO
# control file every VFIO host has, so TPUs behind VFIO count by their numbered group files.
ACCELERATORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tpu": (("/dev/accel*", "/dev/vfio/[0-9]*"), ("libtpu",)),
    "cuda": (("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg"), ("jax_cuda12_plugin", "jax_cuda13_plugin")),
    "rocm": (("/dev/kfd",), ("jax_rocm*_plugin",)),
}


def backend_is_cpu(environ: Mapping[str, str], paths: Collection[str], modules: Collection[str]) -> bool:
    """Whether JAX will run on the CPU, decided without importing it.

    `paths`: the device files that exist (matched against the patterns of `ACCELERATORS`, so a test
    passes e.g. {"/dev/accel0"}); `modules`: the top-level modules that are findable. JAX_PLATFORMS
    (comma-separated) decides when set: CPU only when it names nothing but cpu. Without it, an
    accelerator counts only with its plugin installed: device files alone leave JAX on the CPU.
    """
    names = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    platforms = {p.strip().lower() for p in names.split(",") if p.strip()}
    if platforms:
        return platforms == {"cpu"}
    return not any(
        any(fnmatch(path, pattern) for path in paths for pattern in devices)
        and any(fnmatch(module, pattern) for module in modules for pattern in plugins)
        for devices, plugins in ACCELERATORS.values())


def _findable(pattern: str) -> list[str]:
    """Top-level modules matching `pattern`, located without importing them."""
    if not glob.has_magic(pattern):
        return [pattern] if importlib.util.find_spec(pattern) is not None else []
    return [m.name for m in pkgutil.iter_modules() if fnmatch(m.name, pattern)]  # sys.path, no imports


def will_run_on_cpu(environ: Mapping[str, str] | None = None) -> bool:
    """`backend_is_cpu` on this host: its device files and installed plugins (nothing is imported)."""
    env = os.environ if environ is None else environ
    paths, modules = [], []
    for devices, plugins in ACCELERATORS.values():
        found = [p for pattern in devices for p in glob.glob(pattern)]
        paths += found
        if found:  # plugins are looked up only for an accelerator that is there
            modules += [m for pattern in plugins for m in _findable(pattern)]
    return backend_is_cpu(env, paths, modules)


def applies(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a restart would change anything: glibc Linux, JAX on the CPU, not opted out, not yet restarted."""
    env = os.environ if environ is None else environ
    return (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
            and env.get(OPT_OUT, "") in ("", "0") and MARKER not in env and will_run_on_cpu(env))


def reexec_with_tuned_malloc() -> None:
    """Restarts the current command (same pid, same arguments) with the allocator settings.

    Call it first thing in a program's entry point, before JAX is imported and before threads or
    files are opened; returns without doing anything when `applies()` is false (e.g. on TPU or GPU).
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
                        help="keep the default glibc allocator instead of jaxalign.cli.hostmem's settings "
                             "(which apply to CPU runs only)")


def from_args(args) -> str:
    """Restarts with the settings unless `--system-malloc`; returns `in_use()`."""
    if not args.system_malloc:
        reexec_with_tuned_malloc()
    return in_use()


if __name__ == "__main__":
    print(merge_tunables(os.environ.get("GLIBC_TUNABLES")))
