"""`jaxalign view RUN_DIR [-o report.html] [--serve]`: the run viewer page (one self-contained HTML file)."""

from __future__ import annotations

import os
import sys


def register(sub) -> None:
    p = sub.add_parser("view", help="write a self-contained HTML page of a run: metrics, trajectories, reward maps")
    p.add_argument("run_dir", help="run directory (metrics.jsonl, trajectories/, reward_maps/)")
    p.add_argument("-o", "--out", default=None, help="output HTML file (default RUN_DIR/report.html)")
    p.add_argument("--max-trajectories", type=int, default=5000, help="embed at most this many (latest) trajectories")
    p.add_argument("--serve", action="store_true", help="also serve the page on http://127.0.0.1:PORT until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (0: any free port)")
    p.set_defaults(func=run)


def make_server(path: str, port: int = 8000):
    """An HTTP server on 127.0.0.1:`port` (0: any free port) answering only with the file `path`."""
    import http.server

    page = open(path, "rb").read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] not in ("/", "/" + os.path.basename(path)):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature); quiet
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve(path: str, port: int = 8000) -> None:
    """Serves the single file `path` on 127.0.0.1:`port` until interrupted (nothing else is reachable)."""
    with make_server(path, port) as server:
        print(f"serving {path} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def run(args) -> int:
    from jaxalign.viewer import write_report

    try:
        path = write_report(args.run_dir, args.out, max_trajectories=args.max_trajectories)
    except (FileNotFoundError, ValueError) as e:
        print(f"jaxalign view: error: {e}", file=sys.stderr)
        return 2
    print(path)
    if args.serve:
        serve(path, args.port)
    return 0
