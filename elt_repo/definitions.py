"""The code location: definitions built from the cached manifest. No network, no pipeline code."""

from __future__ import annotations

from dagster import Definitions

from elt_repo.build import build_definitions
from elt_repo.manifest import ManifestStore
from elt_repo.resources import build_resources
from elt_repo.sensors import repo_sensor
from elt_repo.settings import load_settings
from elt_repo.tool_env import configure_process

settings = load_settings()
configure_process(settings)
manifest = ManifestStore(settings.manifest_path).read()

defs = Definitions.merge(
    build_definitions(manifest, settings) if manifest else Definitions(),
    Definitions(sensors=[repo_sensor(settings, manifest)], resources=build_resources(settings)),
)
