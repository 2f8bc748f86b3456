"""The code location: definitions built from the cached manifest. No network, no pipeline code.

With no manifest cached (a fresh deployment), loading runs one refresh first, bounded by
ELT_FIRST_LOAD_TIMEOUT. If that fails, the location still loads, with no pipelines and the
error shown as an asset in `elt_config_errors`; the repo sensor keeps trying.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.defs.sensors import repo_sensor
from elt_repo.manifest import ManifestStore
from elt_repo.refresh import first_refresh
from elt_repo.settings import load_settings
from elt_repo.tool_env import configure_process

settings = load_settings()
configure_process(settings)
manifest = ManifestStore(settings.manifest_path).read()
if manifest is None:
    manifest = first_refresh(settings, settings.first_load_timeout)

defs = Definitions.merge(
    build_definitions(manifest, settings),
    Definitions(
        sensors=[repo_sensor(settings, manifest)],
        resources=build_resources(settings),
        # None: Dagster's default, multiprocess, which a run's config may still switch.
        executor=in_process_executor if settings.executor == "in_process" else None,
    ),
)
