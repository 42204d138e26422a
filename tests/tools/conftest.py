"""Fixtures for the sandbox tests: small limits so that every containment test stays fast."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from jaxalign.tools import PythonSandbox

LIMITS = {"timeout_s": 2.0, "memory_mb": 256, "max_output_chars": 2000}


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
