"""`jaxalign` entry point: one subcommand per job; each module registers its own parser."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from jaxalign.cli import hostmem
from jaxalign.cli.args import Parser
from jaxalign.errors import UserError

SUBCOMMANDS = ("info", "chat", "data", "train", "demo", "eval", "view", "endo", "rm")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jaxalign", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"jaxalign.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Flags may come before, between or after the key=value overrides (`rm train CFG --kind sentence
    # key=val`): argparse stops filling a positional list at the first flag and leaves the rest over.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if "overrides" not in vars(args) or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # orbax and tfds log every file operation through absl at INFO
        import absl.logging

        absl.logging.set_verbosity(absl.logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except UserError as e:  # bad input: its message names the file, row, field or flag
        print(f"jaxalign {args.command}: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `jaxalign` command: on CPU, restarts once with XLA-friendly allocator settings (see hostmem)."""
    hostmem.reexec_with_tuned_malloc()
    sys.exit(main())


if __name__ == "__main__":
    entry()
