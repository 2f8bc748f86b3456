"""The pipelines repo: a bare mirror fetched by URL, a worktree per commit, an atomic `current`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from elt_repo.git.runner import GitRunner
from elt_repo.git.urls import (
    GitSourceError,
    parse_url,
    redact_url,
    validate_ref,
    validate_url,
)

if sys.platform != "win32":
    import fcntl

__all__ = [
    "Checkout",
    "GitSource",
    "GitSourceError",
    "fetch_progress",
    "redact_url",
    "validate_ref",
    "validate_url",
]

logger = logging.getLogger(__name__)

_SHA = re.compile(r"[0-9a-f]{40}")
_HEX = re.compile(r"[0-9a-f]{7,40}")
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# Set by fetch_progress() for syncs whose GitSource someone else builds (refresh() for refresh.py).
_progress: ContextVar[Callable[[str], None] | None] = ContextVar("elt_fetch_progress", default=None)


@contextlib.contextmanager
def fetch_progress(callback: Callable[[str], None] | None) -> Iterator[None]:
    """Within the block, every sync() in this context streams git's fetch progress to `callback`."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


@dataclass(frozen=True)
class Checkout:
    """One commit of the repo, checked out."""

    commit: str
    ref: str
    path: Path


class GitSource:
    """A remote Git repo mirrored under `state_dir`, with one worktree per synced commit."""

    def __init__(
        self,
        url: str,
        ref: str,
        state_dir: Path,
        token: str | None = None,
        attempts: int = 3,
        keep_worktrees: int = 5,
        timeout: float = 120.0,
        grace: float = 3600.0,
    ) -> None:
        validate_url(url)
        validate_ref(ref)
        self.ref = ref
        self.state_dir = Path(state_dir).absolute()
        self.keep_worktrees = max(0, keep_worktrees)
        self.grace = max(0.0, grace)
        self._git = GitRunner(parse_url(url, token), ref, attempts, timeout)
        self.url = self._git.remote.display  # redacted: safe to log and show

    def set_deadline(self, deadline: float | None) -> None:
        """Bound every network command, retries included, by a time.monotonic() deadline."""
        self._git.deadline = deadline

    def remote_commit(self) -> str | None:
        """Cheap 'anything new?': ls-remote the ref; None when the ref is a raw sha."""
        names = self._candidates()
        patterns = [
            *names,
            *(n + "^{}" for n in names if n.startswith("refs/tags/")),
        ]
        out = self._git.network("ls-remote", "--", self._git.remote.git_url, *patterns)
        advertised = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            advertised[name.strip()] = sha.strip()
        for name in names:
            # A peeled entry names the commit an annotated tag points at.
            found = advertised.get(name + "^{}") or advertised.get(name)
            if found:
                return found
        if _HEX.fullmatch(self.ref):
            return None
        if not self._git.network(
            "ls-remote", "--heads", "--tags", "--", self._git.remote.git_url
        ).strip():
            raise self._git.empty()
        raise self._git.ref_not_found()

    def sync(
        self, keep: Iterable[str] = (), progress: Callable[[str], None] | None = None
    ) -> Checkout:
        """Fetch into a bare mirror, resolve ref, make the per-commit worktree, swap `current`.

        Worktrees of the commits in `keep` (those the manifest still runs, and those queued or
        running runs are pinned to) are never pruned, nor the newest `keep_worktrees`, nor any
        used within the last `grace` seconds. `progress` (default: the one fetch_progress() set)
        gets each line of the fetch's progress, scrubbed of credentials.
        """
        progress = progress or _progress.get()
        self._git.check_local()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            mirror = self._mirror()
            self._clear_interrupted(mirror)  # before the fetch, which a half-added worktree fails
            refspecs = list(_REFSPECS)
            if self.ref.startswith("refs/") and not self.ref.startswith(
                ("refs/heads/", "refs/tags/")
            ):
                refspecs.append(f"+{self.ref}:{self.ref}")  # e.g. refs/pull/7/head
            logger.info("Fetching %s into %s", self.url, mirror)
            self._git.network(
                "fetch",
                "--prune",
                "--force",
                "--no-write-fetch-head",
                *(["--progress"] if progress else []),
                "--",
                self._git.remote.git_url,
                *refspecs,
                cwd=mirror,
                progress=progress,
            )
            commit = self._resolve(mirror)
            path = self._checkout(mirror, commit)
            self._point_current(commit)
            self._prune(mirror, keep={commit, *keep})
        logger.info("%s at %s is commit %s", self.url, self.ref, commit)
        return Checkout(commit=commit, ref=self.ref, path=path)

    def commit_worktree(self, commit: str) -> Path:
        """The worktree of `commit`, fetched by itself when this state dir does not have it.

        For a run that starts in a new container with an empty state dir: it fetches only that
        commit, by sha (shallow, into a new mirror), with the token handling and URL checks of
        sync(), and checks it out. It never fetches the branch, and never returns any other
        commit: one the remote no longer has (a force-push, then gc) is a GitSourceError
        naming the commit. On the code server's host the worktree usually exists already.
        """
        path = self.worktree(commit)  # a full sha, or ValueError
        if path.is_dir():
            return path
        self._git.check_local()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if path.is_dir():  # another step of the run made it while we waited
                return path
            mirror = self._mirror()
            self._clear_interrupted(mirror)
            if self._rev_parse(mirror, commit) is None:
                fresh = not self._git.local("for-each-ref", "--count=1", cwd=mirror).strip()
                try:
                    self._git.network(
                        "fetch",
                        "--no-write-fetch-head",
                        *(["--depth=1"] if fresh else []),  # a full mirror stays unshallow
                        "--",
                        self._git.remote.git_url,
                        f"{commit}:refs/pinned/{commit}",
                        cwd=mirror,
                    )
                except GitSourceError as exc:
                    if exc.field != "ELT_REPO_BRANCH":  # auth, reach, disk: as sync() says
                        raise GitSourceError(
                            exc.field, f"cannot fetch commit {commit}: {exc.message}"
                        ) from None
                    raise GitSourceError(
                        "elt_repo/commit",
                        f"commit {commit} is not in {self.url} (force-pushed away, or never "
                        "pushed); no other commit is run in its place",
                    ) from None
                if self._rev_parse(mirror, commit) is None:
                    raise GitSourceError(
                        "elt_repo/commit", f"{self.url} sent no commit {commit} when asked for it"
                    )
            return self._checkout(mirror, commit)

    def current(self) -> Checkout | None:
        """The checkout `current` points at, or None."""
        try:
            commit = Path(os.readlink(self.state_dir / "current")).name
        except OSError:
            return None
        if not _SHA.fullmatch(commit) or not self.worktree(commit).is_dir():
            return None
        return Checkout(commit=commit, ref=self.ref, path=self.worktree(commit))

    def worktree(self, commit: str) -> Path:
        """Path of the worktree for a full commit sha (it may not exist)."""
        if not _SHA.fullmatch(commit):
            raise ValueError(f"not a full commit sha: {commit!r}")
        return self.state_dir / "worktrees" / commit

    # -- resolving and checking out ------------------------------------------------------

    def _candidates(self) -> list[str]:
        if self.ref.startswith("refs/"):
            return [self.ref]
        return [f"refs/heads/{self.ref}", f"refs/tags/{self.ref}"]

    def _resolve(self, mirror: Path) -> str:
        names = self._candidates() + ([self.ref] if _HEX.fullmatch(self.ref) else [])
        for name in names:
            if sha := self._rev_parse(mirror, name):
                return sha
        if not self._git.local(
            "for-each-ref", "--count=1", "refs/heads", "refs/tags", cwd=mirror
        ).strip():
            raise self._git.empty()
        if _SHA.fullmatch(self.ref):
            # A commit no branch or tag reaches (a PR head, a rewritten branch): ask for it by id.
            pinned = f"{self.ref}:refs/pinned/{self.ref}"
            self._git.network(
                "fetch",
                "--no-write-fetch-head",
                "--",
                self._git.remote.git_url,
                pinned,
                cwd=mirror,
            )
            if sha := self._rev_parse(mirror, self.ref):
                return sha
        raise self._git.ref_not_found()

    def _rev_parse(self, mirror: Path, name: str) -> str | None:
        status, out, _ = self._git.run(
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            name + "^{commit}",
            cwd=mirror,
        )
        return out.strip() if status == 0 and _SHA.fullmatch(out.strip()) else None

    def _mirror(self) -> Path:
        mirror = self.state_dir / "mirror.git"
        if not (mirror / "HEAD").is_file():
            self._git.local("init", "--bare", "--quiet", str(mirror))
        return mirror

    def _checkout(self, mirror: Path, commit: str) -> Path:
        path = self.worktree(commit)
        if path.is_dir():
            os.utime(path)  # reused: counts as recent when pruning
            return path
        # Check out beside the final path and move it in, so a worktree that exists is complete.
        staging = path.with_name(f"tmp-{commit}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._git.local("worktree", "prune", cwd=mirror)
        self._git.local("worktree", "add", "--detach", "--quiet", str(staging), commit, cwd=mirror)
        self._git.local("worktree", "move", str(staging), str(path), cwd=mirror)
        return path

    def _clear_interrupted(self, mirror: Path) -> None:
        """Undo checkouts a killed sync left half done (under _lock(): none is running now).

        Their staging folders, of any commit, and git's records of them. `git worktree add`
        locks its worktree until it is done, so no `worktree prune` would drop the record; and
        a record whose HEAD it had not yet written makes every fetch fail ("bad object").
        The records' layout is documented in gitrepository-layout(5).
        """
        staging = list((self.state_dir / "worktrees").glob("tmp-*"))
        for path in staging:
            shutil.rmtree(path)
        unlocked = False
        for locked in (mirror / "worktrees").glob("*/locked"):
            try:
                gone = not Path(locked.with_name("gitdir").read_text().strip()).exists()
            except FileNotFoundError:  # killed before git wrote where the worktree is
                gone = True
            if gone:
                locked.unlink(missing_ok=True)
                unlocked = True
        if staging or unlocked:
            self._git.local("worktree", "prune", cwd=mirror)

    def _point_current(self, commit: str) -> None:
        """Repoint `current` atomically (under _lock(): a `.current-*` left is a killed sync's)."""
        for left in self.state_dir.glob(".current-*"):
            with contextlib.suppress(FileNotFoundError):
                left.unlink()
        tmp = self.state_dir / f".current-{os.getpid()}"
        os.symlink(os.path.join("worktrees", commit), tmp)
        os.replace(tmp, self.state_dir / "current")

    def _prune(self, mirror: Path, keep: set[str]) -> None:
        trees = [
            p
            for p in (self.state_dir / "worktrees").iterdir()
            if _SHA.fullmatch(p.name) and p.is_dir()
        ]
        trees.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        cutoff = time.time() - self.grace
        stale = [
            p
            for p in trees[self.keep_worktrees :]
            if p.name not in keep and p.stat().st_mtime < cutoff
        ]
        for path in stale:
            logger.info("Removing old worktree %s", path)
            shutil.rmtree(path, ignore_errors=True)
        if stale:
            self._git.local("worktree", "prune", cwd=mirror)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise syncs of one state dir across processes (the sensor and refresh.py)."""
        if sys.platform == "win32":
            yield
            return
        with open(self.state_dir / "sync.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
