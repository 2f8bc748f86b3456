"""Running git for a remote: safe environment, timeouts, retries, one-line scrubbed errors."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import git
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from elt_repo.git_urls import GitSourceError, GitUrl

logger = logging.getLogger(__name__)

LOCAL_TIMEOUT = 600.0
# Matched against lowercased stderr (GitPython runs git with LC_ALL=C). A network
# command failing in any other way is taken as transient and retried.
_MARKERS = {
    "auth": (
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "returned error: 401",
        "returned error: 403",
        "permission denied (publickey",
        "invalid username or password",
    ),
    "not_found": (
        "repository not found",
        "does not appear to be a git repository",
        "not a git repository",
        "returned error: 404",
        "no such file or directory",
    ),
    "ref": (
        "couldn't find remote ref",
        "not our ref",
        "unadvertised object",
        "no such remote ref",
    ),
    "fatal": (
        "host key verification failed",
        "ssl certificate problem",
        "certificate verify",
        "unsupported url protocol",
        "not allowed",
        "unable to find remote helper",
    ),
}


def _detail(stderr: str) -> str:
    """The most telling line of git's stderr, without its 'fatal:' prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for prefix in ("fatal:", "error:", "remote:"):
        for line in lines:
            if line.lower().startswith(prefix):
                text = line[len(prefix) :].strip()
                return re.sub(r"^unable to access '[^']*': ", "", text)[:300]
    return (lines[-1] if lines else "git failed without a message")[:300]


class _GitFailure(Exception):
    """A failed network command: its scrubbed stderr, classified."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        lowered = stderr.lower()
        self.kind = next(
            (k for k, ms in _MARKERS.items() if any(m in lowered for m in ms)),
            "transient",
        )
        self.detail = _detail(stderr)


class GitRunner:
    """Runs git for one remote and ref; only GitSourceError ever leaves it."""

    def __init__(self, remote: GitUrl, ref: str, attempts: int, timeout: float) -> None:
        self.remote = remote
        self.ref = ref
        self.attempts = max(1, attempts)
        self.timeout = timeout

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float | None = LOCAL_TIMEOUT
    ) -> tuple[int, str, str]:
        """Run git once; return (status, stdout, scrubbed stderr)."""
        command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
        try:
            status, out, err = git.Git(cwd).execute(
                command,
                with_extended_output=True,
                with_exceptions=False,
                env=self.remote.env,
                kill_after_timeout=None if sys.platform == "win32" else timeout,
            )
        except git.GitCommandNotFound:
            raise GitSourceError("ELT_REPO_URL", "git is not installed") from None
        err = str(err)
        if status != 0 and err.startswith("Timeout:"):  # GitPython killed it
            err = f"fatal: timed out after {timeout:g}s"
        return int(status or 0), str(out), self.remote.scrub(err)

    def local(self, *args: str, cwd: Path | None = None) -> str:
        """Run a git command that does not touch the network; fail on a non-zero exit."""
        status, out, err = self.run(*args, cwd=cwd)
        if status != 0:
            where = f" in {cwd}" if cwd else ""
            raise GitSourceError("ELT_REPO_URL", f"git {args[0]} failed{where}: {_detail(err)}")
        return out

    def check_local(self) -> None:
        """Fail early, and clearly, when a local repo path does not exist."""
        local = self.remote.local_path
        if local is not None and not local.exists():
            raise GitSourceError("ELT_REPO_URL", f"local path {local} does not exist")

    def network(self, *args: str, cwd: Path | None = None) -> str:
        """Run a command that talks to the remote, retrying only failures that may pass."""
        self.check_local()

        def attempt() -> str:
            status, out, err = self.run(*args, cwd=cwd, timeout=self.timeout)
            if status != 0:
                raise _GitFailure(err)
            return out

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.5, max=5),
            retry=retry_if_exception(
                lambda e: isinstance(e, _GitFailure) and e.kind == "transient"
            ),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _GitFailure as failure:
            raise self._error(failure) from None

    def ref_not_found(self) -> GitSourceError:
        """The error for a branch, tag or sha the remote does not have."""
        url = self.remote.display
        return GitSourceError("ELT_REPO_BRANCH", f"ref {self.ref!r} not found in {url}")

    def empty(self) -> GitSourceError:
        """The error for a remote without a single commit."""
        url = self.remote.display
        return GitSourceError("ELT_REPO_URL", f"repository {url} has no commits")

    def _log_retry(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        logger.warning(
            "git cannot reach %s (attempt %d of %d), retrying: %s",
            self.remote.display,
            state.attempt_number,
            self.attempts,
            failure.detail if isinstance(failure, _GitFailure) else "unknown error",
        )

    def _error(self, failure: _GitFailure) -> GitSourceError:
        remote, url = self.remote, self.remote.display
        if failure.kind == "auth":
            if remote.has_credentials:
                return GitSourceError(remote.auth_field, f"authentication failed for {url}")
            hint = "no credentials given (set GITHUB_TOKEN)" if remote.is_http else failure.detail
            return GitSourceError("ELT_REPO_URL", f"authentication failed for {url}: {hint}")
        if failure.kind == "not_found":
            hint = " (or the credentials cannot access it)" if remote.has_credentials else ""
            return GitSourceError("ELT_REPO_URL", f"no Git repository at {url}{hint}")
        if failure.kind == "ref":
            return self.ref_not_found()
        if failure.kind == "fatal":
            return GitSourceError("ELT_REPO_URL", f"git cannot use {url}: {failure.detail}")
        return GitSourceError("ELT_REPO_URL", f"cannot reach {url}: {failure.detail}")
