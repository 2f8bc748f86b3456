"""Inspecting a dlt pipeline inside a worker process: the request protocol and what it runs.

A worker runs as `python -m elt_repo.discovery.dlt_inspect --serve`: one JSON request per line on
stdin, one marked JSON reply per request on stdout. `inspector_pool` starts and talks to workers.
The import helpers are shared with the runs, which import pipelines the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from elt_repo.discovery.pipeline_imports import OutsideRepoImport, add_to_path, repo_root
from elt_repo.discovery.sandbox import Limits

# Starts every reply line: pipeline code may print to stdout too, and its lines are no replies.
REPLY_MARK = "\x1eelt_inspect_reply "
# Starts the worker's one stderr line that says how it is sandboxed.
SANDBOX_MARK = "\x1eelt_sandbox "


class InspectError(Exception):
    """The source could not be listed; the message is one line for the manifest.

    `field` names the config field at fault when it is not `dlt.source` itself.
    """

    def __init__(self, message: str, field: str | None = None, retry: bool = False):
        super().__init__(message)
        self.field = field
        self.retry = retry  # the environment failed (see `from_environment`): try again later


# What pipeline code raises when its environment fails rather than its code: a module not
# installed, a source refusing the connection or not answering, a config key or variable
# not set. dlt, SQLAlchemy and the drivers have their own classes for the last two.
_ENVIRONMENT_ERRORS = (ImportError, OSError, TimeoutError)
_ENVIRONMENT_ERROR_NAMES = {
    "OperationalError",
    "InterfaceError",
    "ConfigFieldMissingException",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
}


# Modules that pipelines written from dlt's docs import for their sources, and the package
# that provides each; any other missing module is named as it is.
_PACKAGES = {
    "psycopg": "psycopg[binary] (pip install 'elt_repo[postgres]')",
    "psycopg2": "psycopg2-binary (pip install 'elt_repo[postgres]')",
    "sqlalchemy": "sqlalchemy (pip install 'elt_repo[postgres]')",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
    "pyodbc": "pyodbc",
    "oracledb": "oracledb",
    "pymssql": "pymssql",
    "snowflake": "snowflake-sqlalchemy",
    "pyarrow": "pyarrow",
    "pandas": "pandas (dlt's filesystem readers such as read_csv use it)",
}


def missing_module_hint(exc: BaseException) -> str | None:
    """For a missing module anywhere in `exc`'s chain: which package to install, and where."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            top = current.name.split(".")[0]
            package = _PACKAGES.get(top, f"the package that provides {top!r}")
            return (
                f"install {package} beside elt_repo, in the environment of the code server "
                "and the runs (README: Pipeline dependencies)"
            )
        current = current.__cause__ or current.__context__
    return None


def from_environment(exc: BaseException) -> bool:
    """Whether `exc` says the environment failed: worth retrying without a new commit."""
    if isinstance(exc, OutsideRepoImport):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, _ENVIRONMENT_ERRORS) or bool(names & _ENVIRONMENT_ERROR_NAMES)


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
    """Import a pipeline file by path, registered in sys.modules first (dlt looks it up there).

    The module is `<prefix>_<hash of its path>.<file stem>`: unique per file, and its last part
    is what dlt derives config sections from, so `SOURCES__PIPELINE__<SOURCE>__<KEY>` for a
    `pipeline.py` is found here as when its author runs `python pipeline.py`.
    """
    path = (folder / file).resolve()
    package = f"{module_prefix}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    parent = types.ModuleType(package)
    parent.__path__ = [str(path.parent)]  # relative imports resolve inside the folder
    sys.modules.setdefault(package, parent)
    sys.modules[name] = module
    add_to_path(folder, repo_root(folder))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        sys.modules.pop(package, None)
        raise
    return module


@contextmanager
def pipeline_settings(folder: Path) -> Iterator[None]:
    """dlt reads the folder's own `.dlt/config.toml` and `.dlt/secrets.toml`, as when its author
    runs `python pipeline.py` in it, and no other folder's. Environment variables still win.

    dlt reads `./.dlt` once per process and keeps it, so without this a worker would give every
    pipeline the settings of the first folder it listed, and a run those of its working dir.
    """
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    var, before = "DLT_PROJECT_DIR", os.environ.get("DLT_PROJECT_DIR")
    context = Container()[PluggableRunContext]
    os.environ[var] = str(folder.resolve())
    context.reload_providers()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = before
        context.reload_providers()


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


def _answer(request: Mapping[str, Any], limits: Limits | None = None) -> dict[str, Any]:
    """One request, in this process: the reply, or the error as one line."""
    before = set(sys.modules)
    path_before = list(sys.path)
    cwd = os.getcwd()
    try:
        os.chdir(request["folder"])
        with pipeline_settings(Path(request["folder"])):
            if request["mode"] == "run":
                return {"run": _inspect_run(request)}
            return {"resources": _list(request)}
    except InspectError as exc:
        return {"error": str(exc), "field": exc.field}
    except MemoryError:
        message = limits.memory_message() if limits is not None else "MemoryError"
        return {"error": message}
    except BaseException as exc:  # the pipeline's own code may raise anything
        cause = exc
        while cause.__cause__ is not None and not from_environment(cause):  # dlt wraps causes
            cause = cause.__cause__
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        hint = missing_module_hint(exc)
        return {"error": f"{error}; {hint}" if hint else error, "retry": from_environment(cause)}
    finally:
        os.chdir(cwd)
        sys.path[:] = path_before
        # The pipeline's modules and the repo's shared ones, not libraries: the next listing
        # may come from another commit's worktree.
        roots = {str(repo_root(Path(request["folder"]))), os.path.realpath(request["folder"])}
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
            if name.startswith("elt_pipeline_") or any(
                str(place).startswith(root) for place in places for root in roots
            ):
                sys.modules.pop(name, None)


def serve(argv: list[str]) -> None:
    """Worker entry point: one JSON request per stdin line, one marked JSON reply per request.

    The sandbox comes first, before dlt or any pipeline code is imported.
    """
    from elt_repo.discovery import sandbox

    limits = Limits.from_argv(argv)
    how = sandbox.enter(limits)
    sys.stderr.write(f"{SANDBOX_MARK}{how}\n")
    sys.stderr.flush()
    import dlt  # noqa: F401  (paid once per worker, not per pipeline)

    for line in sys.stdin:
        if not line.strip():
            continue
        sandbox.limit_cpu(limits)
        reply = _answer(json.loads(line), limits)
        sandbox.sweep()  # nothing the listing started outlives it
        sys.stdout.write("\n" + REPLY_MARK + json.dumps(reply) + "\n")
        sys.stdout.flush()
    os._exit(0)  # skip atexit hooks a pipeline module may have registered


if __name__ == "__main__":
    serve(sys.argv[1:])
