"""Project settings from the environment, `.env` and an optional `elt.yaml` (layer 1)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate

if TYPE_CHECKING:  # elt_repo.warehouse imports this module
    from elt_repo.warehouse import Warehouse

PACKAGE_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = PACKAGE_DIR.parent / "examples" / "pipelines"
# The default repository: examples/pipelines committed into a local Git repo under the state dir.
EXAMPLE_REPO_URL = "example"

# `${VAR}` and `${VAR:-default}`.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A settings value that cannot be used; the message names the source and the variable."""


# Credentials elt_repo itself uses: the Git token, the Dagster instance's database, Dagster+.
# Pipeline code never gets them: not at discovery, not while it runs.
OWN_SECRETS = (
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "DAGSTER_PG_URL",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_CLOUD_API_TOKEN",
    "DAGSTER_CLOUD_AGENT_TOKEN",
)


def is_own(name: str) -> bool:
    """Whether pipeline code must not see a variable: OWN_SECRETS, and elt_repo's own settings
    (ELT_*), whose repo URL may carry credentials."""
    return name in OWN_SECRETS or name.startswith("ELT_")


def own_secret_names(environ: Mapping[str, str]) -> list[str]:
    """The variables of `environ` that pipeline code must not see."""
    return [k for k in environ if is_own(k)]


class OwnSecretError(SettingsError):
    """A pipeline's config names one of elt_repo's own variables: its config to fix."""


def interpolate(value: str, environ: Mapping[str, str], where: str = "") -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset variable without a default is an error."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        if is_own(name):
            raise OwnSecretError(
                f"{where}{name} is elt_repo's own setting or credential, which pipelines never "
                "get; give the pipeline a variable of its own".strip()
            )
        raise SettingsError(f"{where}environment variable {name} is not set".strip())

    return VARIABLE.sub(sub, value)


def interpolate_tree(value: Any, environ: Mapping[str, str], where: str = "") -> Any:
    """Interpolate every string inside nested dicts and lists."""
    if isinstance(value, str):
        return interpolate(value, environ, where)
    if isinstance(value, Mapping):
        return {k: interpolate_tree(v, environ, where) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, environ, where) for v in value]
    return value


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file: KEY=VALUE lines, `#` comments, optional quotes and `export`."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, val = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise SettingsError(f"{path}:{lineno}: expected KEY=VALUE")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        values[key.strip()] = val
    return values


# How runs execute their steps (ELT_EXECUTOR). multiprocess, Dagster's default, starts a process
# per step: a crash or OOM kill fails only that step, and a run's steps can run in parallel.
# in_process runs them in the run's process: about 1.5 s less per run (bench_load_path.py).
EXECUTORS = ("multiprocess", "in_process")
# How discovery workers are sandboxed (elt_repo.discovery.sandbox).
SANDBOX_MODES = ("auto", "required", "off")


class _EltYamlSchema(Schema):
    """`elt.yaml`: the same settings as the environment, plus named Sling connections."""

    class Meta:
        unknown = RAISE

    repo_url = fields.String()
    repo_branch = fields.String()
    pipelines_dir = fields.String()
    auto_refresh = fields.Boolean()
    poll_interval = fields.Integer(validate=validate.Range(min=5))
    automation_interval = fields.Integer(validate=validate.Range(min=5))
    worktree_grace = fields.Integer(validate=validate.Range(min=0))
    first_load_timeout = fields.Float(validate=validate.Range(min=1))
    state_dir = fields.String()
    warehouse = fields.String()
    discovery_timeout = fields.Float(validate=validate.Range(min=1))
    rediscover_interval = fields.Float(validate=validate.Range(min=0))
    sling_stall_seconds = fields.Float(validate=validate.Range(min=1))
    local_roots = fields.String()
    inspector_idle = fields.Float(validate=validate.Range(min=0))
    discovery_memory_mb = fields.Integer(validate=validate.Range(min=0))
    discovery_cpu_seconds = fields.Integer(validate=validate.Range(min=0))
    discovery_sandbox = fields.String(validate=validate.OneOf(SANDBOX_MODES))
    executor = fields.String(validate=validate.OneOf(EXECUTORS))
    connections = fields.Dict(keys=fields.String(), values=fields.Dict())


@dataclass(frozen=True)
class Settings:
    """Everything elt_repo needs to know about where things are."""

    project_dir: Path
    repo_url: str
    repo_branch: str
    pipelines_dir: str
    auto_refresh: bool
    poll_interval: int
    state_dir: Path
    # A DuckDB file, or a Postgres database (its URL as written: `${VAR}` unresolved).
    warehouse: Warehouse
    discovery_timeout: float = 60.0
    automation_interval: int = 30
    # A worktree unused for this long, and pinned by no queued or running run, may be removed.
    worktree_grace: int = 3600
    # With no manifest cached, loading the definitions refreshes once, for at most this long.
    first_load_timeout: float = 45.0
    # Pipelines whose tables come from their source are resolved again this often, no commit
    # needed (0: on every refresh).
    rediscover_interval: float = 3600.0
    # A Sling run whose process tree sits idle this long, a child blocked on a pipe, is killed
    # (a known hang of Sling's DuckDB writer) and run once more.
    sling_stall_seconds: float = 300.0
    # Host folders that Sling file streams may read besides their pipeline's folder.
    local_roots: tuple[Path, ...] = ()
    # A long-lived process keeps its dlt inspector workers this long after their last use.
    inspector_idle: float = 300.0
    # What pipeline code listed at discovery may use: memory per process (MiB) and CPU time
    # per listing (s), 0 for no limit; and how its workers are sandboxed (README).
    discovery_memory_mb: int = 2048
    discovery_cpu_seconds: int = 60
    discovery_sandbox: str = "auto"
    # How a run executes its steps: "multiprocess" (Dagster's default) or "in_process".
    executor: str = "multiprocess"
    # Raw connection configs; `${VAR}` stays unresolved until a run needs it.
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    github_token: str | None = field(default=None, repr=False, compare=False)

    @property
    def repo_state_dir(self) -> Path:
        return self.state_dir / "repo"

    @property
    def manifest_path(self) -> Path:
        return self.state_dir / "manifest.json"

    @property
    def dlt_dir(self) -> Path:
        return self.state_dir / "dlt"

    @property
    def sling_home(self) -> Path:
        return self.state_dir / "sling"

    @property
    def example_repo_dir(self) -> Path:
        return self.state_dir / "example_repo"

    @property
    def uses_example_repo(self) -> bool:
        return self.repo_url == EXAMPLE_REPO_URL

    @property
    def effective_repo_url(self) -> str:
        """The URL git is pointed at: the built example repo when none is configured."""
        return str(self.example_repo_dir) if self.uses_example_repo else self.repo_url


def default_project_dir() -> Path:
    """`ELT_PROJECT_DIR`, else the checkout that holds this package, else the working directory."""
    if os.environ.get("ELT_PROJECT_DIR"):
        return Path(os.environ["ELT_PROJECT_DIR"]).resolve()
    if (PACKAGE_DIR.parent / "setup.py").is_file():
        return PACKAGE_DIR.parent
    return Path.cwd()


def _bool(name: str, raw: str) -> bool:
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise SettingsError(f"{name}: expected true or false, got {raw!r}")


def _number(name: str, raw: str, kind: type, minimum: float) -> Any:
    try:
        number = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {raw!r}") from None
    if number < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {raw!r}")
    return number


def _local_roots(raw: str) -> tuple[Path, ...]:
    """ELT_LOCAL_ROOTS: absolute host folders, separated by the path separator (:)."""
    roots = []
    for part in filter(None, (p.strip() for p in raw.split(os.pathsep))):
        if not os.path.isabs(part):
            raise SettingsError(f"ELT_LOCAL_ROOTS: {part!r} is not an absolute path")
        roots.append(Path(part))
    return tuple(roots)


def _repo_folder(raw: str) -> str:
    """ELT_PIPELINES_DIR: a folder inside the repository (a leading / is its root), never one
    that leaves it."""
    path = PurePosixPath(raw.strip().strip("/") or ".")
    if ".." in path.parts or "\\" in raw or "\0" in raw:
        raise SettingsError(
            f"ELT_PIPELINES_DIR: must be a folder inside the repository, got {raw!r}"
        )
    return "." if str(path) == "." else path.as_posix()


def _read_elt_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: invalid YAML: {exc}") from None
    try:
        return _EltYamlSchema().load(raw)
    except ValidationError as exc:
        first = next(iter(exc.normalized_messages().items()))
        raise SettingsError(f"{path}: {first[0]}: {first[1]}") from None


def load_settings(
    environ: Mapping[str, str] | None = None, project_dir: Path | None = None
) -> Settings:
    """Build settings: environment over `.env` over `elt.yaml` over the defaults."""
    from elt_repo.warehouse import parse_warehouse  # it imports this module

    project_dir = (project_dir or default_project_dir()).resolve()
    env = {**read_dotenv(project_dir / ".env"), **(os.environ if environ is None else environ)}
    conf = _read_elt_yaml(project_dir / "elt.yaml")

    def get(var: str, key: str, default: Any) -> Any:
        if env.get(var, "") != "":
            return env[var]
        return conf.get(key, default)

    def path(var: str, key: str, default: str) -> Path:
        value = Path(interpolate(str(get(var, key, default)), env, f"{var}: "))
        return value if value.is_absolute() else project_dir / value

    auto_refresh = get("ELT_AUTO_REFRESH", "auto_refresh", True)
    poll = get("ELT_POLL_INTERVAL", "poll_interval", 60)
    timeout = get("ELT_DISCOVERY_TIMEOUT", "discovery_timeout", 60.0)
    automation = get("ELT_AUTOMATION_INTERVAL", "automation_interval", 30)
    grace = get("ELT_WORKTREE_GRACE", "worktree_grace", 3600)
    first_load = get("ELT_FIRST_LOAD_TIMEOUT", "first_load_timeout", 45.0)
    idle = get("ELT_INSPECTOR_IDLE", "inspector_idle", 300.0)
    rediscover = get("ELT_REDISCOVER_INTERVAL", "rediscover_interval", 3600.0)
    stall = get("ELT_SLING_STALL_SECONDS", "sling_stall_seconds", 300.0)
    memory = get("ELT_DISCOVERY_MEMORY_MB", "discovery_memory_mb", 2048)
    cpu = get("ELT_DISCOVERY_CPU_SECONDS", "discovery_cpu_seconds", 60)
    sandbox = str(get("ELT_DISCOVERY_SANDBOX", "discovery_sandbox", "auto")).strip().lower()
    if sandbox not in SANDBOX_MODES:
        raise SettingsError(
            f"ELT_DISCOVERY_SANDBOX: expected one of {', '.join(SANDBOX_MODES)}, got {sandbox!r}"
        )
    executor = str(get("ELT_EXECUTOR", "executor", "multiprocess")).strip().lower()
    if executor not in EXECUTORS:
        raise SettingsError(
            f"ELT_EXECUTOR: expected one of {', '.join(EXECUTORS)}, got {executor!r}"
        )
    return Settings(
        project_dir=project_dir,
        repo_url=interpolate(str(get("ELT_REPO_URL", "repo_url", EXAMPLE_REPO_URL)), env),
        repo_branch=str(get("ELT_REPO_BRANCH", "repo_branch", "main")),
        pipelines_dir=_repo_folder(str(get("ELT_PIPELINES_DIR", "pipelines_dir", "pipelines"))),
        auto_refresh=auto_refresh
        if isinstance(auto_refresh, bool)
        else _bool("ELT_AUTO_REFRESH", str(auto_refresh)),
        poll_interval=_number("ELT_POLL_INTERVAL", str(poll), int, 5),
        state_dir=path("ELT_STATE_DIR", "state_dir", ".elt_state"),
        warehouse=parse_warehouse(
            str(get("ELT_WAREHOUSE", "warehouse", "data/warehouse.duckdb")), env, project_dir
        ),
        discovery_timeout=_number("ELT_DISCOVERY_TIMEOUT", str(timeout), float, 1),
        automation_interval=_number("ELT_AUTOMATION_INTERVAL", str(automation), int, 5),
        worktree_grace=_number("ELT_WORKTREE_GRACE", str(grace), int, 0),
        first_load_timeout=_number("ELT_FIRST_LOAD_TIMEOUT", str(first_load), float, 1),
        inspector_idle=_number("ELT_INSPECTOR_IDLE", str(idle), float, 0),
        rediscover_interval=_number("ELT_REDISCOVER_INTERVAL", str(rediscover), float, 0),
        sling_stall_seconds=_number("ELT_SLING_STALL_SECONDS", str(stall), float, 1),
        local_roots=_local_roots(str(get("ELT_LOCAL_ROOTS", "local_roots", ""))),
        discovery_memory_mb=_number("ELT_DISCOVERY_MEMORY_MB", str(memory), int, 0),
        discovery_cpu_seconds=_number("ELT_DISCOVERY_CPU_SECONDS", str(cpu), int, 0),
        discovery_sandbox=sandbox,
        executor=executor,
        connections=conf.get("connections", {}),
        github_token=env.get("GITHUB_TOKEN") or None,
    )
