"""The manifest store writes atomically, keeps the previous good one, and round-trips specs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from elt_repo.discovery.walk import DisabledPipeline
from elt_repo.manifest import Manifest, ManifestStore
from elt_repo.schemas import ConfigError, PipelineSpec, SlingSpec, SlingStreamSpec, spec_to_dict


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


def test_a_spec_read_back_serializes_as_read_and_a_changed_copy_as_changed(
    tmp_path: Path,
) -> None:
    store = ManifestStore(tmp_path / "manifest.json")
    with store.lock():
        store.write(manifest("a" * 40, "one", "two"))
    data = json.loads(store.path.read_text())
    one = Manifest.from_dict(data).pipelines[0]
    on_disk = data["pipelines"][0]
    assert spec_to_dict(one) == on_disk == json.loads(json.dumps(dataclasses.asdict(one)))
    changed = dataclasses.replace(one, description="changed")  # not the dict read from disk
    assert spec_to_dict(changed)["description"] == "changed"
    assert spec_to_dict(one)["description"] != "changed"


def test_reads_of_an_unchanged_file_are_cached_and_a_rewrite_is_seen(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "manifest.json")
    with store.lock():
        store.write(manifest("a" * 40, "one"))
    written = store.read()
    assert store.read() is written  # same file: not parsed again (cached when written)
    store.path.write_text(store.path.read_text())  # the same text, by someone else
    first = store.read()
    assert first is not written and first == written
    assert store.read() is first
    with store.lock():
        store.write(manifest("a" * 40, "one", "two"))  # same commit, same second, new content
    second = store.read()
    assert second is not first and [p.name for p in second.pipelines] == ["one", "two"]


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


READER = """
import json, sys
from pathlib import Path
from elt_repo.manifest import Manifest
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
reads = broken = 0
while not stop.exists():
    reads += 1
    try:
        Manifest.from_dict(json.loads(path.read_text()))  # the current file itself, no fallback
    except Exception:
        broken += 1
print(reads, broken)
"""


def test_no_temp_files_left_and_readers_never_see_partial_writes(tmp_path: Path) -> None:
    """Another process (a code server loading definitions) reads while the sensor writes."""
    store = ManifestStore(tmp_path / "manifest.json")
    with store.lock():
        store.write(manifest("a" * 40, "p0"))
    stop = tmp_path.parent / f"{tmp_path.name}.stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(store.path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # let the reader start reading
    for i in range(30):
        with store.lock():
            store.write(manifest(f"{i:040x}", *[f"p{j}" for j in range(20)]))
    stop.touch()
    reads, broken = map(int, reader.communicate(timeout=30)[0].split())
    assert reads > 30 and broken == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "manifest.json.lock",
        "manifest.previous.json",
        "manifests",
    ]
    assert sorted(p.name for p in (tmp_path / "manifests").iterdir()) == [
        f"{i:040x}.json" for i in range(30)
    ] + ["a" * 40 + ".json"]


FULL_DISK_WRITER = """
import resource, signal, sys
from pathlib import Path
from elt_repo.manifest import ManifestStore
from tests.test_manifest import manifest
store = ManifestStore(Path(sys.argv[1]))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail with EFBIG, as a full disk fails a write
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    with store.lock():
        store.write(manifest("b" * 40, *[f"pipeline_{i}" for i in range(200)]))
except OSError as exc:
    print(exc.errno)
"""


def test_a_write_that_fails_never_replaces_the_good_manifest(tmp_path: Path) -> None:
    """The OS refuses the write part-way (a file-size limit, like a full disk)."""
    store = ManifestStore(tmp_path / "manifest.json")
    good = manifest("a" * 40, "one")
    with store.lock():
        store.write(good)
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(store.path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    assert out.strip() == "27"  # EFBIG: the write really failed
    assert Manifest.from_dict(json.loads(store.path.read_text())) == good  # the file itself
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
