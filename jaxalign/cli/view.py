"""`jaxalign view DIR [-o page.html] [--serve]`: the run viewer page (one self-contained HTML file).

DIR is a run directory, or a folder of runs (e.g. `runs/demo`): then every run found one or two
levels below gets its own page and DIR/index.html links them.
"""

from __future__ import annotations

import os
import sys
import urllib.parse


def register(sub) -> None:
    p = sub.add_parser("view", help="write a self-contained HTML page of a run (or of each run in a folder): "
                                    "metrics, trajectories, reward maps")
    p.add_argument("run_dir", help="run directory (metrics.jsonl, trajectories/, reward_maps/) or a folder of runs")
    p.add_argument("-o", "--out", default=None, help="output HTML file (default RUN_DIR/report.html; for a folder "
                                                     "of runs, the index page, default DIR/index.html)")
    p.add_argument("--max-trajectories", type=int, default=5000, help="embed at most this many (latest) trajectories")
    p.add_argument("--serve", action="store_true", help="also serve the page on http://127.0.0.1:PORT until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (0: any free port)")
    p.set_defaults(func=run)


def make_server(path: str, port: int = 8000, *, also: tuple[str, ...] | list[str] = ()):
    """An HTTP server on 127.0.0.1:`port` (0: any free port) answering only with the file `path` (at "/")
    and the files `also` (the run pages an index links to), each at its path relative to the
    directory holding them all, so the index's relative links resolve; nothing else is reachable."""
    import http.server

    files = [os.path.abspath(f) for f in (path, *also)]
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    pages = {"/" + urllib.parse.quote(os.path.relpath(f, root).replace(os.sep, "/")): f for f in files}
    pages["/"] = files[0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            file = pages.get(self.path.split("?")[0])
            if file is None:
                self.send_error(404)
                return
            with open(file, "rb") as f:
                page = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature); quiet
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve(path: str, port: int = 8000, also: tuple[str, ...] | list[str] = ()) -> None:
    """Serves `path` (and the pages `also`) on 127.0.0.1:`port` until interrupted (nothing else is reachable)."""
    with make_server(path, port, also=also) as server:
        print(f"serving {path} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def run(args) -> int:
    from jaxalign.viewer import is_run, write_index, write_report

    # Errors on the input (no such directory, nothing to show, a malformed record) are ViewerError,
    # a UserError: `jaxalign.cli.main` prints them in one line and exits with 2.
    if os.path.isdir(args.run_dir) and not is_run(args.run_dir):
        path, rows = write_index(args.run_dir, args.out, max_trajectories=args.max_trajectories)
        pages = [r["page"] for r in rows if r["page"]]
        for r in rows:
            if r["error"]:
                print(f"jaxalign view: warning: skipped {r['run']}: {r['error']}", file=sys.stderr)
        print("\n".join([*pages, path]))
    else:
        path, pages = write_report(args.run_dir, args.out, max_trajectories=args.max_trajectories), []
        print(path)
    if args.serve:
        serve(path, args.port, also=pages)
    return 0
