"""A folder of runs (`jaxalign view runs/demo`): each run's own page plus one index page linking them.

    from jaxalign.viewer import write_index
    index, rows = write_index("runs/demo")   # runs/demo/index.html, runs/demo/<run>/report.html

Each run gets the same page `jaxalign view RUN` writes (at `RUN/report.html`, so links to it stay
valid), rather than one page holding every run: a run page embeds up to thousands of trajectories,
and one file for a whole sweep would be slow to open. The index is a static table (no script) that
compares the runs at a glance: steps logged, first -> last value of the headline metrics, the latest
eval scores, trajectories and reward maps saved, and the page link; a run that cannot be shown is
listed with its error instead of stopping the others.
"""

from __future__ import annotations

import datetime
import html
import os
import urllib.parse
from typing import Any

from jaxalign.runlog.metrics import METRICS_FILE
from jaxalign.viewer.data import REWARD_MAP_DIR, TRAJECTORY_DIR, ViewerError, is_run, load_run
from jaxalign.viewer.page import REPORT_FILE, asset, csp_hash, render_page, write_html

INDEX_FILE = "index.html"
SEARCH_DEPTH = 2
"""Runs are looked for this many directory levels below the folder (runs/demo/sft-dense, runs/sweep/a/grpo)."""
HEADLINE = ("loss", "reward", "accuracy", "tool_calls_per_traj")
"""Metrics shown as first -> last in the index (matched by the last part of the key: train/loss -> loss)."""


def find_runs(root: str | os.PathLike, depth: int = SEARCH_DEPTH) -> list[str]:
    """Run directories (see `jaxalign.viewer.data.is_run`) at most `depth` levels below `root`, in path order.

    Hidden directories are skipped, and the inside of a run is not searched (its `hf/` export or
    `trajectories/` are parts of that run, not runs of their own).
    """
    found: list[str] = []

    def walk(directory: str, level: int) -> None:
        try:
            entries = sorted((e for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")),
                             key=lambda e: e.name)
        except OSError:  # an unreadable sub-directory holds no run we can show
            return
        for entry in entries:
            if is_run(entry.path):
                found.append(entry.path)
            elif level < depth:
                walk(entry.path, level + 1)

    walk(os.fspath(root), 1)
    return found


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _pick(metrics: dict[str, list[list[float]]], name: str) -> str | None:
    """The metric key whose last part is `name`, preferring the training log (train/loss over eval/loss)."""
    keys = sorted((k for k in metrics if k.split("/")[-1] == name), key=lambda k: (not k.startswith("train/"), k))
    return keys[0] if keys else None


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """The index row of one run from its `load_run` data: steps, headline metrics, eval scores, counts."""
    metrics = data["metrics"]
    steps = sorted({p[0] for series in metrics.values() for p in series})
    headline = {}
    for name in HEADLINE:
        key = _pick(metrics, name)
        if key is not None:
            first, last = metrics[key][0][1], metrics[key][-1][1]
            headline[name] = _fmt(last) if len(metrics[key]) == 1 else f"{_fmt(first)} \u2192 {_fmt(last)}"
    evals = {k: _fmt(v[-1][1]) for k, v in sorted(metrics.items())
             if k.startswith("eval/") and ("avg@" in k or "pass@" in k)}
    path = os.path.join(data["path"], METRICS_FILE)
    updated = (datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
               .strftime("%Y-%m-%d %H:%M UTC") if os.path.exists(path) else "")
    return {"last_step": steps[-1] if steps else None, "headline": headline, "eval": evals,
            "trajectories": len(data["trajectories"]), "reward_maps": len(data["reward_maps"]), "updated": updated}


def _href(target: str, index_dir: str) -> str:
    return urllib.parse.quote(os.path.relpath(target, index_dir).replace(os.sep, "/"))


def render_index(root: str, rows: list[dict[str, Any]], index_dir: str) -> str:
    """The index HTML of `rows` (from `write_index`); links are relative to `index_dir`.

    Every string (run names are directory names, so anything) is HTML-escaped, and the page has no
    script; its CSP admits only its own stylesheet.
    """
    css = "\n" + asset("viewer.css")
    csp = f"default-src 'none'; style-src {csp_hash(css)}; img-src data:; base-uri 'none'; form-action 'none'"
    names = [n for n in HEADLINE if any(n in r.get("headline", {}) for r in rows)]
    evals = sorted({k for r in rows for k in r.get("eval", {})})
    head = ["run", "last step", *names, *evals, "trajectories", "reward maps", "updated"]
    e = html.escape
    lines = []
    for r in rows:
        link = (f'<a href="{e(_href(r["page"], index_dir))}">{e(r["run"])}</a>' if r.get("page")
                else e(r["run"]))
        if r.get("error"):
            lines.append(f'<tr><td>{link}</td><td colspan="{len(head) - 1}" class="errmsg">'
                         f'cannot show this run: {e(r["error"])}</td></tr>')
            continue
        cells = [str(r["last_step"]) if r["last_step"] is not None else "",
                 *(r["headline"].get(n, "") for n in names), *(r["eval"].get(k, "") for k in evals),
                 str(r["trajectories"]), str(r["reward_maps"])]
        lines.append(f"<tr><td>{link}</td>" + "".join(f'<td class="num">{e(c)}</td>' for c in cells)
                     + f"<td>{e(r['updated'])}</td></tr>")
    title = os.path.basename(os.path.abspath(root)) or root
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>jaxalign runs: {e(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
        f"<header><h1>{e(title)}: {len(rows)} runs</h1><span class=\"path\">{e(os.path.abspath(root))}</span>"
        "</header>\n<main>\n<p class=\"summary\">Each run links to its own page (metrics, trajectories, reward "
        "maps). Metrics read first \u2192 last logged value.</p>\n<div class=\"card\"><table id=\"runs\">\n<thead><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>\n<tbody>\n" + "\n".join(lines)
        + "\n</tbody></table></div>\n</main>\n</body>\n</html>\n"
    )


def write_index(root: str | os.PathLike, out: str | os.PathLike | None = None, *,
                max_trajectories: int = 5000) -> tuple[str, list[dict[str, Any]]]:
    """Writes each run's page under `root` (at `RUN/report.html`) and an index page linking them.

    `out` is the index file (default `root/index.html`). Returns (index path, one row per run:
    {"run", "path", "page", "error", ...summary}); a run that cannot be shown has `page` None and its
    error, and the others are still written. Raises ViewerError when `root` holds no run at all.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ViewerError(f"{root}: not a directory")
    runs = find_runs(root)
    if not runs:
        raise ViewerError(f"{root}: not a run ({METRICS_FILE}, {TRAJECTORY_DIR}/ or {REWARD_MAP_DIR}/) and no run "
                          f"in its sub-directories ({SEARCH_DEPTH} levels searched)")
    out = os.fspath(out) if out is not None else os.path.join(root, INDEX_FILE)
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": os.path.relpath(run, root), "path": run, "page": None, "error": None}
        try:
            data = load_run(run, max_trajectories=max_trajectories)
        except ViewerError as e:  # one malformed run must not hide the others
            row["error"] = str(e)
        else:
            row.update(summarise(data))
            row["page"] = write_html(render_page(data), os.path.join(run, REPORT_FILE))
        rows.append(row)
    write_html(render_index(root, rows, os.path.dirname(os.path.abspath(out))), out)
    return out, rows
