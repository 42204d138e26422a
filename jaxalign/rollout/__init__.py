"""Multi-turn tool-integrated rollouts (ASTER): generate, run code in the sandbox, append, resume."""

from jaxalign.rollout.engine import RolloutEngine, format_tool_output
from jaxalign.rollout.formats import (
           FORMATS,
           HermesFormat,
           MarkdownFormat,
           ToolCall,
           ToolFormat,
           get_format,
           register_format,
)
from jaxalign.rollout.types import RolloutConfig, Trajectory

__all__ = ["FORMATS", "HermesFormat", "MarkdownFormat", "RolloutConfig", "RolloutEngine", "ToolCall", "ToolFormat",
           "Trajectory", "format_tool_output", "get_format", "register_format"]
