"""One self-contained HTML page: data embedded as JSON, the viewer's own JS and CSS inlined, no network.

Safety: trajectory text is model-written (and tool output is whatever that code printed), so it is
never parsed as HTML. The data goes into a `<script type="application/json">` element with `<`, `>`,
`&` and the JS line separators escaped as `\\uXXXX` (so no `</script>` can end the element early), and
the page puts every string into the DOM with `textContent`. A Content-Security-Policy admits only
the page's own script and style by hash and no network, as a second wall.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from importlib import resources
from typing import Any

REPORT_FILE = "report.html"
"""Where `write_report` puts a run's page by default (inside the run directory)."""
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(obj: Any) -> str:
    """`obj` as JSON safe to place inside a `<script>` element (no `</script>`, `<!--` or line separators)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(str.maketrans(_ESCAPES))


def asset(name: str) -> str:
    """The text of `jaxalign/viewer/assets/<name>` (package data)."""
    return resources.files("jaxalign.viewer").joinpath("assets", name).read_text(encoding="utf-8")


def csp_hash(source: str) -> str:
    """The Content-Security-Policy source (`'sha256-...'`) admitting exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


def render_page(data: dict[str, Any]) -> str:
    """The HTML document for `data` (as built by `jaxalign.viewer.data.load_run`)."""
    js, css = asset("viewer.js"), asset("viewer.css")
    for name, text, tag in (("viewer.js", js, "</script"), ("viewer.css", css, "</style")):
        if tag in text.lower():  # would end the inlined element early
            raise ValueError(f"asset {name} contains {tag!r}")
    js, css = "\n" + js, "\n" + css  # hashed exactly as inlined
    csp = (f"default-src 'none'; script-src {csp_hash(js)}; style-src {csp_hash(css)}; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>jaxalign run: {html.escape(data['name'])}</title>\n"
        f"<style>{css}</style>\n</head>\n<body>\n<div id=\"app\"></div>\n"
        f"<script type=\"application/json\" id=\"run-data\">{embed_json(data)}</script>\n"
        f"<script>{js}</script>\n</body>\n</html>\n"
    )


def write_html(text: str, out: str | os.PathLike) -> str:
    """Writes an HTML document to `out` atomically (temporary file, then rename); returns the path.

    Raises OutputPathError (one line in the CLI) when the file cannot be written.
    """
    from jaxalign.errors import OutputPathError
    from jaxalign.runlog.files import write_text_atomic

    out = os.fspath(out)
    try:
        write_text_atomic(out, text)
    except OSError as e:
        raise OutputPathError(f"{out}: cannot write the page ({e.strerror or e})") from None
    return out


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 max_trajectories: int = 5000) -> str:
    """Writes the run viewer page for `run_dir` to `out` (default `run_dir/report.html`); returns its path.

    The page is one file with everything inlined: open it in any browser, no server needed. A folder of
    runs (no run itself) is `jaxalign.viewer.write_index`.
    """
    from jaxalign.viewer.data import load_run

    run_dir = os.fspath(run_dir)
    out = os.fspath(out) if out is not None else os.path.join(run_dir, REPORT_FILE)
    return write_html(render_page(load_run(run_dir, max_trajectories=max_trajectories)), out)
