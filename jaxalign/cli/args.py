"""Argument types and the parser class of the `jaxalign` command: every bad flag is one line, exit 2."""

from __future__ import annotations

import argparse
import sys

DTYPES = ("float32", "bfloat16", "float16")
"""Parameter / compute dtypes a model can be loaded in."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (`jaxalign <command>: error: ...`, exit code 2), no usage dump."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _number(kind, test, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "an integer > 0")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0 and v == v and v != float("inf"), "a finite number > 0")

