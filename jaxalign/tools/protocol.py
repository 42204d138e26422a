"""Length-prefixed JSON framing shared by the parent and the in-sandbox worker.

Stdlib only: this module is imported inside the sandbox by file path (see ``worker.py``), where the
``jaxalign`` package (and its heavy dependencies) must not be needed.

A message is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. Every read has a
size limit, so a confused or hostile peer cannot make the reader buffer unbounded data.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

_HEADER = struct.Struct(">I")
DEFAULT_LIMIT = 64 << 20


class ProtocolError(RuntimeError):
    """The peer sent something that is not a well-formed, bounded message."""


def encode(obj: Any) -> bytes:
    """Frame ``obj`` as length-prefixed JSON (ASCII-escaped, so lone surrogates survive)."""
    data = json.dumps(obj, separators=(",", ":")).encode("ascii")
    return _HEADER.pack(len(data)) + data


def write_message(fd: int, obj: Any) -> None:
    """Write one framed message to a blocking file descriptor."""
    view = memoryview(encode(obj))
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """Read exactly ``n`` bytes; None on EOF before the first byte; TimeoutError past ``deadline``."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no complete message before the deadline")
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            if not buf:
                return None
            raise ProtocolError(f"connection closed inside a message ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)


def read_message(fd: int, deadline: float | None = None, limit: int = DEFAULT_LIMIT) -> Any:
    """Read one framed message; returns None on a clean EOF.

    ``deadline`` is a ``time.monotonic()`` value; past it ``TimeoutError`` is raised.
    """
    header = _read_exact(fd, _HEADER.size, deadline)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {limit}")
    body = _read_exact(fd, size, deadline)
    if body is None:
        raise ProtocolError("connection closed after a message header")
    try:
        return json.loads(body)
    except ValueError as e:
        raise ProtocolError(f"malformed message: {e}") from None


class MessageBuffer:
    """Incremental parser for a non-blocking stream of framed messages (used on result pipes)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the messages completed by them."""
        self._buf += data
        out = []
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > self._limit:
                raise ProtocolError(f"message of {size} bytes exceeds the limit of {self._limit}")
            if len(self._buf) < _HEADER.size + size:
                break
            body = bytes(self._buf[_HEADER.size : _HEADER.size + size])
            del self._buf[: _HEADER.size + size]
            try:
                out.append(json.loads(body))
            except ValueError as e:
                raise ProtocolError(f"malformed message: {e}") from None
        return out
