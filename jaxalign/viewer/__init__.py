"""Run viewer: one self-contained HTML page for a run directory (`jaxalign view RUN_DIR`).

    from jaxalign.viewer import write_index, write_report
    path = write_report("runs/demo/grpo-dense")           # -> runs/demo/grpo-dense/report.html
    index, rows = write_index("runs/demo")                # every run below + runs/demo/index.html

Metric curves, a filterable and sortable table of saved trajectories, each trajectory turn by turn
(code, tool output, errors, loss mask over tokens), and reward maps (sentence and token rewards of
chosen / rejected responses; format in `jaxalign.viewer.data`). A folder of runs gets an index page
comparing them (`jaxalign.viewer.index`).
"""

from jaxalign.viewer.data import (
    ViewerError,
    is_run,
    load_run,
    read_reward_maps,
    read_trajectories,
    validate_reward_map,
    write_reward_maps,
)
from jaxalign.viewer.index import find_runs, write_index
from jaxalign.viewer.page import embed_json, render_page, write_report

__all__ = ["ViewerError", "embed_json", "find_runs", "is_run", "load_run", "read_reward_maps", "read_trajectories",
           "render_page", "validate_reward_map", "write_index", "write_reward_maps", "write_report"]
