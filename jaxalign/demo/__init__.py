"""The embedded default: the ASTER pipeline on a tool-requiring task, end to end on a CPU."""

from jaxalign.demo.config import DemoConfig
from jaxalign.demo.pipeline import run_demo

__all__ = ["DemoConfig", "run_demo"]
