"""The sandboxed worker server: ``python -I worker.py CONFIG_JSON``, launched by ``backends.py``.

Stdlib only and run by file path, so the sandbox needs neither ``jaxalign`` nor its dependencies.
The server is trusted code that never runs model code itself. It reads framed requests on stdin,
forks one confined child per stateless call (a fork from a warm interpreter costs ~1 ms, against
~40 ms for a fresh bwrap + python), or keeps one persistent child per session, and answers on stdout.
It supervises children against a wall-clock deadline, reads their output with bounded buffers, and
kills every descendant after a call, so nothing outlives the call that started it.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import select
import shutil
import signal
import sys
import time
from typing import Any

_TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _TOOLS_DIR)  # -I leaves the script's directory off sys.path

import jail  # noqa: E402
import isolate  # noqa: E402
import protocol  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
_CHUNK = 1 << 16


class Collector:
    """Keeps the first ``max_chars`` characters of a byte stream and counts the rest."""

    def __init__(self, max_chars: int) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")  # invalid UTF-8 -> U+FFFD
        self._parts: list[str] = []
        self._room = max_chars
        self.dropped = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        keep = text[: self._room]
        if keep:
            self._parts.append(keep)
            self._room -= len(keep)
        self.dropped += len(text) - len(keep)

    def text(self) -> str:
        self.feed(b"", final=True)
        out = "".join(self._parts)
        return out + f"\n... [output truncated: {self.dropped} chars]" if self.dropped else out
