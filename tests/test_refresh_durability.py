"""scripts/refresh.py against a hostile machine: killed at any moment, run concurrently, out of disk.

Each test runs the real script as a cron job would (a subprocess on a file:// repo) and checks the
state dir from outside: `manifest.json` is always a whole manifest, old or new, and the worktree
it names (and the one `repo/current` points at) is a complete checkout of its commit; nothing
that would pile up is left behind; and the next plain refresh brings everything up to date.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR, PipelinesRepo

pytestmark = pytest.mark.slow

SCRIPT = PROJECT_DIR / "scripts" / "refresh.py"
SHA = re.compile(r"[0-9a-f]{40}")
DLT_YAML = "tool: dlt\ndlt: {source: 'pipeline.py:events'}\n"


# -- running refresh.py ------------------------------------------------------------------------


def _env(tmp_path: Path, url: str, state: Path) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ELT_", "GITHUB_TOKEN", "DAGSTER_HOME"))
    }
    return base | {
        "ELT_REPO_URL": url,
        "ELT_STATE_DIR": str(state),
        "ELT_PROJECT_DIR": str(tmp_path),
        "ELT_WORKTREE_GRACE": "0",  # old worktrees are pruned during the test: kills land there too
    }


def _command(*args: str) -> list[str]:
    # -q: git runs in the script's process group, so killing the group kills git too.
    return [sys.executable, str(SCRIPT), "-q", *args]


def _refresh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), capture_output=True, text=True, env=env, cwd=PROJECT_DIR, timeout=120
    )


# -- the pipelines repo ------------------------------------------------------------------------


def _sling(repo: PipelinesRepo, name: str, rows: str = "id\n1\n") -> None:
    repo.write(f"pipelines/{name}/dagster.yaml", "tool: sling\n")
    repo.write(
        f"pipelines/{name}/replication.yaml",
        f"source: LOCAL\ntarget: WAREHOUSE\nstreams:\n  file://./{name}.csv: {{object: s.{name}}}\n",
    )
    repo.write(f"pipelines/{name}/{name}.csv", rows)


def _dlt(repo: PipelinesRepo, tables: int) -> None:
    repo.write("pipelines/events/dagster.yaml", DLT_YAML)
    repo.write(
        "pipelines/events/pipeline.py",
        "import dlt\n\n\n"
        "@dlt.source\n"
        "def events():\n"
        f"    return [dlt.resource([{{'id': 1}}], name=f'events_{{i}}') for i in range({tables})]\n",
    )


class History:
    """The origin repo and, per commit pushed, its files and pipeline names as committed."""

    def __init__(self, repo: PipelinesRepo, rng: random.Random, static_files: int = 300):
        self.repo, self.rng = repo, rng
        self.files: dict[str, dict[str, bytes]] = {}
        self.pipelines: dict[str, set[str]] = {}
        self.commits: list[str] = []
        _sling(repo, "orders")
        _sling(repo, "customers")
        _dlt(repo, 2)
        for i in range(static_files):  # many files: checking out, pruning take a while
            repo.write(f"data/static/{i:03d}.txt", f"{i}\n")
        self.commit("three pipelines")

    def commit(self, message: str) -> str:
        sha = self.repo.commit(message)
        root = self.repo.path
        self.files[sha] = {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts
        }
        self.pipelines[sha] = {p.parent.name for p in root.glob("pipelines/*/dagster.yaml")}
        self.commits.append(sha)
        return sha

    def push(self) -> str:
        """A new commit: some rows, a data file that git must fetch and check out, and now and
        then a pipeline added or removed, or the dlt pipeline changed (so it is discovered)."""
        n = len(self.commits)
        rng = self.rng
        _sling(self.repo, "orders", "id\n" + "".join(f"{i}\n" for i in range(n + 1)))
        self.repo.write("data/blob.bin", rng.randbytes(rng.randrange(64, 512) * 1024))
        extras = sorted(p.name for p in self.repo.path.glob("pipelines/extra_*"))
        roll = rng.random()
        if roll < 0.3:
            _sling(self.repo, f"extra_{n}")
        elif roll < 0.5 and extras:
            self.repo.remove(f"pipelines/{rng.choice(extras)}")
        elif roll < 0.8:
            _dlt(self.repo, rng.randrange(1, 6))
        return self.commit(f"commit {n}")


# -- what must hold in the state dir -------------------------------------------------------------


def _leftovers(state: Path, git_admin: bool = True) -> list[str]:
    """Temp files and half-made folders that nothing would ever remove: they would pile up.

    `git_admin`: also git's records of worktrees that are gone (a refresh killed while pruning
    leaves them; the next checkout of a new commit runs `git worktree prune`).
    """
    found: list[Path] = []
    for folder in (state, state / "manifests"):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
    repo = state / "repo"
    if repo.is_dir():
        found += [p for p in repo.iterdir() if p.name.startswith(".")]
    worktrees = repo / "worktrees"
    if worktrees.is_dir():
        found += [p for p in worktrees.iterdir() if not SHA.fullmatch(p.name)]
    mirror = repo / "mirror.git"
    if mirror.is_dir():
        found += list(mirror.rglob("*.lock"))  # a stale git lock blocks the next fetch
        meta = mirror / "worktrees"
        if git_admin and meta.is_dir():
            found += [p for p in meta.iterdir() if not _gitdir_exists(p)]
    return sorted(str(p.relative_to(state)) for p in found)


def _gitdir_exists(meta: Path) -> bool:
    """Whether the worktree that git's admin folder `meta` records is still there."""
    try:
        return Path((meta / "gitdir").read_text().strip()).exists()
    except OSError:
        return False


def _worktree_problem(history: History, path: Path, commit: str) -> str | None:
    """Why `path` is not a complete, usable checkout of `commit`; None if it is."""
    if not path.is_dir():
        return f"{path.name}: no worktree"
    have = {
        str(p.relative_to(path)): p
        for p in path.rglob("*")
        if p.is_file() and p.relative_to(path).parts[0] != ".git"
    }
    want = history.files[commit]
    if set(have) != set(want):
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        return f"{path.name}: missing {missing}, extra {extra}"
    differ = [name for name, file in have.items() if file.read_bytes() != want[name]]
    if differ:
        return f"{path.name}: files differ from the commit: {differ}"
    status = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if status.stdout.strip() != commit:  # the refresh reads the tree through git
        return f"{path.name}: git rev-parse HEAD says {status.stdout.strip()!r} {status.stderr!r}"
    return None


def _check_state(
    history: History, state: Path, allowed: tuple[str, ...], old_text: str | None
) -> tuple[str, str]:
    """Assert the manifest is whole (the old text, or a new one for an allowed commit) and the
    worktrees it and `current` name are complete; return the manifest's text and commit."""
    text = (state / "manifest.json").read_text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AssertionError(f"manifest.json is not JSON ({exc}): {text[:200]!r}") from None
    commit = data["commit"]
    assert data["format"] == 1 and commit in allowed, (commit, allowed)
    if old_text is not None and text != old_text:
        assert commit == allowed[-1], "a changed manifest must be the new commit's"
    assert {p["name"] for p in data["pipelines"]} == history.pipelines[commit]
    assert data["errors"] == [], data["errors"]
    by_commit = state / "manifests" / f"{commit}.json"
    assert by_commit.read_text() == text, "the per-commit copy differs from manifest.json"
    previous = state / "manifest.previous.json"
    if previous.exists():
        assert json.loads(previous.read_text())["commit"] in history.commits
    worktrees = state / "repo" / "worktrees"
    assert (problem := _worktree_problem(history, worktrees / commit, commit)) is None, problem
    target = os.readlink(state / "repo" / "current")
    current = Path(target).name
    assert target == f"worktrees/{current}" and current in allowed, (target, allowed)
    assert (problem := _worktree_problem(history, worktrees / current, current)) is None, problem
    return text, commit


def _phase(state: Path, old: str, new: str, text_before: str) -> str:
    """How far a killed refresh of `new` got, as seen in the state dir."""
    if (state / "manifest.json").read_text() != text_before:
        return "manifest written"
    if Path(os.readlink(state / "repo" / "current")).name == new:
        return "current moved"
    if (state / "repo" / "worktrees" / new).is_dir():
        return "checked out"
    mirror = state / "repo" / "mirror.git"
    fetched = subprocess.run(
        ["git", "-C", str(mirror), "cat-file", "-e", f"{new}^{{commit}}"], capture_output=True
    )
    return "fetched" if fetched.returncode == 0 else "not fetched"


# -- 1. kill -9 ----------------------------------------------------------------------------------


def _timed(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    out = _refresh(env, *args)
    return time.monotonic() - started, out


def test_kill_9_at_any_moment_leaves_a_whole_manifest_and_worktree(tmp_path: Path) -> None:
    seed = int(os.environ.get("ELT_TEST_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    history = History(PipelinesRepo(tmp_path / "origin"), rng)
    state = tmp_path / "state"
    env = _env(tmp_path, history.repo.url, state)
    first = _refresh(env)
    assert first.returncode == 0, first.stderr
    # The span of one refresh: Python and the imports (--help), then a whole one of a new commit.
    imports, _ = _timed(env, "--help")
    history.push()
    whole, out = _timed(env)
    assert out.returncode == 0, out.stderr
    share = min(imports / whole, 0.9)  # of a refresh, the part before it touches the state dir
    durations = [whole]  # of the refreshes after each kill: the window follows the machine's load
    text, current = _check_state(history, state, (history.commits[-1],), None)

    trials: list[tuple[float, str]] = []
    for trial in range(20):
        whole = sorted(durations[-3:])[len(durations[-3:]) // 2]
        where = f"seed {seed}, trial {trial}, imports {share:.0%} of {whole:.2f}s"
        old = current
        for _ in range(1 + (trial % 3 == 0)):  # now and then two commits to fetch at once
            new = history.push()
        delay = rng.uniform(0.8 * share * whole, whole)
        proc = subprocess.Popen(
            _command(),
            env=env,
            cwd=PROJECT_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(delay)
        running = proc.poll() is None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        phase = _phase(state, old, new, text) if running else "had exited"
        trials.append((round(delay, 3), phase))
        where += f", killed after {delay:.3f}s ({phase}); trials so far {trials}"
        try:
            _check_state(history, state, (old, new), text)
        except AssertionError as exc:
            raise AssertionError(f"after kill -9 ({where}): {exc}") from exc

        if trial % 2:  # the next refresh is of a newer commit than the one it was killed on
            new = history.push()
        seconds, again = _timed(env)
        durations.append(seconds)
        assert again.returncode == 0, f"refresh after kill -9 ({where}): {again.stderr}"
        assert "Traceback" not in again.stderr, where
        try:
            text, current = _check_state(history, state, (new,), None)
        except AssertionError as exc:
            raise AssertionError(f"after the next refresh ({where}): {exc}") from exc
        assert current == new, where
        assert _leftovers(state, git_admin=False) == [], f"left behind after kill -9 ({where})"

    history.push()  # one more commit checked out: nothing of the kills is left at all
    again = _refresh(env)
    assert again.returncode == 0, again.stderr
    assert _leftovers(state) == [], f"seed {seed}: left behind after {trials}"
    phases = Counter(phase for _, phase in trials)
    print(f"seed {seed}: kills by phase {dict(phases)}; (delay, phase) {trials}")
    # The window must have landed kills inside refreshes, not only before or after them.
    in_flight = sum(n for p, n in phases.items() if p not in ("not fetched", "had exited"))
    assert in_flight >= 3, f"seed {seed}: too few kills inside a refresh: {phases}, {trials}"


# -- 2. concurrent refreshes ---------------------------------------------------------------------


def test_concurrent_refreshes_all_succeed_and_agree(tmp_path: Path) -> None:
    seed = int(os.environ.get("ELT_TEST_SEED", random.SystemRandom().randrange(10**6)))
    history = History(PipelinesRepo(tmp_path / "origin"), random.Random(seed))
    state = tmp_path / "state"
    env = _env(tmp_path, history.repo.url, state)
    assert _refresh(env).returncode == 0

    for round_ in range(10):
        new = history.push()
        # refresh.py takes the manifest lock and waits for it: every one of them refreshes.
        procs = [
            subprocess.Popen(
                _command("--json"),
                env=env,
                cwd=PROJECT_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2 + round_ % 2)
        ]
        outs = [(proc.communicate(timeout=120), proc.returncode) for proc in procs]
        where = f"seed {seed}, round {round_}"
        for (stdout, stderr), code in outs:
            assert code == 0, f"{where}: exit {code}: {stderr}"
            assert "Traceback" not in stdout + stderr, f"{where}: {stderr}"
            assert json.loads(stdout)["commit"] == new, f"{where}: {stdout}"
        try:
            _check_state(history, state, (new,), None)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        assert _leftovers(state) == [], where


# -- 3. a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs of its own (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {(out.stderr or out.stdout).strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=False)


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _listing(state: Path) -> dict[str, int]:
    """Every file outside the Git mirror and the worktrees -> its size."""
    return {
        str(p.relative_to(state)): p.stat().st_size
        for p in state.rglob("*")
        if p.is_file()
        and p.relative_to(state).parts[:2] not in {("repo", "mirror.git"), ("repo", "worktrees")}
    }


def test_a_full_disk_exits_5_in_one_line_and_keeps_the_manifest(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    """The state dir fills up while the new commit's manifest is written: exit 5, one line that
    says what ran out and where, the previous manifest and worktree intact, no temp file; once
    there is room again the next refresh writes the new commit's manifest. Then the same with a
    commit whose checkout does not fit: git's failure is the state dir's, not the remote's."""
    history = History(PipelinesRepo(tmp_path / "origin"), random.Random(5), static_files=0)
    # A dlt source of a few thousand tables: a large manifest from a few lines of code, so
    # the commit's Git objects and worktree fit where its manifest does not.
    _dlt(history.repo, 4000)
    first = history.commit("four thousand tables")
    state = small_tmpfs / "state"
    env = _env(tmp_path, history.repo.url, state)
    out = _refresh(env)
    assert out.returncode == 0, out.stderr
    kept = (state / "manifest.json").read_text()
    assert len(kept) > 400_000

    _sling(history.repo, "orders", "id\n1\n2\n")  # a change of a few bytes
    second = history.commit("a small change")
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * (_free(small_tmpfs) - 256 * 1024))  # room for Git's part only
    before = _listing(state)

    out = _refresh(env)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith(
        f"error: cannot write the manifest in {state}: No space left on device"
    ), out.stderr
    assert (state / "manifest.json").read_text() == kept
    assert json.loads(kept)["commit"] == first
    assert _worktree_problem(history, state / "repo" / "worktrees" / first, first) is None
    assert _listing(state) == before  # no temp file, no half-written per-commit copy
    assert _leftovers(state) == []

    ballast.unlink()
    out = _refresh(env)
    assert out.returncode == 0, out.stderr
    _check_state(history, state, (second,), None)
    assert _leftovers(state) == []

    # Then a commit whose checkout does not fit: git fails first, and the log line before the
    # error says that it was the state dir that ran out, not that the remote failed.
    for i in range(300):
        history.repo.write(f"data/many/{i:03d}.txt", f"{i}\n")
    third = history.commit("three hundred files")
    kept = (state / "manifest.json").read_text()
    ballast.write_bytes(b"\0" * (_free(small_tmpfs) - 256 * 1024))
    before = _listing(state)
    out = _refresh(env)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "ELT_REPO_URL" not in out.stderr, out.stderr
    logged, last = out.stderr.strip().splitlines()
    assert "ELT_STATE_DIR: no room for git worktree in " + str(state) in logged, logged
    assert last.startswith(f"error: cannot write the manifest in {state}: No space left"), last
    assert (state / "manifest.json").read_text() == kept
    assert _worktree_problem(history, state / "repo" / "worktrees" / second, second) is None
    assert _listing(state) == before
    assert _leftovers(state) == []
    assert not (state / "repo" / "worktrees" / third).exists()

    ballast.unlink()
    out = _refresh(env)
    assert out.returncode == 0, out.stderr
    _check_state(history, state, (third,), None)
    assert _leftovers(state) == []
