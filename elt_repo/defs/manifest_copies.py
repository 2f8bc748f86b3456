"""Copies of the manifest in the Dagster instance, for runs that start with an empty state dir.

A run worker in a new container (K8sRunLauncher, DockerRunLauncher, ECS, a Dagster+ agent)
shares only the Dagster instance and the Git remote with the code server. The code server
keeps a copy of each manifest it builds definitions from in the instance's key-value store
(run storage), compressed, keyed by code location and commit, with a pointer to the newest.
The worker loads its definitions from the newest copy, and each step runs the copy of the
commit its run is tagged with: no clone, no discovery, no pipeline code at load.

Like the manifest, a copy holds no secret (URLs are redacted, `${VAR}` stays unresolved).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import zlib
from typing import Any

from elt_repo.manifest import Manifest
from elt_repo.redact import redact

log = logging.getLogger(__name__)

# Copies of this many commits are kept per location, the newest; older ones are blanked. A run
# tagged with an older commit fails, naming it, as it does when its worktree is gone.
KEEP_COMMITS = 20
_PREFIX = "elt_repo/manifest"
# (location, commit) -> fingerprint of the copy this process wrote or saw: publish() is free
# when nothing changed.
_known: dict[tuple[str, str], str] = {}


def location_name() -> str:
    """The code location's name (ELT_LOCATION_NAME): copies are kept per location."""
    return os.environ.get("ELT_LOCATION_NAME", "elt_repo")


def _key(location: str, name: str) -> str:
    return f"{_PREFIX}/{location}/{name}"


def encode(manifest: Manifest) -> str:
    raw = json.dumps(manifest.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    return "z1:" + base64.b64encode(zlib.compress(raw, 6)).decode()


def decode(value: str) -> Manifest:
    if not value.startswith("z1:"):
        raise ValueError("not a manifest copy of this format")
    return Manifest.from_dict(json.loads(zlib.decompress(base64.b64decode(value[3:]))))


def _storage(instance: Any) -> Any:
    return instance.run_storage


def publish(instance: Any, manifest: Manifest, location: str) -> bool:
    """Keep a copy of `manifest` in the instance and point the location's newest copy at it.

    Returns whether anything was written. One small read when this process has not seen the
    copy yet; nothing at all when it has."""
    if not manifest.commit:
        return False
    commit, fingerprint = manifest.commit, manifest.fingerprint()
    if _known.get((location, commit)) == fingerprint:
        return False
    storage = _storage(instance)
    current_key, kept_key = _key(location, "current"), _key(location, "kept")
    found = storage.get_cursor_values({current_key, kept_key})
    current = _parse(found.get(current_key)) or {}
    if current.get("commit") == commit and current.get("fingerprint") == fingerprint:
        _known[(location, commit)] = fingerprint
        return False
    kept = [c for c in (_parse(found.get(kept_key)) or []) if c != commit] + [commit]
    dropped, kept = kept[:-KEEP_COMMITS], kept[-KEEP_COMMITS:]
    pairs = {
        _key(location, commit): encode(manifest),
        **{_key(location, old): "" for old in dropped},  # the store has no delete
        kept_key: json.dumps(kept),
        # Last: a reader never finds the pointer before the copy it points at.
        current_key: json.dumps({"commit": commit, "fingerprint": fingerprint}),
    }
    for key, value in pairs.items():
        # One key a call: SQLite's store, given new and existing keys at once, updates the
        # existing ones and drops the new ones (SqlRunStorage.set_cursor_values).
        storage.set_cursor_values({key: value})
    _known[(location, commit)] = fingerprint
    log.info("kept a copy of the manifest of %s in the Dagster instance", commit)
    return True


def publish_quietly(instance: Any, manifest: Manifest, location: str) -> None:
    """publish(), where a failure (the database is down) is a warning: the location loads."""
    try:
        publish(instance, manifest, location)
    except Exception as exc:
        log.warning(
            "could not keep a copy of the manifest of %s in the Dagster instance (runs in new "
            "containers cannot start until one is kept): %s",
            manifest.commit,
            redact(str(exc)),
        )


def newest_quietly(instance: Any, location: str) -> Manifest | None:
    """read() of the newest copy, where a failure is a warning and None: the location loads."""
    try:
        return read(instance, location)
    except Exception as exc:
        log.warning(
            "could not read a manifest copy from the Dagster instance: %s", redact(str(exc))
        )
        return None


def read(instance: Any, location: str, commit: str | None = None) -> Manifest | None:
    """The copy of `commit`'s manifest (default: the newest copy), or None if none is kept."""
    storage = _storage(instance)
    if commit is None:
        current_key = _key(location, "current")
        current = _parse(storage.get_cursor_values({current_key}).get(current_key)) or {}
        commit = current.get("commit")
        if not commit:
            return None
    key = _key(location, commit)
    value = storage.get_cursor_values({key}).get(key)
    if not value:
        return None
    try:
        manifest = decode(value)
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        log.warning("ignoring an unreadable manifest copy of %s: %s", commit, exc)
        return None
    _known[(location, commit)] = manifest.fingerprint()
    return manifest


def instance_from_home() -> Any | None:
    """The instance of DAGSTER_HOME, where the process has one (a code server or run worker
    deployed with DAGSTER_HOME set); None otherwise, e.g. under `dagster dev` without it."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    from dagster import DagsterInstance

    try:
        return DagsterInstance.get()
    except Exception as exc:  # an unreachable database must not take down the location
        log.warning("cannot open the Dagster instance of DAGSTER_HOME: %s", redact(str(exc)))
        return None


def _parse(value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None
