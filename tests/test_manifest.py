"""The manifest store writes atomically, keeps the previous good one, and round-trips specs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from elt_repo.discovery import DisabledPipeline
from elt_repo.manifest import Manifest, ManifestStore
from elt_repo.schemas import ConfigError, PipelineSpec, SlingSpec, SlingStreamSpec


def manifest(commit: str, *names: str) -> Manifest:
    return Manifest(
        commit=commit,
        branch="main",
        url="https://github.com/acme/pipelines",
        pipelines_dir="pipelines",
        discovered_at="2026-01-01T00:00:00+00:00",
        pipelines=tuple(
            PipelineSpec(
                name=n,
                tool="sling",
                folder=f"pipelines/{n}",
                sling=SlingSpec(streams=(SlingStreamSpec("main.t", "t"),)),
            )
            for n in names
        ),
        disabled=(DisabledPipeline("off", "pipelines/off"),),
        errors=(ConfigError("pipelines/x/dagster.yaml", "retries", "Not a valid integer."),),
        pinned={names[0]: "0" * 40} if names else {},
    )


def test_round_trip(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "manifest.json")
    original = manifest("a" * 40, "one", "two")
    with store.lock():
        store.write(original)
    assert store.read() == original
    assert original.commit_for(original.pipelines[0]) == "0" * 40
    assert original.commit_for(original.pipelines[1]) == "a" * 40
    assert original.commits_in_use() == {"a" * 40, "0" * 40}


def test_corrupt_manifest_falls_back_to_previous(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "manifest.json")
    with store.lock():
        store.write(manifest("a" * 40, "one"))
        store.write(manifest("b" * 40, "one", "two"))
    assert store.read().commit == "b" * 40
    store.path.write_text('{"format": 1, "commit": ')  # torn by something other than us
    assert store.read().commit == "a" * 40


def test_unknown_format_is_not_loaded(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "manifest.json")
    data = manifest("a" * 40, "one").to_dict() | {"format": 99}
    store.path.write_text(json.dumps(data))
    assert store.read() is None


def test_no_temp_files_left_and_readers_never_see_partial_writes(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "manifest.json")
    with store.lock():
        store.write(manifest("a" * 40, "p0"))
    seen: list[str | None] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            m = store.read()
            seen.append(m.commit if m else None)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(30):
        with store.lock():
            store.write(manifest(f"{i:040x}", *[f"p{j}" for j in range(20)]))
    stop.set()
    thread.join()
    assert seen and None not in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "manifest.json.lock",
        "manifest.previous.json",
    ]
