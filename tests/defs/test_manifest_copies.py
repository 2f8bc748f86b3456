"""Copies of the manifest in the Dagster instance: what a run in a new container builds from."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from elt_repo.defs import manifest_copies
from elt_repo.manifest import Manifest
from elt_repo.schemas import ConfigError


def manifest(commit: str, errors: int = 0) -> Manifest:
    return Manifest(
        commit=commit,
        branch="main",
        url="https://example.com/pipes",
        pipelines_dir="pipelines",
        discovered_at="2026-12-02T00:00:00+00:00",
        errors=tuple(
            ConfigError(f"pipelines/p{i}/dagster.yaml", "schedule", "bad") for i in range(errors)
        ),
    )


@pytest.fixture(params=["sqlite", "postgres"])
def storage_instance(request, tmp_path: Path) -> Iterator[DagsterInstance]:
    """An instance of each kind a deployment uses: SQLite (dagster dev) and Postgres."""
    home = tmp_path / "home"
    home.mkdir()
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").new_database()
        (home / "dagster.yaml").write_text(
            f"storage:\n  postgres:\n    postgres_url: {url}\ntelemetry:\n  enabled: false\n"
        )
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


@pytest.fixture(autouse=True)
def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: knowing of no copy."""
    monkeypatch.setattr(manifest_copies, "_known", {})


def test_a_copy_reads_back_by_commit_and_as_the_newest(storage_instance: DagsterInstance) -> None:
    first, second = manifest("a" * 40, errors=1), manifest("b" * 40, errors=2)
    assert manifest_copies.publish(storage_instance, first, "loc")
    assert manifest_copies.publish(storage_instance, second, "loc")
    assert manifest_copies.read(storage_instance, "loc", "a" * 40) == first
    assert manifest_copies.read(storage_instance, "loc").fingerprint() == second.fingerprint()
    assert manifest_copies.read(storage_instance, "other_location") is None
    assert manifest_copies.read(storage_instance, "loc", "c" * 40) is None


def test_publishing_what_is_kept_writes_nothing(
    storage_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = manifest("a" * 40)
    assert manifest_copies.publish(storage_instance, copy, "loc")
    writes: list[dict] = []
    real = storage_instance.run_storage.set_cursor_values
    monkeypatch.setattr(
        storage_instance.run_storage,
        "set_cursor_values",
        lambda pairs: (writes.append(pairs), real(pairs)),
    )
    assert not manifest_copies.publish(storage_instance, copy, "loc")  # this process knows it
    monkeypatch.setattr(manifest_copies, "_known", {})
    assert not manifest_copies.publish(storage_instance, copy, "loc")  # another one reads it
    assert writes == []
    # A new manifest of the same commit (a source that grew a table) replaces the copy.
    changed = manifest("a" * 40, errors=1)
    assert manifest_copies.publish(storage_instance, changed, "loc")
    assert manifest_copies.read(storage_instance, "loc", "a" * 40) == changed


def test_only_the_newest_commits_are_kept(storage_instance: DagsterInstance) -> None:
    commits = [f"{i:040x}" for i in range(manifest_copies.KEEP_COMMITS + 2)]
    for commit in commits:
        manifest_copies.publish(storage_instance, manifest(commit), "loc")
    assert manifest_copies.read(storage_instance, "loc", commits[0]) is None
    assert manifest_copies.read(storage_instance, "loc", commits[1]) is None
    assert manifest_copies.read(storage_instance, "loc", commits[2]) is not None
    assert manifest_copies.read(storage_instance, "loc").commit == commits[-1]


def test_an_unreadable_copy_is_no_copy(
    storage_instance: DagsterInstance, caplog: pytest.LogCaptureFixture
) -> None:
    storage_instance.run_storage.set_cursor_values({"elt_repo/manifest/loc/" + "d" * 40: "junk"})
    with caplog.at_level(logging.WARNING):
        assert manifest_copies.read(storage_instance, "loc", "d" * 40) is None
    assert "unreadable manifest copy" in caplog.text
