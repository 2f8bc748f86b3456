"""Running git for a remote: safe environment, timeouts, retries, one-line scrubbed errors."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import git
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from elt_repo.git.urls import GitSourceError, GitUrl

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
        "/' not found",  # fatal: repository 'https://host/org/repo/' not found
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


def _kill(proc: subprocess.Popen) -> None:
    """Stop git and the helpers it started (one process group on POSIX)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform == "win32":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)


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
        if _out_of_space(stderr):  # the local disk, not the remote: no retry helps
            self.kind = "no_room"
            line = next(x for x in stderr.splitlines() if _out_of_space(x))
            size = " (the file size limit, ulimit -f)" if "of signal 25" in line else ""
            self.detail = _detail(line) + size


class GitRunner:
    """Runs git for one remote and ref; only GitSourceError ever leaves it."""

    def __init__(self, remote: GitUrl, ref: str, attempts: int, timeout: float) -> None:
        self.remote = remote
        self.ref = ref
        self.attempts = max(1, attempts)
        self.timeout = timeout
        # A time.monotonic() by which every network command, retries included, must be done:
        # the repo-polling sensor's tick budget. None: only `attempts` and `timeout` bound it.
        self.deadline: float | None = None

    def _remaining(self) -> float:
        """Seconds left before the deadline (the per-command timeout when there is none)."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 1:
            raise GitSourceError("ELT_REPO_URL", f"gave up on {self.remote.display}: out of time")
        return min(self.timeout, left)

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        timeout: float | None = LOCAL_TIMEOUT,
        progress: Callable[[str], None] | None = None,
    ) -> tuple[int, str, str]:
        """Run git once; return (status, stdout, scrubbed stderr).

        With `progress`, each stderr line is passed to it, scrubbed, while git runs.
        """
        command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
        if progress is not None:
            return self._stream(command, cwd, timeout, progress)
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

    def _stream(
        self,
        command: list[str],
        cwd: Path | None,
        timeout: float | None,
        progress: Callable[[str], None],
    ) -> tuple[int, str, str]:
        """run(), reading stderr as it comes: git redraws progress with \\r, so split there too.

        The stderr returned keeps each line's last state, as a terminal would show it.
        """
        env = {**os.environ, "LANGUAGE": "C", "LC_ALL": "C", **self.remote.env}  # as GitPython
        try:
            # A process group of its own, so a timeout also stops git's helpers (remote-https).
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=sys.platform != "win32",
            )
        except FileNotFoundError:
            raise GitSourceError("ELT_REPO_URL", "git is not installed") from None
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _kill(proc)

        watchdog = threading.Timer(timeout, expire) if timeout else None
        raw, pending = bytearray(), b""
        try:
            reader.start()
            if watchdog:
                watchdog.start()
            while chunk := proc.stderr.read1(65536):
                raw += chunk
                *lines, pending = re.split(rb"[\r\n]", pending + chunk)
                for line in lines:
                    if text := line.decode(errors="replace").strip():
                        progress(self.remote.scrub(text))
            if text := pending.decode(errors="replace").strip():
                progress(self.remote.scrub(text))
            status = proc.wait()
        finally:
            if watchdog:
                watchdog.cancel()
            if proc.poll() is None:  # the callback raised, or we were interrupted
                _kill(proc)
                proc.wait()
            reader.join()
        stdout = b"".join(out).decode(errors="replace")
        if status != 0 and timed_out.is_set():
            return status, stdout, f"fatal: timed out after {timeout:g}s"
        rows = raw.decode(errors="replace").split("\n")
        shown = (row.rstrip("\r").rsplit("\r", 1)[-1] for row in rows)
        err = "\n".join(line.rstrip() for line in shown if line.strip())
        return status, stdout, self.remote.scrub(err)

    def local(self, *args: str, cwd: Path | None = None) -> str:
        """Run a git command that does not touch the network; fail on a non-zero exit."""
        status, out, err = self.run(*args, cwd=cwd)
        if status != 0:
            where = f" in {cwd}" if cwd else ""
            if _out_of_space(err):  # the local disk: say so, not git's last words after it
                line = next(x for x in err.splitlines() if _out_of_space(x))
                raise GitSourceError(
                    "ELT_STATE_DIR", f"no room for git {args[0]}{where}: {_detail(line)}"
                )
            raise GitSourceError("ELT_REPO_URL", f"git {args[0]} failed{where}: {_detail(err)}")
        return out

    def check_local(self) -> None:
        """Fail early, and clearly, when a local repo path does not exist."""
        local = self.remote.local_path
        if local is not None and not local.exists():
            raise GitSourceError("ELT_REPO_URL", f"local path {local} does not exist")

    def network(
        self, *args: str, cwd: Path | None = None, progress: Callable[[str], None] | None = None
    ) -> str:
        """Run a command that talks to the remote, retrying only failures that may pass."""
        self.check_local()

        def attempt() -> str:
            status, out, err = self.run(
                *args, cwd=cwd, timeout=self._remaining(), progress=progress
            )
            if status != 0:
                raise _GitFailure(err)
            return out

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self._remaining()),
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
        if failure.kind == "no_room":  # the local disk, not the remote
            return GitSourceError(
                "ELT_STATE_DIR", f"no room to store {url} locally: {failure.detail}"
            )
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


# What git says when the local disk, not the remote, is the problem. Signal 25 is SIGXFSZ: a
# file grew past `ulimit -f` (Python's subprocess gives git's children its default action).
# A checkout that cannot write a file says only "unable to write file <path>", without errno.
_NO_ROOM = (
    "No space left on device",
    "File too large",
    "Disk quota exceeded",
    "of signal 25",
    "unable to write file",
)


def _out_of_space(detail: str) -> bool:
    return any(text in detail for text in _NO_ROOM)
