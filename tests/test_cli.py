"""The `jaxalign` console script."""

import json
import subprocess
import sys

from jaxalign.cli.main import main
from tests.models.hf_reference import make_reference


def test_info_on_hf_directory(tmp_path, capsys):
    make_reference("qwen3").save_pretrained(tmp_path)
    assert main(["info", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "qwen3" and info["head_dim"] == 24 and info["tied_embeddings"]
    expected = sum(p.numel() for p in make_reference("qwen3").parameters())
    assert info["parameters"] == expected


def test_info_on_packaged_gguf(smollm2_gguf, capsys):
    assert main(["info", "smollm2-135m-instruct"]) == 0
    out = capsys.readouterr().out
    assert "134,515,008" in out and "llama" in out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "jaxalign.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "info" in out.stdout and "chat" in out.stdout
