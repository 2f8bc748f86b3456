"""A run launcher that starts each run the way K8sRunLauncher starts a pod, for the tests.

`launch_run` only records the run's `dagster api execute_run` arguments in a spool folder, as
a launcher hands a pod spec to Kubernetes; `execute_in_new_container` then runs that command in
a new process with a new, empty ELT_STATE_DIR and HOME and only the environment given, as a
pod starts from the image: it shares the Dagster instance (DAGSTER_HOME) and the Git remote
with the code server, and nothing else. The delay between the two is the test's to choose
(a pod waiting to be scheduled while new commits arrive).

Configured in an instance's dagster.yaml:

    run_launcher:
      module: tests.fresh_container_launcher
      class: SpoolRunLauncher
      config: {spool_dir: /path/to/spool}
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import Field, StringSource
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_shared.serdes import deserialize_value, serialize_value


class SpoolRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, spool_dir: str, inst_data: ConfigurableClassData | None = None):
        self.spool_dir = Path(spool_dir)
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"spool_dir": Field(StringSource)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> SpoolRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        assert run.job_code_origin is not None, "a run launched from a code location has one"
        # As K8sRunLauncher: no instance ref; the pod reads its instance from DAGSTER_HOME.
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=None)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        (self.spool_dir / f"{run.run_id}.json").write_text(serialize_value(args))
        self._instance.report_engine_event(
            "Waiting for a new container to execute the run", run, cls=self.__class__
        )

    def terminate(self, run_id: str) -> bool:
        return False


def execute_in_new_container(
    spool_dir: Path, run_id: str, root: Path, env: Mapping[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the spooled `dagster api execute_run` of `run_id` as a new pod would: in `root`
    (new and empty: its state dir, its HOME), with only `env` (plus those two) as environment."""
    spooled = spool_dir / f"{run_id}.json"
    assert spooled.exists(), f"run {run_id} was never launched (spool: {list(spool_dir.iterdir())})"
    args = deserialize_value(spooled.read_text(), ExecuteRunArgs)
    root.mkdir(parents=True)
    (root / "home").mkdir()
    full_env = {
        **env,
        "HOME": str(root / "home"),
        "ELT_STATE_DIR": str(root / "state"),
    }
    return subprocess.run(
        list(args.get_command_args()),
        cwd=root,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
