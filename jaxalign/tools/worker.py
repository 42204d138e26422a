"""The sandboxed worker server: ``python -I worker.py CONFIG_JSON``, launched by ``backends.py``.

Stdlib only and run by file path, so the sandbox needs neither ``jaxalign`` nor its dependencies.
The server is trusted code that never runs model code itself. It reads framed requests on stdin and
answers on stdout. Each stateless call gets a fresh child forked from this warm interpreter (~1 ms,
against ~40 ms for a fresh bwrap + python); the child confines itself before it receives any code,
so the server forks the next one ahead of time, while idle. A session keeps one persistent child.
The server supervises children against a wall-clock deadline, reads their output with bounded
buffers, and kills every descendant after a call, so nothing outlives the call that started it.
"""

from __future__ import annotations

import codecs
import gc
import json
import os
import select
import shutil
import signal
import sys
import time
from typing import Any

_TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _TOOLS_DIR)  # -I leaves the script's directory off sys.path

import isolate  # noqa: E402
import jail  # noqa: E402
import protocol  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
_CHUNK = 1 << 16


class Collector:
    """Keeps the first ``max_chars`` characters of a byte stream and counts the rest."""

    def __init__(self, max_chars: int) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")  # invalid UTF-8 -> U+FFFD
        self._parts: list[str] = []
        self._room = max_chars
        self.dropped = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        keep = text[: self._room]
        if keep:
            self._parts.append(keep)
            self._room -= len(keep)
        self.dropped += len(text) - len(keep)

    def text(self) -> str:
        self.feed(b"", final=True)
        out = "".join(self._parts)
        return out + f"\n... [output truncated: {self.dropped} chars]" if self.dropped else out


class Child:
    """A forked user-code process and the server's ends of its pipes."""

    def __init__(self, pid: int, out: int, err: int, res: int, req: int | None, workdir: str) -> None:
        self.pid, self.out, self.err, self.res, self.req, self.workdir = pid, out, err, res, req, workdir
        self.started = False  # set once confinement succeeded: failures before it are the sandbox's fault
        try:
            self.pidfd: int | None = os.pidfd_open(pid)  # readable when the process exits
        except (AttributeError, OSError):
            self.pidfd = None  # old kernel: poll instead
        self.results = protocol.MessageBuffer(limit=1 << 20)

    def close(self) -> None:
        for fd in (self.out, self.err, self.res, self.req, self.pidfd):
            if fd is not None:
                os.close(fd)


def _describe(status: int) -> tuple[str, str]:
    """(kind, error) for a user process that ended without reporting a result."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timeout", "timeout (CPU time limit)"
        return "crash", f"crashed: killed by signal {signal.Signals(sig).name}"
    # A cell that finishes reports its outcome before the process exits; exiting first (os._exit)
    # skipped the rest of the cell and the report, so even code 0 is a crash, not a success.
    return "crash", f"crashed: exited with code {os.waitstatus_to_exitcode(status)} without finishing"


class Server:
    """Serves requests from the parent, one at a time, on the protocol file descriptors."""

    def __init__(self, cfg: dict[str, Any], proto_in: int, proto_out: int) -> None:
        self.cfg, self.proto_in, self.proto_out = cfg, proto_in, proto_out
        self.counter = 0
        self.tag = os.urandom(4).hex()  # working-dir names unique across workers, not just within one
        self.session: Child | None = None
        self.spare: Child | None = None  # next stateless child, forked ahead of time
        self.pending: Child | None = None  # last stateless child, finishing after its response
        self.session_lost: str | None = None  # why the previous session process died, if it did
        self.tracked: set[int] = set()
        self.pid = os.getpid()
        self.exited: dict[int, int] = {}

    # -- processes --------------------------------------------------------------------------------
    def _reap(self) -> None:
        while True:  # we are a subreaper (or pid 1): every orphan of a call ends up here
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.tracked:
                self.exited[pid] = status

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            if fields[0] != b"Z":
                children.setdefault(int(fields[1]), []).append(int(name))
        found, stack = [], [self.pid]
        while stack:
            for pid in children.get(stack.pop(), ()):
                found.append(pid)
                stack.append(pid)
        return found

    def _has_descendants(self, keep: set[int]) -> bool:
        """Cheap check before a full /proc scan: orphans re-parent to the server (subreaper), so
        with no children besides ``keep``, and none of ``keep``'s own, nothing is left."""
        try:
            for pid in {self.pid} | keep:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        if {int(p) for p in f.read().split()} - keep:
                            return True
            return False
        except OSError:  # no CONFIG_PROC_CHILDREN, or a kept process just died: scan
            return True

    def _kill_descendants(self, keep: set[int] = frozenset()) -> None:
        """SIGKILL every process below the server (except ``keep``) until none is left.

        Orphans re-parent to the server (subreaper / pid 1), so a process that daemonised or called
        setsid is still found; repeated passes catch children forked during a pass (fork bombs).
        """
        if not self._has_descendants(keep):
            return
        for attempt in range(400):
            pids = [p for p in self._descendants() if p not in keep]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self._reap()
            time.sleep(0.0005 * min(attempt, 20))
        self._reap()

    def _spawn(self, once: bool) -> Child:
        self.counter += 1
        workdir = os.path.join(self.cfg["workroot"], f"sbx-{self.tag}-{self.counter}")
        os.mkdir(workdir, 0o700)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        req_r, req_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            jail.child_main(self.cfg, workdir, (out_w, err_w, res_w, req_r), once)
        for fd in (out_w, err_w, res_w, req_r):
            os.close(fd)
        self.tracked.add(pid)
        return Child(pid, out_r, err_r, res_r, req_w, workdir)

    def _take_spare(self) -> Child:
        """The pre-forked, already confined one-shot child, or a new one."""
        spare, self.spare = self.spare, None
        self._reap()
        if spare is not None and spare.pid not in self.exited:
            return spare
        if spare is not None:
            self._retire(spare)
        return self._spawn(once=True)

    def finish_pending(self) -> None:
        """Wait for the last stateless child to exit, then kill whatever it left behind and remove
        its files. Done after the response is sent, but before the next request is read."""
        child, self.pending = self.pending, None
        if child is None:
            return
        deadline = time.monotonic() + 1.0
        while child.pid not in self.exited and time.monotonic() < deadline:
            select.select([child.pidfd] if child.pidfd is not None else [], [], [], 0.001 if child.pidfd is None
                          else deadline - time.monotonic())
            self._reap()
        self._kill_descendants({self.session.pid} if self.session is not None else set())
        self._retire(child)

    def prefork(self) -> None:
        """Fork and confine the next stateless child while idle: fork, setuid, rlimits and seccomp
        then cost the next call nothing but a write to a pipe."""
        if self.spare is None and self.session is None:
            try:
                self.spare = self._spawn(once=True)
            except OSError as e:  # e.g. EAGAIN from fork: the next call retries and reports it
                print(f"jaxalign sandbox: prefork failed: {e}", file=sys.stderr)

    def _retire(self, child: Child) -> None:
        self.tracked.discard(child.pid)
        self.exited.pop(child.pid, None)
        child.close()
        try:
            os.rmdir(child.workdir)  # the common case: the code wrote no files
        except OSError:
            shutil.rmtree(child.workdir, ignore_errors=True)

    # -- supervision ------------------------------------------------------------------------------
    def _read(self, child: Child, fd: int, streams: dict[int, Collector], outcomes: list[dict]) -> bool:
        """Read one chunk; False at EOF (or nothing to read on a drained non-blocking fd)."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return False
        if not data:
            return False
        if fd in streams:
            streams[fd].feed(data)
            return True
        try:
            for msg in child.results.feed(data):
                if msg.get("started") is True and not child.started:
                    child.started = True
                else:
                    outcomes.append(msg)
        except protocol.ProtocolError:
            outcomes.append({"ok": False, "kind": "exception", "error": "the code wrote garbage to the result pipe"})
        return True

    def _supervise(self, child: Child, deadline: float) -> dict[str, Any]:
        """Collect output and the outcome until the cell is done, the process exits or time is up."""
        max_chars = self.cfg["max_output_chars"]
        streams = {child.out: Collector(max_chars), child.err: Collector(max_chars)}
        outcomes: list[dict] = []
        watch = [child.out, child.err, child.res] + ([child.pidfd] if child.pidfd is not None else [])
        timed_out = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready = select.select(watch, [], [], remaining if child.pidfd is not None else min(remaining, 0.01))[0]
            for fd in ready:
                if fd == child.pidfd or not self._read(child, fd, streams, outcomes):
                    watch.remove(fd)
            self._reap()
            if child.pid in self.exited or outcomes:
                break
        alive = not timed_out and child.pid not in self.exited
        keep = {c.pid for c in (self.spare, child if alive else None) if c is not None}
        self._kill_descendants(keep)  # nothing the cell started outlives the call
        for fd in (child.out, child.err, child.res):  # writers are dead (or flushed): drain what is left
            os.set_blocking(fd, False)
            for _ in range(4096):
                if not self._read(child, fd, streams, outcomes):
                    break
        return {"timed_out": timed_out, "alive": alive, "status": self.exited.get(child.pid),
                "outcome": outcomes[0] if outcomes else None, "stdout": streams[child.out],
                "stderr": streams[child.err]}

    # -- requests ---------------------------------------------------------------------------------
    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run one cell, statelessly or in the session process; returns the response message."""
        session, note, restarted = bool(req.get("session")), "", False
        timeout_s = float(req.get("timeout_s") or self.cfg["timeout_s"])
        if session and self.session is None:
            if self.session_lost:
                note = (f"[sandbox] note: the session was restarted because its process was killed "
                        f"({self.session_lost}); variables, imports and files from earlier calls are lost.\n")
                restarted = True
            self.session, self.session_lost = self._spawn(once=False), None
        child = self.session if session else self._take_spare()
        start = time.monotonic()
        try:
            protocol.write_message(child.req, {"code": req["code"], "timeout_s": timeout_s})
        except OSError:
            pass  # the process died; supervision reports how
        sup = self._supervise(child, start + timeout_s)
        kind, error, outcome = "ok", None, sup["outcome"]
        if sup["timed_out"]:
            kind, error = "timeout", "timeout"
        elif outcome is not None and outcome.get("kind") in ("ok", "exception", "memory") and child.started:
            kind, error = outcome["kind"], outcome.get("error")
        elif not child.started:
            detail = outcome.get("error") if outcome else f"status {sup['status']}"
            kind, error = "sandbox_failure", f"sandbox failure: user process setup failed: {detail}"
        elif sup["status"] is not None:
            kind, error = _describe(sup["status"])
        elif outcome is not None:  # alive, but what it wrote is no outcome the runner sends
            kind, error = "exception", "the code wrote garbage to the result pipe"
        if kind == "memory":
            error = "memory limit"
        out, err = sup["stdout"].text(), sup["stderr"].text()
        truncated = bool(sup["stdout"].dropped or sup["stderr"].dropped)
        if kind == "ok" and truncated:
            error = "output truncated"
        if session and not sup["alive"]:
            self.session_lost = error or "exited"
            self.session = None
        if not sup["alive"]:
            self._retire(child)
        elif not session:
            self.pending = child  # exiting: cleaned up after the response is sent
        return {"stdout": out, "stderr": note + err, "ok": kind == "ok", "kind": kind, "error": error or None,
                "truncated": truncated, "state_lost": restarted, "restarted": restarted,
                "duration_s": time.monotonic() - start}

    def reset(self) -> dict[str, Any]:
        """Forget the session: kill every process and file, so the worker can serve someone else."""
        self._kill_descendants()
        for child in (self.session, self.spare):
            if child is not None:
                self._retire(child)
        self.session, self.spare, self.session_lost = None, None, None
        return {"ok": True}

    def serve(self) -> None:
        while True:
            req = protocol.read_message(self.proto_in)
            if req is None or req.get("op") == "exit":
                self.finish_pending()
                self._kill_descendants()
                return
            try:
                resp = self.reset() if req.get("op") == "reset" else self.run(req)
            except Exception as e:  # a server bug must surface as a sandbox failure, not a hang
                resp = {"ok": False, "kind": "sandbox_failure", "error": f"sandbox failure: worker error: {e!r}"}
            protocol.write_message(self.proto_out, resp)
            self.finish_pending()
            self.prefork()


def main() -> None:
    """Set up isolation as configured, announce readiness, then serve until stdin closes."""
    cfg = json.loads(sys.argv[1])
    # Keep the protocol off fds 0/1, so stray prints (e.g. from preloaded modules) cannot corrupt it.
    proto_in, proto_out = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the trainer (bwrap adds its own)
    if cfg.get("parent_pid") and os.getppid() != cfg["parent_pid"]:
        sys.exit("parent died during startup")
    if cfg.get("unshare"):
        isolate.enter_namespaces(cfg["workroot"], cfg["disk_mb"], cfg["expose"])
    if cfg.get("probe"):
        sys.exit(0)
    jail.prctl(PR_SET_CHILD_SUBREAPER, 1)
    for module in cfg.get("preload", ()):
        __import__(module)
    # Children are forked from here: frozen objects are never traversed by a child's garbage
    # collector, which would otherwise touch (and copy-on-write) every page of the heap.
    gc.collect()
    gc.freeze()
    protocol.write_message(proto_out, {"ready": True, "pid": os.getpid(), "uid": cfg["uid"]})
    server = Server(cfg, proto_in, proto_out)
    server.prefork()
    server.serve()


if __name__ == "__main__":
    main()
