"""`jaxalign` entry point: one subcommand per job; each module registers its own parser."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from jaxalign import hostmem
from jaxalign.config import ConfigError
from jaxalign.data.checks import DataError
from jaxalign.models.config import CheckpointError

SUBCOMMANDS = ("info", "chat", "data", "train", "demo", "eval", "view", "endo", "rm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxalign", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"jaxalign.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # orbax and tfds log every file operation through absl at INFO
        import absl.logging

        absl.logging.set_verbosity(absl.logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CheckpointError, DataError) as e:  # bad input: its message (file, row, field)
        print(f"jaxalign {args.command}: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `jaxalign` command: restarts once with XLA-friendly allocator settings (see hostmem)."""
    hostmem.reexec_with_tuned_malloc()
    sys.exit(main())


if __name__ == "__main__":
    entry()
