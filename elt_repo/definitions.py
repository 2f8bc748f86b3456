"""The code location: definitions built from the cached manifest. No network, no pipeline code.

With no manifest cached in ELT_STATE_DIR (a run worker in a new container, a restarted pod),
the definitions are built from the newest copy the code server kept in the Dagster instance
(defs/manifest_copies.py): no clone, no discovery. With neither (a fresh deployment), loading
runs one refresh first, bounded by ELT_FIRST_LOAD_TIMEOUT. If that fails, the location still
loads, with no pipelines and the error shown as an asset in `elt_config_errors`; the repo
sensor keeps trying. Where DAGSTER_HOME names the instance, the manifest loaded is kept there
for such run workers (the repo sensor keeps it there too).
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from elt_repo.defs import manifest_copies
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
instance = manifest_copies.instance_from_home()
if manifest is None and instance is not None:
    manifest = manifest_copies.newest_quietly(instance, manifest_copies.location_name())
if manifest is None:
    manifest = first_refresh(settings, settings.first_load_timeout)
if instance is not None:
    manifest_copies.publish_quietly(instance, manifest, manifest_copies.location_name())

defs = Definitions.merge(
    build_definitions(manifest, settings),
    Definitions(
        sensors=[repo_sensor(settings, manifest)],
        resources=build_resources(settings),
        # None: Dagster's default, multiprocess, which a run's config may still switch.
        executor=in_process_executor if settings.executor == "in_process" else None,
    ),
)
