"""List a dlt source's resources in a subprocess, so a hanging or crashing import stays contained.

Workers run as `python -m elt_repo.discovery.dlt_inspect --serve`: one JSON request per line on stdin,
one marked JSON reply per request on stdout.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from elt_repo.schemas import DltResourceSpec


class InspectError(Exception):
    """The source could not be listed; the message is one line for the manifest.

    `field` names the config field at fault when it is not `dlt.source` itself.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def check_partition_args(func: Callable[..., Any], partition_args: Mapping[str, str]) -> None:
    """Every `partition_args` value must name a parameter the source function takes."""
    params = inspect.signature(func).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for role, name in partition_args.items():
        if name not in params:
            takes = ", ".join(params) or "no parameters"
            raise InspectError(
                f"{name!r} is not a parameter of {getattr(func, '__name__', 'the source')}() "
                f"(it takes {takes})",
                field=f"dlt.partition_args.{role}",
            )


def import_pipeline_module(folder: Path, file: str, module_prefix: str = "elt_pipeline") -> Any:
    """Import a pipeline file by path, registered in sys.modules first (dlt looks it up there)."""
    path = (folder / file).resolve()
    name = f"{module_prefix}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def call_source(func: Callable[..., Any], args: Mapping[str, Any], optional: list[str]) -> Any:
    """Call a source function; params in `optional` that it requires are passed as None."""
    kwargs = dict(args)
    params = inspect.signature(func).parameters
    for name in optional:
        param = params.get(name)
        if name not in kwargs and param is not None and param.default is inspect.Parameter.empty:
            kwargs[name] = None
    return func(**kwargs)


def table_name(resource: Any) -> str:
    """The table a resource loads into: its table_name, or its name when that is dynamic."""
    table = resource.table_name if not callable(resource.table_name) else None
    return str(table or resource.name)


def check_run(run: Any) -> bool:
    """Validate a reference-style `run`; returns whether it takes `partition_key`."""
    if not callable(run):
        raise InspectError(f"run is not callable (it is a {type(run).__name__})")
    params = inspect.signature(run).parameters.values()
    required = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and p.name != "partition_key"
    ]
    if required:
        raise InspectError(
            f"run() must take no required parameters other than partition_key; it requires "
            f"{', '.join(required)}"
        )
    return any(
        (p.name == "partition_key" and p.kind != inspect.Parameter.POSITIONAL_ONLY)
        or p.kind == inspect.Parameter.VAR_KEYWORD
        for p in params
    )


def _inspect_run(request: Mapping[str, Any]) -> dict[str, Any]:
    module = import_pipeline_module(Path(request["folder"]), request["file"])
    if not hasattr(module, "run"):
        raise InspectError(f"{request['file']} defines no run")
    return {"accepts_partition_key": check_run(module.run)}


def _list(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    from dlt.extract.resource import DltResource
    from dlt.extract.source import DltSource

    folder = Path(request["folder"])
    module = import_pipeline_module(folder, request["file"])
    func = getattr(module, request["function"], None)
    if func is None:
        raise InspectError(f"{request['file']} has no function {request['function']!r}")
    check_partition_args(func, request["partition_args"])
    result = call_source(func, request["args"], list(request["partition_args"].values()))
    if isinstance(result, DltResource):
        resources = [result]
    elif isinstance(result, DltSource):
        resources = list(result.selected_resources.values())
    else:
        raise InspectError(
            f"{request['function']}() returned {type(result).__name__}, not a dlt source or resource"
        )
    if not resources:
        raise InspectError(f"{request['function']}() has no selected resources")
    return [
        {"name": r.name, "table_name": table_name(r), "write_disposition": r.write_disposition}
        for r in resources
    ]


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


_REPLY = "\x1eelt_inspect_reply "


class _Worker:
    """One `python -m elt_repo.discovery.dlt_inspect --serve`: imports dlt once, answers many requests."""

    def __init__(self, env: Mapping[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "elt_repo.discovery.dlt_inspect", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            start_new_session=True,
        )
        self.stderr: deque[str] = deque(maxlen=20)
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # a pipeline may print: only marked lines are replies
            if line.startswith(_REPLY):
                self.replies.put(line[len(_REPLY) :])
        self.replies.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
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
            raise InspectError(f"{what} timed out after {timeout:g}s") from None
        except OSError:
            reply = None
        if reply is None:
            self.proc.wait(timeout=5)
            time.sleep(0.05)  # let the stderr reader catch the last line
            tail = self.stderr[-1] if self.stderr else f"exit code {self.proc.returncode}"
            raise InspectError(f"{what} crashed: {tail}")
        payload = json.loads(reply)
        if "error" in payload:
            raise InspectError(payload["error"], payload.get("field"))
        return payload

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


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
    ):
        self.env, self.timeout = dict(env), timeout
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
                    worker = _Worker(self.env)
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
) -> InspectorPool:
    """This process's pool for `env`; its workers stop after `idle_seconds` unused
    (ELT_INSPECTOR_IDLE).

    Workers inherit `env` when they start, so a different environment gets a new pool and the
    old one's workers are stopped.
    """
    key = (tuple(sorted(env.items())), timeout, workers, idle_seconds)
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None:
            for stale in _shared.values():
                stale.close()
            _shared.clear()
            pool = _shared[key] = InspectorPool(env, timeout, workers, idle_seconds)
        return pool


@atexit.register
def close_shared_pools() -> None:
    """Stop the workers of every shared pool (also run at interpreter exit)."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        pool.close()


def _answer(request: Mapping[str, Any]) -> dict[str, Any]:
    """One request, in this process: the reply, or the error as one line."""
    before = set(sys.modules)
    path_before = list(sys.path)
    cwd = os.getcwd()
    try:
        os.chdir(request["folder"])
        if request["mode"] == "run":
            return {"run": _inspect_run(request)}
        return {"resources": _list(request)}
    except InspectError as exc:
        return {"error": str(exc), "field": exc.field}
    except BaseException as exc:  # the pipeline's own code may raise anything
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    finally:
        os.chdir(cwd)
        sys.path[:] = path_before
        folder = str(Path(request["folder"]).resolve())
        for name in set(sys.modules) - before:  # the pipeline's modules, not libraries
            file = getattr(sys.modules.get(name), "__file__", None) or ""
            if name.startswith("elt_pipeline_") or file.startswith(folder):
                sys.modules.pop(name, None)


def serve() -> None:
    """Worker entry point: one JSON request per stdin line, one marked JSON reply per request."""
    import dlt  # noqa: F401  (paid once per worker, not per pipeline)

    for line in sys.stdin:
        if not line.strip():
            continue
        reply = _answer(json.loads(line))
        sys.stdout.write("\n" + _REPLY + json.dumps(reply) + "\n")
        sys.stdout.flush()
    os._exit(0)  # skip atexit hooks a pipeline module may have registered


if __name__ == "__main__":
    serve()
