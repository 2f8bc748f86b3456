"""git/source.py against real repos built in tmp_path, and an HTTPS server that demands a token."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import pickle
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import git
import pytest

from elt_repo.git.source import (
    Checkout,
    GitSource,
    GitSourceError,
    redact_url,
    validate_ref,
    validate_url,
)
from tests.git_http_server import GitHttpsServer

TOKEN = "ghp_" + secrets.token_hex(18)
TOKEN_FORMS = (
    TOKEN,
    base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode(),
    base64.b64encode(TOKEN.encode()).decode(),
)


class Upstream:
    """A working repo standing in for the remote; commits go straight to its branches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.path, check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    def commit(self, name: str = "pipelines/a/dagster.yaml", text: str | None = None) -> str:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text if text is not None else f"{name} {secrets.token_hex(4)}\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"change {name}")
        return self.git("rev-parse", "HEAD")


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config: no credential helpers, no insteadOf, a fixed identity."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)
    monkeypatch.delenv("GIT_ALLOW_PROTOCOL", raising=False)
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    repo = Upstream(tmp_path / "upstream")
    repo.commit(text="first\n")
    return repo


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "repo"


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git command line GitPython runs from now on."""
    calls: list[list[str]] = []
    real = git.Git.execute

    def spy(self: git.Git, command: list[str], *args: object, **kwargs: object) -> object:
        calls.append([str(part) for part in command])
        return real(self, command, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(git.Git, "execute", spy)
    return calls


def subcommands(calls: list[list[str]], name: str) -> int:
    return sum(1 for call in calls if call[1:2] == [name])


def error_of(action: object) -> GitSourceError:
    with pytest.raises(GitSourceError) as info:
        action()  # type: ignore[operator]
    return info.value


# -- cloning and following a ref ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["absolute path", "relative path", "file URL"])
def test_sync_clones_into_a_worktree_and_points_current_at_it(
    upstream: Upstream,
    state: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    url = {
        "absolute path": str(upstream.path),
        "relative path": "upstream",
        "file URL": upstream.path.as_uri(),
    }[form]
    source = GitSource(url, "main", state)
    assert source.current() is None

    checkout = source.sync()

    head = upstream.git("rev-parse", "HEAD")
    assert checkout == Checkout(commit=head, ref="main", path=state / "worktrees" / head)
    assert (checkout.path / "pipelines/a/dagster.yaml").read_text() == "first\n"
    assert (
        subprocess.check_output(
            ["git", "-C", str(checkout.path), "rev-parse", "HEAD"], text=True
        ).strip()
        == head
    )
    assert os.readlink(state / "current") == os.path.join("worktrees", head)
    assert source.current() == checkout
    mirror = state / "mirror.git"
    assert (mirror / "HEAD").is_file() and not (mirror / "FETCH_HEAD").exists()
    config = subprocess.check_output(["git", "-C", str(mirror), "config", "--list"], text=True)
    assert "remote." not in config and str(upstream.path) not in config


def test_new_commit_is_seen_by_remote_commit_then_synced_into_a_new_worktree(
    upstream: Upstream, state: Path
) -> None:
    source = GitSource(str(upstream.path), "main", state)
    old = source.sync()
    assert source.remote_commit() == old.commit

    new_sha = upstream.commit(text="second\n")
    assert source.remote_commit() == new_sha
    assert source.current() == old  # ls-remote alone changes nothing

    new = source.sync()
    assert new.commit == new_sha and new.path != old.path
    assert (new.path / "pipelines/a/dagster.yaml").read_text() == "second\n"
    assert (old.path / "pipelines/a/dagster.yaml").read_text() == "first\n"
    assert source.current() == new


def test_sync_follows_a_branch(upstream: Upstream, state: Path) -> None:
    upstream.git("checkout", "-q", "-b", "feature/x")
    feature = upstream.commit("pipelines/b/dagster.yaml")
    upstream.git("checkout", "-q", "main")
    main = upstream.commit()

    source = GitSource(str(upstream.path), "feature/x", state)
    assert source.remote_commit() == feature
    checkout = source.sync()
    assert checkout.commit == feature != main
    assert (checkout.path / "pipelines/b/dagster.yaml").exists()


def test_sync_follows_a_full_ref_outside_branches_and_tags(upstream: Upstream, state: Path) -> None:
    upstream.git("checkout", "-q", "-b", "pr")
    head = upstream.commit("pipelines/pr/dagster.yaml")
    upstream.git("checkout", "-q", "main")
    upstream.git("update-ref", "refs/pull/7/head", head)
    upstream.git("branch", "-q", "-D", "pr")

    source = GitSource(str(upstream.path), "refs/pull/7/head", state)
    assert source.remote_commit() == head
    assert source.sync().commit == head


@pytest.mark.parametrize("annotated", [True, False], ids=["annotated", "lightweight"])
def test_sync_follows_a_tag(upstream: Upstream, state: Path, annotated: bool) -> None:
    tagged = upstream.git("rev-parse", "HEAD")
    upstream.git("tag", *(["-a", "-m", "release"] if annotated else []), "v1.2.0")
    upstream.commit()

    source = GitSource(str(upstream.path), "v1.2.0", state)
    assert source.remote_commit() == tagged  # the commit, not the tag object
    assert source.sync().commit == tagged


@pytest.mark.parametrize("length", [40, 7])
def test_sync_pins_a_sha(upstream: Upstream, state: Path, length: int) -> None:
    pinned = upstream.git("rev-parse", "HEAD")
    upstream.commit()

    source = GitSource(str(upstream.path), pinned[:length], state)
    assert source.remote_commit() is None
    checkout = source.sync()
    assert checkout.commit == pinned and checkout.ref == pinned[:length]
    assert (checkout.path / "pipelines/a/dagster.yaml").read_text() == "first\n"


def test_sync_fetches_a_sha_no_branch_reaches(upstream: Upstream, state: Path) -> None:
    upstream.git("checkout", "-q", "-b", "short-lived")
    orphan = upstream.commit("pipelines/c/dagster.yaml")
    upstream.git("checkout", "-q", "main")
    upstream.git("branch", "-q", "-D", "short-lived")

    checkout = GitSource(str(upstream.path), orphan, state).sync()
    assert checkout.commit == orphan
    assert (checkout.path / "pipelines/c/dagster.yaml").exists()


def test_force_push_that_rewrites_history_gets_a_new_worktree(tmp_path: Path, state: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = Upstream(tmp_path / "work")
    base = work.commit(text="base\n")
    doomed = work.commit(text="doomed\n")
    work.git("push", "-q", str(origin), "main")
    source = GitSource(str(origin), "main", state)
    assert source.sync().commit == doomed

    work.git("reset", "-q", "--hard", base)
    rewritten = work.commit("pipelines/b/dagster.yaml")
    work.git("push", "-q", "--force", str(origin), "main")

    assert source.remote_commit() == rewritten
    checkout = source.sync()
    assert checkout.commit == rewritten
    assert (checkout.path / "pipelines/a/dagster.yaml").read_text() == "base\n"
    assert (checkout.path / "pipelines/b/dagster.yaml").exists()
    assert source.worktree(doomed).is_dir()  # runs pinned to the old commit keep their files


@pytest.mark.parametrize("keep", [0, 2])
def test_sync_keeps_only_the_newest_worktrees_and_current(
    upstream: Upstream, state: Path, keep: int
) -> None:
    source = GitSource(str(upstream.path), "main", state, keep_worktrees=keep, grace=0)
    commits = [source.sync().commit]
    for _ in range(3):
        upstream.commit()
        commits.append(source.sync().commit)

    expected = commits[-max(keep, 1) :]
    assert sorted(p.name for p in (state / "worktrees").iterdir()) == sorted(expected)
    listed = subprocess.check_output(
        ["git", "-C", str(state / "mirror.git"), "worktree", "list"], text=True
    )
    assert all(sha[:7] not in listed for sha in commits[: -len(expected)])


def test_worktrees_recent_or_pinned_by_a_run_survive_pruning(
    upstream: Upstream, state: Path
) -> None:
    source = GitSource(str(upstream.path), "main", state, keep_worktrees=0, grace=3600)
    first = source.sync().commit
    upstream.commit()
    source.sync()
    assert source.worktree(first).is_dir()  # used within the grace period
    an_hour_and_more_ago = time.time() - 3700
    os.utime(source.worktree(first), (an_hour_and_more_ago, an_hour_and_more_ago))
    upstream.commit()
    source.sync(keep={first})
    assert source.worktree(first).is_dir()  # old, but a queued or running run is pinned to it
    upstream.commit()
    source.sync()
    assert not source.worktree(first).exists()  # old and unused: removed


def test_current_is_none_when_its_worktree_is_gone(upstream: Upstream, state: Path) -> None:
    source = GitSource(str(upstream.path), "main", state)
    checkout = source.sync()
    subprocess.run(["rm", "-rf", str(checkout.path)], check=True)
    assert source.current() is None
    with pytest.raises(ValueError):
        source.worktree("../../etc")


# -- refused before git runs -------------------------------------------------------------------


@pytest.fixture
def ext_marker(tmp_path: Path) -> tuple[Path, Path]:
    """A script that, if git ever ran it as a transport, would leave a marker file."""
    marker, script = tmp_path / "pwned", tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    return marker, script


UNSAFE_URLS = [
    ("", "URL is empty"),
    ("ext::{script}", "refusing unsafe URL: contains '::' (transport helper syntax)"),
    ("fd::17", "contains '::' (transport helper syntax)"),
    ("-uhelp", "starts with '-'"),
    ("--upload-pack={script}", "starts with '-'"),
    ("https://example.com/$(id).git", "contains '$'"),
    ("$HOME/pipelines", "contains '$'"),
    ("https://example.com/a b.git", "contains whitespace or a control character"),
    ("https://example.com/repo.git\n", "contains whitespace or a control character"),
    ("https://example.com/\x00repo.git", "contains whitespace or a control character"),
    (
        f"https://x-access-token:{TOKEN}@example.com/a\tb.git",
        "contains whitespace or a control character",
    ),
    ("ssh://-oProxyCommand={script}/repo.git", "host or user name starts with '-'"),
    ("git@-oProxyCommand=touch:org/repo.git", "host or user name starts with '-'"),
    ("ftp://example.com/repo.git", "unsupported scheme 'ftp'"),
]


@pytest.mark.parametrize(("url", "reason"), UNSAFE_URLS)
def test_unsafe_url_is_refused_before_any_git_command(
    url: str,
    reason: str,
    state: Path,
    git_calls: list[list[str]],
    ext_marker: tuple[Path, Path],
) -> None:
    marker, script = ext_marker
    url = url.replace("{script}", str(script))

    error = error_of(lambda: validate_url(url))
    assert error.field == "ELT_REPO_URL" and reason in error.message
    assert str(error) == f"ELT_REPO_URL: {error.message}" and "\n" not in str(error)
    assert TOKEN not in str(error)

    def use() -> None:
        source = GitSource(url, "main", state, token=TOKEN)
        source.remote_commit()
        source.sync()

    assert str(error_of(use)) == str(error)
    assert git_calls == [] and not marker.exists() and not state.exists()


UNSAFE_REFS = [
    ("", "ref is empty"),
    ("-f", "starts with '-'"),
    ("--upload-pack=touch", "starts with '-'"),
    ("main..dev", "contains '..'"),
    ("feature x", "whitespace or a control character"),
    ("main\n", "whitespace or a control character"),
    ("main\x7f", "whitespace or a control character"),
    ("$(id)", "contains '$'"),
    ("main~1", "contains '~'"),
    ("main^", "contains '^'"),
    ("a:b", "contains ':'"),
    ("what?", "contains '?'"),
    ("feat*", "contains '*'"),
    ("a[1]", "contains '['"),
    ("a\\b", "contains '\\\\'"),
    ("main.lock", "ends with '.lock'"),
    ("feature/", "ends with '/'"),
    ("main@{1}", "contains '@{'"),
    ("@", "is '@'"),
    ("/main", "empty path component"),
    ("a//b", "empty path component"),
    (".hidden", "starts or ends with '.'"),
]


@pytest.mark.parametrize(("ref", "reason"), UNSAFE_REFS)
def test_unsafe_ref_is_refused_before_any_git_command(
    ref: str, reason: str, upstream: Upstream, state: Path, git_calls: list[list[str]]
) -> None:
    error = error_of(lambda: validate_ref(ref))
    assert error.field == "ELT_REPO_BRANCH" and reason in error.message
    assert "\n" not in str(error)
    assert str(error_of(lambda: GitSource(str(upstream.path), ref, state).sync())) == str(error)
    assert git_calls == [] and not state.exists()


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/pipelines.git",
        "http://localhost:8080/pipelines.git",
        "https://x-access-token:abc123@github.com/org/pipelines.git",
        "ssh://git@github.com/org/pipelines.git",
        "git@github.com:org/pipelines.git",
        "file:///srv/git/pipelines.git",
        "/srv/git/pipelines",
        "relative/pipelines",
        "../pipelines",
    ],
)
def test_safe_url_forms_are_accepted(url: str) -> None:
    validate_url(url)


@pytest.mark.parametrize(
    "ref",
    [
        "main",
        "feature/x",
        "v1.2.0",
        "release-2024.01",
        "1a2b3c4",
        "a" * 40,
        "refs/heads/main",
    ],
)
def test_normal_refs_are_accepted(ref: str) -> None:
    validate_ref(ref)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"https://x-access-token:{TOKEN}@github.com/o/r.git",
            "https://github.com/o/r.git",
        ),
        (f"https://{TOKEN}@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://user:p@ss@host/r.git", "https://host/r.git"),
        ("ssh://git:secret@host/r.git", "ssh://git@host/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r", "/srv/git/r"),
    ],
)
def test_redact_url_strips_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_ext_transport_stays_blocked_even_if_validation_were_bypassed(
    upstream: Upstream,
    state: Path,
    ext_marker: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker, script = ext_marker
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "ext:file")  # a caller environment that allows ext
    source = GitSource(str(upstream.path), "main", state, attempts=1)
    source._git.remote = dataclasses.replace(source._git.remote, git_url=f"ext::{script}")

    error = error_of(source.remote_commit)
    assert error.field == "ELT_REPO_URL"
    assert not marker.exists()


def test_error_is_one_picklable_line() -> None:
    error = GitSourceError("ELT_REPO_URL", "repository x\nhas no commits")
    assert str(error) == "ELT_REPO_URL: repository x has no commits"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.message, str(copy)) == (
        error.field,
        error.message,
        str(error),
    )


# -- repos that cannot be used -----------------------------------------------------------------


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file URL"])
def test_missing_local_path(tmp_path: Path, state: Path, as_uri: bool) -> None:
    missing = tmp_path / "nowhere"
    source = GitSource(missing.as_uri() if as_uri else str(missing), "main", state)
    for action in (source.remote_commit, source.sync):
        error = error_of(action)
        assert (error.field, str(error)) == (
            "ELT_REPO_URL",
            f"ELT_REPO_URL: local path {missing} does not exist",
        )


def test_directory_that_is_not_a_repo_fails_once_without_retry(
    tmp_path: Path, state: Path, git_calls: list[list[str]]
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    source = GitSource(str(plain), "main", state, attempts=3)
    error = error_of(source.remote_commit)
    assert str(error) == f"ELT_REPO_URL: no Git repository at {plain}"
    assert subcommands(git_calls, "ls-remote") == 1


def test_unreachable_https_is_retried_then_reported(
    state: Path, git_calls: list[list[str]]
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}/pipelines.git"
    source = GitSource(url, "main", state, attempts=2)

    error = error_of(source.remote_commit)
    assert error.field == "ELT_REPO_URL"
    assert error.message.startswith(
        f"cannot reach {url}: Failed to connect to 127.0.0.1 port {port}"
    )
    assert subcommands(git_calls, "ls-remote") == 2
    assert error_of(source.sync).message.startswith(f"cannot reach {url}: ")


@pytest.mark.parametrize("ref", ["nope", "f" * 40])
def test_ref_that_does_not_exist(upstream: Upstream, state: Path, ref: str) -> None:
    source = GitSource(str(upstream.path), ref, state)
    expected = f"ELT_REPO_BRANCH: ref '{ref}' not found in {upstream.path}"
    if ref == "nope":
        assert str(error_of(source.remote_commit)) == expected
    error = error_of(source.sync)
    assert (error.field, str(error)) == ("ELT_REPO_BRANCH", expected)
    assert source.current() is None


def test_empty_repo_has_no_commits(tmp_path: Path, state: Path) -> None:
    empty = Upstream(tmp_path / "empty")
    source = GitSource(str(empty.path), "main", state)
    for action in (source.remote_commit, source.sync):
        error = error_of(action)
        assert (error.field, str(error)) == (
            "ELT_REPO_URL",
            f"ELT_REPO_URL: repository {empty.path} has no commits",
        )


# -- HTTPS with a token ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHttpsServer]:
    served = tmp_path_factory.mktemp("served")
    server = GitHttpsServer(served, TOKEN, tmp_path_factory.mktemp("tls"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(https: GitHttpsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Upstream:
    """A repo behind the HTTPS server, trusted through GIT_SSL_CAINFO."""
    monkeypatch.setenv("GIT_SSL_CAINFO", str(https.cafile))
    repo = Upstream(https.root / tmp_path.name)
    repo.commit(text="first\n")
    return repo


def assert_no_token(state: Path, *texts: str) -> None:
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not any(form.encode() in data for form in TOKEN_FORMS), path
    for text in texts:
        assert not any(form in text for form in TOKEN_FORMS)


def test_https_with_token_clones_and_fetches(
    https: GitHttpsServer,
    served: Upstream,
    state: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = https.url(served.path.name)
    source = GitSource(url, "main", state, token=TOKEN)
    first = source.sync()
    assert first.commit == served.git("rev-parse", "HEAD")

    new_sha = served.commit(text="second\n")
    assert source.remote_commit() == new_sha
    second = source.sync()
    assert second.commit == new_sha
    assert (second.path / "pipelines/a/dagster.yaml").read_text() == "second\n"
    assert f"Basic {TOKEN_FORMS[1]}" in {auth for _, _, auth in https.requests}
    assert_no_token(state, caplog.text)


def test_https_with_credentials_in_the_url(
    https: GitHttpsServer,
    served: Upstream,
    state: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = https.url(served.path.name).replace("https://", f"https://x-access-token:{TOKEN}@")
    source = GitSource(url, "main", state)
    assert source.url == https.url(served.path.name)
    assert source.sync().commit == served.git("rev-parse", "HEAD")
    assert_no_token(state, caplog.text, repr(source._git.remote))


def test_https_with_wrong_token_is_an_auth_error_on_github_token(
    https: GitHttpsServer,
    served: Upstream,
    state: Path,
    git_calls: list[list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "ghp_" + secrets.token_hex(18)
    url = https.url(served.path.name)
    source = GitSource(url, "main", state, token=wrong)
    for action in (source.remote_commit, source.sync):
        error = error_of(action)
        assert (error.field, str(error)) == (
            "GITHUB_TOKEN",
            f"GITHUB_TOKEN: authentication failed for {url}",
        )
    assert (
        subcommands(git_calls, "ls-remote") + subcommands(git_calls, "fetch") == 2
    )  # never retried
    for text in (caplog.text, *(str(call) for call in git_calls)):
        assert (
            wrong not in text
            and base64.b64encode(f"x-access-token:{wrong}".encode()).decode() not in text
        )
    assert_no_token(state, caplog.text)


def test_https_without_token_fails_fast_with_a_hint(
    https: GitHttpsServer,
    served: Upstream,
    state: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = tmp_path / "asked"
    askpass = tmp_path / "askpass.sh"  # as an IDE would install; it must never be asked
    askpass.write_text(f"#!/bin/sh\ntouch {asked}\necho {TOKEN}\n")
    askpass.chmod(0o755)
    for name in ("GIT_ASKPASS", "SSH_ASKPASS"):
        monkeypatch.setenv(name, str(askpass))
    url = https.url(served.path.name)
    source = GitSource(url, "main", state, timeout=20)
    started = time.monotonic()
    error = error_of(source.sync)
    assert time.monotonic() - started < 10  # no prompt, no retries
    assert (error.field, str(error)) == (
        "ELT_REPO_URL",
        f"ELT_REPO_URL: authentication failed for {url}: no credentials given (set GITHUB_TOKEN)",
    )
    assert not asked.exists()


def test_https_with_wrong_credentials_in_the_url_blames_the_url(
    https: GitHttpsServer, served: Upstream, state: Path
) -> None:
    url = https.url(served.path.name)
    error = error_of(
        GitSource(url.replace("https://", "https://me:hunter2@"), "main", state, token=TOKEN).sync
    )
    assert (error.field, str(error)) == (
        "ELT_REPO_URL",
        f"ELT_REPO_URL: authentication failed for {url}",
    )
    assert "hunter2" not in str(error)


# -- one commit, for a run in a new container ----------------------------------------------------


def test_commit_worktree_fetches_only_that_commit_into_a_new_state_dir(
    https: GitHttpsServer, served: Upstream, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    old = served.git("rev-parse", "HEAD")
    served.commit(text="second\n")  # the branch has moved on; the run wants the old commit
    source = GitSource(https.url(served.path.name), "main", state, token=TOKEN)

    path = source.commit_worktree(old)
    assert path == source.worktree(old)
    assert (path / "pipelines/a/dagster.yaml").read_text() == "first\n"
    mirror = state / "mirror.git"
    assert git.Repo(path).head.commit.hexsha == old
    assert git.Repo(mirror).git.rev_parse("--is-shallow-repository") == "true"
    refs = git.Repo(mirror).git.for_each_ref("--format=%(refname)").split()
    assert refs == [f"refs/pinned/{old}"]  # not the branch, not its history
    assert source.current() is None  # `current` is the code server's; a run leaves it alone
    assert source.commit_worktree(old) == path  # made once
    assert_no_token(state, caplog.text)


def test_commit_worktree_on_the_code_servers_host_reuses_the_full_mirror(
    upstream: Upstream, state: Path, git_calls: list[list[str]]
) -> None:
    source = GitSource(str(upstream.path), "main", state)
    first = source.sync().commit
    second = upstream.commit(text="second\n")
    shutil.rmtree(source.worktree(first))  # pruned, say; its objects are in the mirror
    calls = len(git_calls)
    assert (source.commit_worktree(first) / "pipelines/a/dagster.yaml").read_text() == "first\n"
    assert subcommands(git_calls[calls:], "fetch") == 0
    # A commit the mirror lacks is fetched by sha, without --depth: the mirror stays whole.
    assert (source.commit_worktree(second) / "pipelines/a/dagster.yaml").read_text() == "second\n"
    mirror = git.Repo(state / "mirror.git")
    assert mirror.git.rev_parse("--is-shallow-repository") == "false"


def test_commit_worktree_of_a_commit_the_remote_no_longer_has_names_it(
    tmp_path: Path, state: Path
) -> None:
    work = Upstream(tmp_path / "work")
    kept = work.commit(text="kept\n")
    doomed = work.commit(text="doomed\n")
    work.git("reset", "-q", "--hard", kept)  # a force-push, then the remote's gc
    work.git("reflog", "expire", "--expire=now", "--all")
    work.git("gc", "-q", "--prune=now")

    source = GitSource(str(work.path), "main", state)
    error = error_of(lambda: source.commit_worktree(doomed))
    assert error.field == "elt_repo/commit"
    assert f"commit {doomed} is not in {source.url}" in str(error)
    assert not source.worktree(doomed).exists()
    assert not source.worktree(kept).exists()  # and nothing in its place
