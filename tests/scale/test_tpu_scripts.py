"""The tpu/ launch scripts (dry run: the gcloud commands they would run, no cloud access)."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dry(script: str, *args: str, **env: str) -> list[str]:
    out = subprocess.run([os.path.join(ROOT, "tpu", script), *args], env={**os.environ, "DRY_RUN": "1", **env},
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.startswith("+ ")]


def test_create_picks_the_runtime_for_the_accelerator():
    [v5p] = dry("create.sh", TPU_NAME="t", ZONE="us-east5-a", ACCELERATOR="v5p-32")
    assert "tpu-vm create t" in v5p and "--accelerator-type=v5p-32" in v5p and "--version=v2-alpha-tpuv5" in v5p
    [v5e] = dry("create.sh", ACCELERATOR="v5litepod-16", QUEUED="1", SPOT="1", PROJECT="p")
    assert "queued-resources create" in v5e and "--runtime-version=v2-alpha-tpuv5-lite" in v5e
    assert "--spot" in v5e and "--project=p" in v5e


def test_install_and_launch_reach_every_worker():
    copy, ssh = [line for line in dry("install.sh") if "gcloud" in line]
    assert "--worker=all" in copy and "--worker=all" in ssh and "\\[tpu\\]" in ssh  # printed shell-quoted
    [launch] = dry("launch.sh", "grpo", "configs/grpo/qwen3_4b_tpu.yaml", "steps=3")
    assert "--worker=all" in launch and "jaxalign\\ grpo\\ configs/grpo/qwen3_4b_tpu.yaml\\ steps=3" in launch
    [stop] = dry("launch.sh", "stop")
    assert "--worker=all" in stop and "pkill" in stop
