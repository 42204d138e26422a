"""Fixtures for the sandbox tests: one shared sandbox, and a factory for sandboxes of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from jaxalign.tools import PythonSandbox
from tests.tools.helpers import TIMEOUT_S

# Small memory and output limits keep the containment tests fast; the time limit is generous (see
# helpers.TIMEOUT_S), and tests that expect a timeout pass a short one per call.
LIMITS = {"timeout_s": TIMEOUT_S, "memory_mb": 256, "max_output_chars": 2000}


@pytest.fixture(scope="session")
def sandbox() -> Iterator[PythonSandbox]:
    """One shared sandbox (strongest backend) for tests that do not inspect counters."""
    with PythonSandbox(workers=2, **LIMITS) as sb:
        yield sb


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., PythonSandbox]]:
    """Factory for sandboxes with their own settings; all are closed after the test."""
    made: list[PythonSandbox] = []

    def make(**kwargs: object) -> PythonSandbox:
        sb = PythonSandbox(**{**LIMITS, "workers": 1, **kwargs})
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.close()
