"""Tokenizers: Hugging Face tokenizers from a directory or built from a GGUF file's metadata."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from jaxalign.models.config import CheckpointError


def _cache_root() -> str:
    return os.environ.get("JAXALIGN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxalign"))


def load(path: str | os.PathLike):
    """A `transformers` tokenizer with its chat template.

    `path` is a packaged model name (see `jaxalign.models.registry`), a directory holding
    tokenizer.json / tokenizer_config.json, or a `.gguf` file whose metadata holds the vocabulary,
    merges and chat template. Converting GGUF metadata takes
    seconds, so the converted tokenizer is cached under $JAXALIGN_CACHE (default
    ~/.cache/jaxalign), keyed by the file's path, size and modification time.
    """
    from transformers import AutoTokenizer

    from jaxalign.models.registry import resolve

    path = resolve(os.fspath(path))
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: tokenizer path not found")
    if os.path.isdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in
                   ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            raise CheckpointError(f"{path}: no tokenizer.json / tokenizer_config.json in directory")
        return AutoTokenizer.from_pretrained(path)
    if not path.endswith(".gguf"):
        raise CheckpointError(f"{path}: expected a tokenizer directory or a .gguf file")
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    cached = os.path.join(_cache_root(), "tokenizers", key[:24])
    if os.path.exists(os.path.join(cached, "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(cached)
    try:
        tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                            gguf_file=os.path.basename(path))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot build a tokenizer from GGUF metadata: {e}") from e
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(cached))
        tok.save_pretrained(tmp)
        os.replace(tmp, cached)
    except OSError:  # a read-only home or a concurrent writer: the cache is only an optimisation
        shutil.rmtree(tmp, ignore_errors=True)
    return tok
