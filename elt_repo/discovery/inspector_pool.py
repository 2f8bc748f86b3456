"""The dlt inspector workers: long-lived processes, so a hanging or crashing import stays
contained and dlt is imported once per worker, not once per pipeline.

`dlt_inspect` is what runs inside each worker; this module starts, reuses and stops them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from elt_repo.discovery.dlt_inspect import REPLY_MARK, SANDBOX_MARK, InspectError
from elt_repo.discovery.sandbox import Limits
from elt_repo.schemas import DltResourceSpec

log = logging.getLogger(__name__)
_warned: set[str] = set()  # sandbox warnings already logged by this process


def list_resources(
    folder: Path,
    source: str,
    args: Mapping[str, Any],
    partition_args: Mapping[str, str],
    timeout: float,
    env: Mapping[str, str],
    pool: InspectorPool | None = None,
) -> tuple[DltResourceSpec, ...]:
    """List resources by importing the source in a worker process, with a timeout."""
    file, _, function = source.partition(":")
    request = {
        "mode": "resources",
        "folder": str(folder),
        "file": file,
        "function": function,
        "args": args,
        "partition_args": dict(partition_args),
    }
    payload = _ask(request, timeout, env, pool)
    return tuple(DltResourceSpec(**r) for r in payload["resources"])


def inspect_run(
    folder: Path,
    file: str,
    timeout: float,
    env: Mapping[str, str],
    pool: InspectorPool | None = None,
) -> bool:
    """Check a reference-style `run` in a worker process; returns whether it takes partition_key."""
    request = {"mode": "run", "folder": str(folder), "file": file}
    return bool(_ask(request, timeout, env, pool)["run"]["accepts_partition_key"])


def _ask(
    request: Mapping[str, Any],
    timeout: float,
    env: Mapping[str, str],
    pool: InspectorPool | None,
) -> dict[str, Any]:
    if pool is not None:
        return pool.ask(request)
    with InspectorPool(env, timeout, workers=1) as one_off:
        return one_off.ask(request)


class _Worker:
    """One `python -m elt_repo.discovery.dlt_inspect --serve`: imports dlt once, answers many
    requests. `proc` is the sandbox's keeper; the worker proper is its child (see `sandbox`)."""

    def __init__(self, env: Mapping[str, str], limits: Limits):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "elt_repo.discovery.dlt_inspect", "--serve", *limits.argv()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            start_new_session=True,
        )
        self.stderr: deque[str] = deque(maxlen=20)
        self.sandbox = ""  # how the worker says it is sandboxed, once it has started
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # a pipeline may print: only marked lines are replies
            if line.startswith(REPLY_MARK):
                self.replies.put(line[len(REPLY_MARK) :])
        self.replies.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith(SANDBOX_MARK):
                self.sandbox = line[len(SANDBOX_MARK) :].strip()
                _log_sandbox(self.sandbox)
            elif line.strip():
                self.stderr.append(line.strip())

    def ask(self, request: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        what = "listing resources" if request["mode"] == "resources" else "inspecting run()"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise InspectError(f"{what} timed out after {timeout:g}s", retry=True) from None
        except OSError:
            reply = None
        if reply is None:
            self.proc.wait(timeout=5)
            time.sleep(0.05)  # let the stderr reader catch the last line
            status = _exit_status(self.proc.returncode)
            said = f" ({status}): {self.stderr[-1]}" if self.stderr else f": {status}"
            raise InspectError(f"{what} crashed{said}", retry=True)
        payload = json.loads(reply)
        if "error" in payload:
            raise InspectError(payload["error"], payload.get("field"), bool(payload.get("retry")))
        return payload

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """The keeper kills the worker and whatever it left (see `sandbox`); then the group."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _exit_status(code: int | None) -> str:
    """A worker's end in words; the keeper passes a signal on as 128+N."""
    sig = -code if code is not None and code < 0 else (code or 0) - 128
    if sig > 0 and sig in signal.valid_signals():
        return f"killed by {signal.Signals(sig).name}"
    return f"exit code {code}"


def _log_sandbox(how: str) -> None:
    """Once per process: how discovery workers are sandboxed, a warning when only partly."""
    if how in _warned:
        return
    _warned.add(how)
    if how.startswith("namespaces"):
        log.debug("discovery workers are sandboxed: %s", how)
    else:
        log.warning(
            "discovery workers are sandboxed by %s; see README: Pipelines repos are untrusted input",
            how,
        )


class InspectorPool:
    """A few long-lived worker processes that inspect dlt pipelines: for one discovery, or,
    from `shared_pool`, for every discovery of a process until they sit idle too long.

    Importing dlt costs about a second; each worker pays it once, not once per pipeline. A
    worker that hangs past `timeout` or crashes is replaced; each request runs in a clean
    module namespace, and the pipeline's own modules are dropped after it.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        timeout: float,
        workers: int = 2,
        idle_seconds: float | None = None,
        limits: Limits | None = None,
    ):
        self.env, self.timeout = dict(env), timeout
        self.limits = limits or Limits()
        # Last in, first out: an idle running worker is reused before another one is started.
        self.idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(max(1, workers)):
            self.idle.put(None)  # started on first use
        self.started: list[_Worker] = []
        self.lock = threading.Lock()
        # Workers left running between discoveries stop after `idle_seconds` without a request.
        self.idle_seconds = idle_seconds
        self.busy = 0
        self.last_used = time.monotonic()
        self._reaper: threading.Timer | None = None

    def ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        worker = self._take()
        try:
            return worker.ask(request, self.timeout)
        finally:
            self._give(worker)

    def warm(self) -> None:
        """Start a worker now unless one is running, so that its dlt import overlaps whatever
        the caller does next (a fetch and checkout) instead of following it."""
        with self.lock:
            if any(w.alive for w in self.started):
                return
        self._give(self._take())

    def _take(self) -> _Worker:
        """An idle running worker, or a new one in a free slot; busy until `_give`."""
        with self.lock:
            self.busy += 1
        worker = self.idle.get()
        try:
            with self.lock:
                # One stopped by close() or the idle reaper meanwhile counts as no worker.
                if worker is None or worker not in self.started or not worker.alive:
                    worker = _Worker(self.env, self.limits)
                    self.started.append(worker)
        except BaseException:
            self._give(None)
            raise
        return worker

    def _give(self, worker: _Worker | None) -> None:
        """Return a slot taken by `_take`; the idle reaper counts from now."""
        self.idle.put(worker if worker is not None and worker.alive else None)
        with self.lock:
            self.busy -= 1
            self.last_used = time.monotonic()
            self._arm_reaper()

    def _arm_reaper(self) -> None:
        """Under self.lock: stop idle workers later, if this pool stops them at all."""
        if self.idle_seconds is not None and self._reaper is None:
            self._reaper = threading.Timer(self.idle_seconds, self._reap)
            self._reaper.daemon = True
            self._reaper.start()

    def _reap(self) -> None:
        """Stop the workers once no request has come for `idle_seconds`; else check again later."""
        assert self.idle_seconds is not None
        with self.lock:
            self._reaper = None
            left = self.last_used + self.idle_seconds - time.monotonic()
            if self.busy or left > 0:
                self._reaper = threading.Timer(max(left, 1.0), self._reap)
                self._reaper.daemon = True
                self._reaper.start()
                return
            workers, self.started = self.started, []
        self._stop(workers)

    def close(self) -> None:
        """Stop every worker. The pool stays usable: a later request starts a new one."""
        with self.lock:
            workers, self.started = self.started, []
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
        self._stop(workers)

    @staticmethod
    def _stop(workers: list[_Worker]) -> None:
        for worker in workers:
            if worker.alive and worker.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    worker.proc.stdin.close()
            worker.stop()

    def __enter__(self) -> InspectorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A process that discovers again and again (the code server running the repo sensor) keeps its
# workers warm between commits, so a commit that changes one dlt pipeline does not pay for
# importing dlt again. bench/bench_discovery.py measures what that is worth. The default of
# ELT_INSPECTOR_IDLE; an idle worker holds about 55 MiB.
WORKER_IDLE_SECONDS = 300.0
_shared: dict[tuple[Any, ...], InspectorPool] = {}
_shared_lock = threading.Lock()


def shared_pool(
    env: Mapping[str, str],
    timeout: float,
    workers: int,
    idle_seconds: float = WORKER_IDLE_SECONDS,
    limits: Limits | None = None,
) -> InspectorPool:
    """This process's pool for `env`; its workers stop after `idle_seconds` unused
    (ELT_INSPECTOR_IDLE).

    Workers inherit `env` when they start, so a different environment gets a new pool and the
    old one's workers are stopped.
    """
    key = (tuple(sorted(env.items())), timeout, workers, idle_seconds, limits)
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None:
            for stale in _shared.values():
                stale.close()
            _shared.clear()
            pool = _shared[key] = InspectorPool(env, timeout, workers, idle_seconds, limits)
        return pool


@atexit.register
def close_shared_pools() -> None:
    """Stop the workers of every shared pool (also run at interpreter exit)."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        pool.close()
