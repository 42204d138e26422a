"""Results of sandboxed calls and the failure counters that guard a training run."""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

from jaxalign.errors import UserError


class SandboxUnavailableError(UserError, RuntimeError):
    """The sandbox cannot run code: a forced backend is missing, or too many calls failed inside the
    sandbox machinery itself. Raised instead of returning results, so that tool-integrated RL stops
    rather than silently turning into RL without tools.

    A ``UserError``: the cause lies in the machine's setup (bubblewrap missing, an interpreter the
    sandbox cannot reach), not in jaxalign, and the message names it (or the last sandbox failure),
    so the CLI prints it in one line with exit code 2 instead of a traceback.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxResult:
    """Outcome of one call.

    ``ok`` means the code ran to completion without an exception (``sys.exit(0)`` and ``sys.exit()``
    count as completion: SystemExit is raised and caught like any exception). ``error`` is None or one
    short line: the exception ("ZeroDivisionError: division by zero"), "timeout", "memory limit",
    "crashed: ..." (the process ended without reporting: a signal, or ``os._exit`` with any code, 0
    included, which skips the rest of the code), "output truncated" (the code succeeded but printed
    more than allowed), or "sandbox failure: ..." for a fault of the sandbox itself (then
    ``sandbox_failure`` is set; it is never the code's fault).
    """

    stdout: str = ""
    stderr: str = ""
    ok: bool = False
    error: str | None = None
    timed_out: bool = False
    memory_error: bool = False
    crashed: bool = False  # the user process ended without reporting (signal, os._exit with any code, segfault)
    truncated: bool = False
    sandbox_failure: bool = False
    state_lost: bool = False  # sessions: the process was restarted, earlier variables are gone
    duration_s: float = 0.0

    @classmethod
    def failure(cls, message: str, duration_s: float = 0.0) -> SandboxResult:
        """A result for an infrastructure fault."""
        return cls(error=f"sandbox failure: {message}", sandbox_failure=True, duration_s=duration_s)

    @classmethod
    def from_response(cls, resp: dict[str, Any], duration_s: float) -> SandboxResult:
        """Build a result from a worker server's response message."""
        kind = resp.get("kind")
        return cls(stdout=resp.get("stdout", ""), stderr=resp.get("stderr", ""), ok=bool(resp.get("ok")),
                   error=resp.get("error"), timed_out=kind == "timeout", memory_error=kind == "memory",
                   crashed=kind == "crash", truncated=bool(resp.get("truncated")),
                   sandbox_failure=kind == "sandbox_failure", state_lost=bool(resp.get("state_lost")),
                   duration_s=duration_s)


_COUNTERS = ("calls", "ok", "user_errors", "timeouts", "memory_errors", "crashes", "truncated", "sandbox_failures",
             "workers_started", "workers_restarted", "worker_start_failures")


class SandboxStats:
    """Thread-safe counters, and the sandbox-failure check over a window of recent calls.

    The check uses a sliding window rather than lifetime totals, so that a sandbox that breaks after
    a million good calls is still caught within ``window`` calls.
    """

    def __init__(self, max_failure_rate: float, min_calls: int, window: int) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._recent: collections.deque[bool] = collections.deque(maxlen=max(window, min_calls))
        self._max_rate, self._min_calls = max_failure_rate, min_calls
        self._tripped: str | None = None
        self._last_failure = ""

    def bump(self, counter: str, n: int = 1) -> None:
        """Increment a non-call counter such as ``workers_restarted``."""
        with self._lock:
            self._counts[counter] += n

    def record(self, result: SandboxResult, backend: str) -> None:
        """Count one call; raise SandboxUnavailableError if the sandbox now fails too often."""
        with self._lock:
            c = self._counts
            c["calls"] += 1
            if result.sandbox_failure:
                c["sandbox_failures"] += 1
                self._last_failure = result.error or ""
            elif result.timed_out:
                c["timeouts"] += 1
            elif result.memory_error:
                c["memory_errors"] += 1
            elif result.ok:
                c["ok"] += 1
            else:
                c["user_errors"] += 1
            c["crashes"] += result.crashed
            c["truncated"] += result.truncated
            self._recent.append(result.sandbox_failure)
            failures, n = sum(self._recent), len(self._recent)
            if c["calls"] >= self._min_calls and failures > self._max_rate * n and self._tripped is None:
                self._tripped = (
                    f"Python sandbox unavailable: {failures} of the last {n} calls failed inside the sandbox "
                    f"itself (rate {failures / n:.0%} > max_sandbox_failure_rate={self._max_rate:.0%}; backend "
                    f"{backend}); last failure: {self._last_failure}. Stopping instead of letting tool-integrated "
                    f"RL silently degrade into RL without tools.")
        self.check()

    def check(self) -> None:
        """Raise SandboxUnavailableError once the failure check has tripped."""
        if self._tripped is not None:
            raise SandboxUnavailableError(self._tripped)

    def snapshot(self) -> dict[str, int]:
        """A copy of all counters."""
        with self._lock:
            return dict(self._counts)
