"""Benchmark the Python sandbox against one fresh interpreter per call.

Measures calls/s and p50/p99 latency for a short snippet: the baseline
``subprocess.run([sys.executable, "-c", code])``, the stateless ``PythonSandbox.run`` (one call at a
time, the like-for-like comparison), ``run_many`` (concurrent over the workers) and a session. Prints
a table and ends with one line ``RESULT {json}``.

    .venv/bin/python scripts/bench_sandbox.py [--calls 300] [--backend auto] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from jaxalign.tools import PythonSandbox

CODE = "print(sum(range(1000)))"
EXPECTED = "499500\n"


def _latencies(call: Callable[[], str], n: int) -> tuple[float, list[float]]:
    """(wall seconds, per-call seconds) for ``n`` sequential calls, checking each output."""
    lat = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        out = call()
        lat.append(time.perf_counter() - t)
        if out != EXPECTED:
            raise RuntimeError(f"unexpected output {out!r}")
    return time.perf_counter() - start, lat


def _row(name: str, n: int, wall: float, lat: list[float] | None) -> dict[str, float]:
    row = {"calls": n, "calls_per_s": n / wall}
    if lat:
        q = statistics.quantiles(lat, n=100, method="inclusive")
        row |= {"p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * q[98]}
    print(f"{name:<34} {n:>6} {row['calls_per_s']:>10.1f} "
          f"{row.get('p50_ms', float('nan')):>9.2f} {row.get('p99_ms', float('nan')):>9.2f}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per sandbox measurement")
    parser.add_argument("--baseline-calls", type=int, default=60, help="calls for the subprocess baseline")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    print(f"{'measurement':<34} {'calls':>6} {'calls/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    baseline_call = lambda: subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True).stdout
    _latencies(baseline_call, 3)  # warm the page cache
    baseline = _row("baseline subprocess python -c", args.baseline_calls,
                    *_latencies(baseline_call, args.baseline_calls))

    with PythonSandbox(backend=args.backend, workers=args.workers) as sb:
        for _ in range(20):  # start the workers and warm them up
            sb.run(CODE)
        ours = _row(f"sandbox run ({sb.backend})", args.calls, *_latencies(lambda: sb.run(CODE).stdout, args.calls))
        start = time.perf_counter()
        results = sb.run_many([CODE] * args.calls)
        wall = time.perf_counter() - start
        if any(r.stdout != EXPECTED for r in results):
            raise RuntimeError("run_many returned a wrong output")
        many = _row(f"sandbox run_many ({args.workers} workers)", args.calls, wall, None)
        with sb.session() as session:
            session.run("total = 0")
            step = lambda: session.run(f"total += 1\n{CODE}").stdout
            sess = _row("sandbox session run", args.calls, *_latencies(step, args.calls))
        stats = sb.stats()
        backend = sb.backend

    ratio = ours["calls_per_s"] / baseline["calls_per_s"]
    print(f"ratio (stateless run / baseline): {ratio:.2f}x; stats: {stats}")
    result = {
        "name": "sandbox_calls_per_s", "unit": "calls/s", "backend": backend,
        "ours": round(ours["calls_per_s"], 1), "baseline": round(baseline["calls_per_s"], 1), "ratio": round(ratio, 2),
        "ours_p50_ms": round(ours["p50_ms"], 2), "ours_p99_ms": round(ours["p99_ms"], 2),
        "baseline_p50_ms": round(baseline["p50_ms"], 2), "baseline_p99_ms": round(baseline["p99_ms"], 2),
        "run_many_calls_per_s": round(many["calls_per_s"], 1), "workers": args.workers,
        "session_calls_per_s": round(sess["calls_per_s"], 1), "session_p50_ms": round(sess["p50_ms"], 2),
        "session_p99_ms": round(sess["p99_ms"], 2), "sandbox_failures": stats["sandbox_failures"],
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
