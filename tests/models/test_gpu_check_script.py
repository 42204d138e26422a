"""`scripts/gpu_check.py --tiny` runs on CPU (the Pallas GPU kernel in interpret mode, cuDNN skipped),
so the script a GPU session will run is exercised here; its figures only mean something on a GPU."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_check_runs_at_toy_sizes_and_agrees_with_xla():
    out = subprocess.run([sys.executable, "scripts/gpu_check.py", "--tiny", "--steps", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert set(result["checks"]) == {"pallas_gpu", "pallas_gpu_packed"}
    assert result["max_abs_diff"] < 1e-4  # float32 kernels against the float32 xla path
    for key in ("pallas_gpu_64", "pallas_gpu_128", "xla_64", "xla_128"):
        assert result["sft"][key]["s_per_step"] > 0, result["sft"]
