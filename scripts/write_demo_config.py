"""Rewrites configs/demo/default.yaml from jaxalign.demo.DemoConfig() (the test keeps them equal)."""

from __future__ import annotations

import pathlib

from jaxalign import config
from jaxalign.demo.config import DemoConfig

HEADER = "# The embedded default of `make demo` (mirrors jaxalign.demo.DemoConfig; every field listed).\n"


def main() -> None:
    path = pathlib.Path(__file__).resolve().parents[1] / "configs/demo/default.yaml"
    config.dump(DemoConfig(), path)
    path.write_text(HEADER + path.read_text())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
