"""Allocator settings: when they apply (CPU only), merging, the one-time restart, the page faults they remove."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxalign.cli import hostmem

glibc_only = pytest.mark.skipif(not hostmem.applies({"JAX_PLATFORMS": "cpu"}),
                                reason="GLIBC_TUNABLES exist only on glibc Linux")


def test_platforms_variable_decides_when_set():
    tpu_host = ({"/dev/accel0"}, {"libtpu"})
    assert hostmem.backend_is_cpu({"JAX_PLATFORMS": "cpu"}, *tpu_host)  # forced onto the CPU despite the TPU
    assert hostmem.backend_is_cpu({"JAX_PLATFORM_NAME": "cpu"}, *tpu_host)
    for platforms in ("tpu", "cuda", "gpu", "rocm", "cuda,cpu", "TPU"):
        assert not hostmem.backend_is_cpu({"JAX_PLATFORMS": platforms}, set(), set()), platforms
    assert not hostmem.backend_is_cpu({"JAX_PLATFORMS": "tpu", "JAX_PLATFORM_NAME": "cpu"}, set(), set())


@pytest.mark.parametrize("paths, modules", [
    ({"/dev/accel0"}, {"libtpu"}),
    ({"/dev/vfio/vfio", "/dev/vfio/0"}, {"libtpu", "numpy"}),
    ({"/dev/nvidiactl"}, {"jax_cuda12_plugin"}),
    ({"/dev/nvidia0"}, {"jax_cuda13_plugin"}),
    ({"/dev/kfd"}, {"jax_rocm7_plugin"}),
])
def test_accelerator_with_its_plugin_is_not_cpu(paths, modules):
    assert not hostmem.backend_is_cpu({}, paths, modules)
    assert not hostmem.backend_is_cpu({"JAX_PLATFORMS": ""}, paths, modules)  # empty counts as unset, as in JAX


@pytest.mark.parametrize("paths, modules", [
    (set(), set()),  # nothing: a CPU host
    ({"/dev/accel0"}, set()),  # a TPU without libtpu: JAX falls back to the CPU
    ({"/dev/nvidia0", "/dev/nvidiactl"}, {"libtpu"}),  # a GPU, but only the TPU plugin
    ({"/dev/vfio/vfio"}, {"libtpu"}),  # the VFIO control file alone is no TPU
    (set(), {"libtpu", "jax_cuda12_plugin"}),  # plugins without devices
])
def test_without_an_accelerator_and_its_plugin_it_is_cpu(paths, modules):
    assert hostmem.backend_is_cpu({}, paths, modules)


def test_no_restart_when_jax_will_use_an_accelerator():
    if not hostmem.applies({"JAX_PLATFORMS": "cpu"}):
        pytest.skip("GLIBC_TUNABLES exist only on glibc Linux")
    assert not hostmem.applies({"JAX_PLATFORMS": "tpu"})
    assert hostmem.will_run_on_cpu({"JAX_PLATFORMS": "cpu"}) and not hostmem.will_run_on_cpu({"JAX_PLATFORMS": "cuda"})


def test_merge_keeps_the_callers_settings_and_adds_the_rest():
    assert hostmem.merge_tunables(None) == "glibc.malloc.hugetlb=1"
    merged = hostmem.merge_tunables("glibc.malloc.hugetlb=0:glibc.cpu.x86_rep_movsb_threshold=2048")
    assert merged.split(":") == ["glibc.malloc.hugetlb=0", "glibc.cpu.x86_rep_movsb_threshold=2048"]
    assert hostmem.merge_tunables("glibc.malloc.arena_max=2") == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_environ_adds_the_settings_and_the_marker():
    env = hostmem.tuned_environ({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["PATH"] == "/bin" and env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert env[hostmem.MARKER] == "1"
    assert not hostmem.applies(env)  # restarted once, never again


RESTART = """
import json, os, sys
from jaxalign.cli import hostmem
print(json.dumps([os.getpid(), os.environ.get("GLIBC_TUNABLES"), hostmem.in_use(), sys.argv[1:]]), flush=True)
hostmem.reexec_with_tuned_malloc()
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in (hostmem.MARKER, hostmem.OPT_OUT, "GLIBC_TUNABLES")}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}  # the settings are for CPU runs, on any host


@glibc_only
def test_restart_keeps_pid_and_arguments_and_happens_once():
    out = subprocess.run([sys.executable, "-c", RESTART, "a", "--b"], capture_output=True, text=True, env=_env(),
                         check=True, timeout=600)
    runs = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(runs) == 2, out.stdout  # the original and one restart
    (pid0, tun0, mode0, args0), (pid1, tun1, mode1, args1) = runs
    assert pid0 == pid1 and args0 == args1 == ["a", "--b"]
    assert tun0 is None and tun1 == hostmem.merge_tunables(None)
    assert mode0 == "system" and mode1 == "glibc-thp"


@glibc_only
def test_opt_out_means_no_restart():
    out = subprocess.run([sys.executable, "-c", RESTART], capture_output=True, text=True,
                         env=_env(**{hostmem.OPT_OUT: "1"}), check=True, timeout=600)
    assert len(out.stdout.splitlines()) == 1


@glibc_only
def test_no_restart_on_an_accelerator():
    out = subprocess.run([sys.executable, "-c", RESTART], capture_output=True, text=True,
                         env=_env(JAX_PLATFORMS="tpu"), check=True, timeout=600)
    assert len(out.stdout.splitlines()) == 1


FAULTS = """
import resource, jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.exp(jnp.outer(x, x)) * 2.0, axis=0))  # tens of MB of temporaries
x = jnp.linspace(0.0, 1.0, 7168)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    f(x).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@glibc_only
def test_settings_map_xlas_temporary_buffer_in_huge_pages():
    """Every call maps its temporary buffer afresh; in 4 KiB pages by default, 2 MiB pages with the settings."""
    if not _thp_available():
        pytest.skip("transparent huge pages are disabled on this kernel ([never])")

    def faults(env):
        out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, check=True,
                             timeout=600)
        return int(out.stdout.split()[-1])

    system = faults(_env(**{hostmem.OPT_OUT: "1"}))
    tuned = faults(hostmem.tuned_environ(_env()))
    assert system > 3 * 4000, (system, tuned)  # measured: 12.5 k per call (its temporaries, 51 MB)
    assert tuned < system // 10, (system, tuned)
