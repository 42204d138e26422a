"""Output files: checked before the work that fills them, written atomically (never half-written)."""

from __future__ import annotations

import os
import tempfile

from jaxalign.errors import OutputPathError


def check_output(path: str | os.PathLike, what: str = "output") -> None:
    """Raises `OutputPathError` unless a file can be written at `path`.

    Creates the parent directory and a temporary file next to the target (then removes it), so a
    results file that cannot be written fails in a second, not after a whole evaluation. `what`
    names the flag or field in the message (e.g. "--output").
    """
    path = os.fspath(path)
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise OutputPathError(f"{what} {path}: is a directory")
    parent = os.path.dirname(target)
    ancestor = parent
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):  # makedirs would only say "File exists"
        raise OutputPathError(f"{what} {path}: {ancestor} is a file, not a directory")
    try:
        os.makedirs(parent, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OutputPathError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    os.close(fd)
    os.remove(probe)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` through a synced temporary file in the same directory and a rename:
    a crash leaves either the old file or the new one, never a part of it."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
