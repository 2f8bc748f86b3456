"""Walk a pipelines folder and turn every pipeline in it into a PipelineSpec or a ConfigError."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from elt_repo.discovery.dlt_inspect import InspectError
from elt_repo.discovery.inspector_pool import (
    InspectorPool,
    inspect_run,
    list_resources,
    shared_pool,
)
from elt_repo.discovery.layout import (
    CONFIG_FILE,
    RUN_FILE,
    default_name,
    defines_run,
    find_pipeline_folders,
    infer_tool,
)
from elt_repo.discovery.pipeline_files import content_hash, resolve_args
from elt_repo.discovery.pipeline_imports import shared_code_key
from elt_repo.discovery.safe_files import confined, read_yaml
from elt_repo.discovery.sling_streams import resolve_streams
from elt_repo.discovery.traits import CaseIndex, has_wildcards, source_driven
from elt_repo.redact import redact
from elt_repo.schemas import (
    ConfigError,
    ConfigException,
    DltSpec,
    PipelineSpec,
    SlingStreamSpec,
    config_error,
    load_pipeline_config,
    spec_from_config,
)
from elt_repo.schemas.fields import NAME
from elt_repo.settings import OwnSecretError, SettingsError

# Worker processes that list dlt sources: each imports dlt once (about a second here).
INSPECT_WORKERS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class DisabledPipeline:
    name: str
    path: str


@dataclass(frozen=True)
class FolderRecord:
    """A pipeline folder's Git tree hash, and the errors loading it gave (none if it loaded).

    `source_driven`: its tables come from the source (a Sling wildcard, a dlt source called at
    discovery), so it is resolved again after ELT_REDISCOVER_INTERVAL even with no new commit;
    `resolved_at` (epoch seconds) is when it was last resolved.
    """

    tree: str
    errors: tuple[ConfigError, ...] = ()
    source_driven: bool = False
    resolved_at: float = 0.0


# Per folder, what a discovery may reuse while the tree hash is unchanged: the folder's record
# in the previous manifest, and the spec or the errors it gave then.
Prior = Mapping[str, tuple[FolderRecord, "PipelineSpec | tuple[ConfigError, ...]"]]


@dataclass(frozen=True)
class Discovery:
    """What one walk of the pipelines folder found."""

    pipelines: tuple[PipelineSpec, ...] = ()
    disabled: tuple[DisabledPipeline, ...] = ()
    errors: tuple[ConfigError, ...] = field(default=())
    # Folder (relative to the repo root) -> tree hash and load errors, when trees were given.
    folders: Mapping[str, FolderRecord] = field(default_factory=dict)
    reused: int = 0  # folders taken from the previous manifest instead of being parsed again


def _sling_streams(
    folder: Path,
    rel_folder: str,
    replication: str,
    connections: Mapping[str, Any],
    shared: Mapping[str, Mapping[str, Any]] | None,
    env: Mapping[str, str],
    timeout: float,
    local_roots: tuple[Path, ...] = (),
) -> tuple[tuple[SlingStreamSpec, ...], tuple[str, str], bool]:
    rel = f"{rel_folder}/{replication}"
    path = folder / replication
    if not os.path.lexists(path):
        raise config_error(rel, "sling.replication", "replication file not found")
    config = read_yaml(path, folder, rel, "sling.replication")
    if not isinstance(config, Mapping) or not isinstance(config.get("streams"), Mapping):
        raise config_error(rel, "streams", "a replication needs a 'streams' mapping")
    for key in ("source", "target"):
        if not config.get(key):
            raise config_error(rel, key, "required")
    streams = resolve_streams(config, folder, rel, connections, env, timeout, shared, local_roots)
    return streams, (str(config["source"]), str(config["target"])), has_wildcards(config)


def _hints(folder: Path) -> tuple[str, str | None]:
    """A broken folder's pipeline name and group, as far as its dagster.yaml still says."""
    name, group = default_name(folder), None
    try:
        raw = read_yaml(folder / CONFIG_FILE, folder, "", "")
    except ConfigException:
        return name, group
    if isinstance(raw, Mapping):
        if isinstance(raw.get("name"), str) and NAME.match(raw["name"]):
            name = raw["name"]
        candidate = raw.get("group") or raw.get("group_name")
        if isinstance(candidate, str) and NAME.match(candidate):
            group = candidate
    return name, group


class Discoverer:
    """Discovery of one checkout; `env` is what dlt sources see when their resources are listed.

    With `trees` (folder -> Git tree hash at this commit) and `prior` (what the previous manifest
    found per folder: its tree hash, and its spec or its errors), a folder whose tree hash has
    not changed is taken from `prior` instead of being parsed, and its dlt source not imported.
    """

    def __init__(
        self,
        root: Path,
        pipelines_dir: str,
        env: Mapping[str, str],
        timeout: float,
        trees: Mapping[str, str] | None = None,
        prior: Prior | None = None,
        pool: InspectorPool | None = None,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        local_roots: tuple[Path, ...] = (),
    ):
        self.root = root
        self.pipelines_dir = pipelines_dir
        self.env = env
        self.timeout = timeout
        self.trees = trees or {}
        self.prior = prior or {}
        # dlt sources are listed by a few long-lived workers: dlt is imported once per worker.
        self.pool = pool or shared_pool(env, timeout, INSPECT_WORKERS)
        # Sling connections every pipeline may name: the warehouse and the settings' ones.
        self.connections = connections
        self.local_roots = local_roots  # host folders file streams may read (ELT_LOCAL_ROOTS)
        self.wildcards: dict[str, bool] = {}  # folder -> its replication has wildcard streams
        self.shared = ""  # the hash of the repo's shared code (pipeline_imports.shared_code_key)

    def _load(self, folder: Path) -> PipelineSpec:
        rel_folder = folder.relative_to(self.root).as_posix()
        rel = f"{rel_folder}/{CONFIG_FILE}"
        # No dagster.yaml means the defaults; one that does not parse is an error, never defaults.
        has_config = os.path.lexists(folder / CONFIG_FILE)  # a dangling symlink is an error
        raw = read_yaml(folder / CONFIG_FILE, folder, rel, "<root>") if has_config else {}
        config = load_pipeline_config(raw, rel)
        tool = infer_tool(config, folder, rel)
        common = {
            "name": default_name(folder),
            "tool": tool,
            "folder": rel_folder,
            "code_version": content_hash(folder),
        }
        if not config["enabled"]:
            return spec_from_config(config, **common)
        if tool == "sling":
            sling = config.get("sling") or {}
            streams, endpoints, wildcards = _sling_streams(
                folder,
                rel_folder,
                sling.get("replication", "replication.yaml"),
                sling.get("connections") or {},
                self.connections,
                self.env,
                self.timeout,
                self.local_roots,
            )
            self.wildcards[rel_folder] = wildcards  # one thread per folder: no lock needed
            return spec_from_config(
                config, **common, sling_streams=streams, sling_endpoints=endpoints
            )
        dlt = config.get("dlt")
        if dlt is None:
            if not defines_run(folder / RUN_FILE):
                raise config_error(
                    rel,
                    "dlt",
                    f"a dlt pipeline needs a dlt: section with source, or a {RUN_FILE} "
                    "with a run() function",
                )
            return self._load_run_style(folder, rel_folder, config, common)
        source_file = dlt["source"].partition(":")[0]
        if not os.path.lexists(folder / source_file):
            raise config_error(rel, "dlt.source", f"file not found: {dlt['source']}")
        confined(folder / source_file, folder, rel, "dlt.source")  # never code from elsewhere
        if not (folder / source_file).is_file():
            raise config_error(rel, "dlt.source", f"not a file: {dlt['source']}")
        try:
            args = resolve_args(dlt["args"], folder, self.env)
            resources = list_resources(
                folder,
                dlt["source"],
                args,
                dlt["partition_args"],
                self.timeout,
                self.env,
                self.pool,
            )
        except InspectError as exc:
            raise config_error(rel, exc.field or "dlt.source", str(exc), exc.retry) from None
        except SettingsError as exc:  # a ${VAR} that is not set: the environment's to fix
            own = isinstance(exc, OwnSecretError)  # unless it is ours: then the config's
            raise config_error(rel, "dlt.source", str(exc), retry=not own) from None
        return spec_from_config(config, **common, dlt_resources=resources)

    def _load_run_style(
        self, folder: Path, rel_folder: str, config: dict[str, Any], common: dict[str, Any]
    ) -> PipelineSpec:
        """A reference-project pipeline: `run(partition_key=None)` builds and runs dlt itself."""
        try:
            accepts_key = inspect_run(folder, RUN_FILE, self.timeout, self.env, self.pool)
        except InspectError as exc:
            raise config_error(f"{rel_folder}/{RUN_FILE}", "run", str(exc), exc.retry) from None
        spec = spec_from_config(config, **common)
        run = DltSpec(source=f"{RUN_FILE}:run", style="run", accepts_partition_key=accepts_key)
        return replace(spec, dlt=run)

    def _reusable(self, folder: Path) -> PipelineSpec | list[ConfigError] | None:
        rel = folder.relative_to(self.root).as_posix()
        record, result = self.prior.get(rel, (None, ()))
        if record is None or not record.tree or record.tree != self._key(rel, result):
            return None
        return result if isinstance(result, PipelineSpec) else list(result)

    def _key(self, rel: str, result: PipelineSpec | Any) -> str:
        """What must be unchanged for a folder's last result to stand: its tree, and for all
        but a Sling pipeline, the repo's shared code that its Python may import."""
        tree = self.trees.get(rel, "")
        sling = isinstance(result, PipelineSpec) and result.tool == "sling"
        return tree if sling or not tree else f"{tree}+{self.shared}"

    def _try_load(self, folder: Path) -> PipelineSpec | list[ConfigError]:
        try:
            return self._load(folder)
        except ConfigException as exc:
            name, group = _hints(folder)
            # Pipeline code may put a credential it was given into its exception.
            return [
                replace(
                    e,
                    message=redact(redact(e.message, self.env)),  # and our own secrets
                    pipeline=e.pipeline or name,
                    group=e.group or group,
                )
                for e in exc.errors
            ]

    def run(self) -> Discovery:
        """Discover every pipeline; one broken pipeline only adds errors."""
        base = self.root / self.pipelines_dir
        if not base.is_dir():
            message = f"folder {self.pipelines_dir!r} not found in the repository"
            return Discovery(
                errors=(ConfigError(self.pipelines_dir, "ELT_PIPELINES_DIR", message),)
            )
        folders = list(find_pipeline_folders(base))
        rels = [f.relative_to(self.root).as_posix() for f in folders]
        self.shared = shared_code_key(self.trees, self.pipelines_dir, rels)
        reused = [self._reusable(f) for f in folders]
        todo = [f for f, r in zip(folders, reused, strict=True) if r is None]
        with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as threads:
            fresh = iter(list(threads.map(self._try_load, todo)))
        loaded = [r if r is not None else next(fresh) for r in reused]
        records, now = {}, time.time()
        for folder, result, kept in zip(folders, loaded, reused, strict=True):
            rel = folder.relative_to(self.root).as_posix()
            if rel not in self.trees:
                continue
            if kept is not None:
                records[rel] = self.prior[rel][0]
                continue
            errors = tuple(result) if isinstance(result, list) else ()
            wildcards = self.wildcards.get(rel, False)
            driven = isinstance(result, PipelineSpec) and source_driven(result, wildcards)
            records[rel] = FolderRecord(self._key(rel, result), errors, driven, now)
        pipelines: dict[str, PipelineSpec] = {}
        disabled: list[DisabledPipeline] = []
        errors: list[ConfigError] = []
        # Folders unchanged since the last manifest claim their names first: a new folder that
        # takes an existing pipeline's name is the one in error, never the pipeline in use.
        order = {f: i for i, f in enumerate(folders)}
        claims = sorted(zip(folders, loaded, reused, strict=True), key=lambda t: t[2] is None)
        cases = CaseIndex()
        for _, result, _ in claims:
            if isinstance(result, list):
                errors.extend(result)
            elif result.name in pipelines:
                first = pipelines[result.name].folder
                errors.append(
                    ConfigError(
                        f"{result.folder}/{CONFIG_FILE}",
                        "name",
                        f"duplicate pipeline name {result.name!r}, already used by {first}",
                    )
                )
            elif clash := cases.clash(result):
                errors.append(clash)
            elif not result.enabled:
                disabled.append(DisabledPipeline(result.name, result.folder))
                pipelines[result.name] = result
            else:
                pipelines[result.name] = result
        enabled = tuple(
            sorted(
                (p for p in pipelines.values() if p.enabled),
                key=lambda p: order[self.root / p.folder],
            )
        )
        return Discovery(
            pipelines=enabled,
            disabled=tuple(sorted(disabled, key=lambda d: order[self.root / d.path])),
            errors=tuple(errors),
            folders=records,
            reused=sum(r is not None for r in reused),
        )


def discover(
    root: Path,
    pipelines_dir: str,
    env: Mapping[str, str],
    timeout: float = 60.0,
    trees: Mapping[str, str] | None = None,
    prior: Prior | None = None,
    pool: InspectorPool | None = None,
    connections: Mapping[str, Mapping[str, Any]] | None = None,
    local_roots: tuple[Path, ...] = (),
) -> Discovery:
    """Discover the pipelines under `root/pipelines_dir`, reusing unchanged folders of `prior`.

    dlt sources are listed by `pool`'s workers; by default this process's shared pool for `env`.
    `connections`: the Sling connections of the settings (`connection_configs`), the warehouse
    included, for resolving wildcard streams. `local_roots`: host folders that local file
    streams may read besides their own folder.
    """
    return Discoverer(
        root, pipelines_dir, env, timeout, trees, prior, pool, connections, local_roots
    ).run()
