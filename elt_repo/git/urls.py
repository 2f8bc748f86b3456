"""Git URL and ref checks, redaction, and credentials passed to git through its environment."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/?#]*)@")
_USERINFO_ANYWHERE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]*@")
_SCHEMES = {"https", "http", "ssh", "git+ssh", "ssh+git", "git", "file"}
_SSH_SCHEMES = {"ssh", "git+ssh", "ssh+git"}
# git's own names for the transports above; every other one (ext, fd, helpers) stays off.
_PROTOCOLS = ("https", "http", "ssh", "git", "file")
_BAD_REF_CHARS = "$~^:?*[\\"


class GitSourceError(Exception):
    """A Git source problem; str() is one line 'FIELD: message' and never contains a secret."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = " ".join(message.split())
        super().__init__(f"{field}: {self.message}")

    def __reduce__(self) -> tuple[type[GitSourceError], tuple[str, str]]:
        return (type(self), (self.field, self.message))


def _unprintable(text: str) -> bool:
    return any(ch.isspace() or not ch.isprintable() for ch in text)


def _is_scp_like(url: str) -> bool:
    """git's rule: `[user@]host:path` is ssh when a colon comes before any slash."""
    colon, slash = url.find(":"), url.find("/")
    return colon > 0 and (slash < 0 or colon < slash)


def _unsafe_url_reason(url: str) -> str | None:
    if _unprintable(url):
        return "contains whitespace or a control character"
    if url.startswith("-"):
        return "starts with '-' (would be read as an option)"
    if "::" in url:
        return "contains '::' (transport helper syntax)"
    if "$" in url:
        return "contains '$'"
    scheme = _SCHEME.match(url)
    if scheme:
        if scheme[1].lower() not in _SCHEMES:
            return f"unsupported scheme '{scheme[1]}' (use https, http, ssh, git, file or a local path)"
        host = re.split(r"[/?#]", url[scheme.end() :], maxsplit=1)[0]
    elif _is_scp_like(url):
        host = url.partition(":")[0]
    else:
        return None
    if host.startswith("-") or host.rpartition("@")[2].startswith("-"):
        return "host or user name starts with '-' (would be read as an option)"
    return None


def validate_url(url: str) -> None:
    """Refuse a repo URL that could make git run commands or read options; syntax only."""
    if not url:
        raise GitSourceError("ELT_REPO_URL", "URL is empty")
    reason = _unsafe_url_reason(url)
    if reason:
        raise GitSourceError("ELT_REPO_URL", f"refusing unsafe URL: {reason}")


def _bad_ref_reason(ref: str) -> str | None:
    parts = ref.split("/")
    checks = [
        (_unprintable(ref), "contains whitespace or a control character"),
        (ref.startswith("-"), "starts with '-'"),
        (".." in ref, "contains '..'"),
        ("@{" in ref, "contains '@{'"),
        (ref == "@", "is '@'"),
        (ref.endswith("/"), "ends with '/'"),
        (any(p.endswith(".lock") for p in parts), "ends with '.lock'"),
        ("" in parts, "has an empty path component"),
        (
            any(p.startswith(".") for p in parts) or ref.endswith("."),
            "a component starts or ends with '.'",
        ),
    ]
    reason = next((why for bad, why in checks if bad), None)
    if reason is None:
        bad_char = next((ch for ch in ref if ch in _BAD_REF_CHARS), None)
        reason = f"contains {bad_char!r}" if bad_char else None
    return reason


def validate_ref(ref: str) -> None:
    """Refuse a branch, tag or sha that git would reject or could read as an option."""
    if not ref:
        raise GitSourceError("ELT_REPO_BRANCH", "ref is empty")
    reason = _bad_ref_reason(ref)
    if reason:
        raise GitSourceError("ELT_REPO_BRANCH", f"invalid ref {ref!r}: {reason}")


def redact_url(url: str) -> str:
    """Strip the userinfo from https URLs (and the password from ssh ones); safe to show."""
    match = _USERINFO.match(url)
    if not match:
        return url
    user = match["userinfo"].partition(":")[0]
    keep = f"{user}@" if match["scheme"].lower() in _SSH_SCHEMES and user else ""
    return f"{match['scheme']}://{keep}{url[match.end() :]}"


def _local_path(url: str) -> Path | None:
    scheme = _SCHEME.match(url)
    if scheme:
        return Path(unquote(urlsplit(url).path)) if scheme[1].lower() == "file" else None
    if _is_scp_like(url):
        return None
    return Path(url).expanduser().absolute()


def _git_env(header: str | None) -> dict[str, str]:
    config = [
        ("protocol.allow", "never"),
        *((f"protocol.{p}.allow", "always") for p in _PROTOCOLS),
    ]
    config.append(("core.hooksPath", os.devnull))
    if header:
        config.append(("http.extraHeader", header))
    try:
        first = int(os.environ.get("GIT_CONFIG_COUNT") or 0)  # keep the caller's own entries
    except ValueError:
        first = 0
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",  # empty, not unset: also skips core.askPass and SSH_ASKPASS
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_ALLOW_PROTOCOL": ":".join(_PROTOCOLS),  # outranks protocol.allow, even the caller's
        "GIT_TRACE_REDACT": "1",
        "GIT_CONFIG_COUNT": str(first + len(config)),
    }
    for index, (key, value) in enumerate(config, start=first):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


@dataclass(frozen=True)
class GitUrl:
    """A validated remote: the URL git is given, the one shown, and the secrets kept apart."""

    git_url: str
    display: str
    local_path: Path | None
    is_http: bool
    has_credentials: bool
    auth_field: str
    env: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)

    def scrub(self, text: str) -> str:
        """Remove every secret, and any URL userinfo, from text that came out of git."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _USERINFO_ANYWHERE.sub(r"\1", text)


def parse_url(url: str, token: str | None = None) -> GitUrl:
    """Split a validated URL into what git sees and the credentials it gets as a header."""
    scheme = _SCHEME.match(url)
    is_http = scheme is not None and scheme[1].lower() in ("http", "https")
    local = _local_path(url)
    git_url = str(local) if local is not None and not scheme else url
    credentials: tuple[str, str] | None = None
    secrets: list[str] = []
    match = _USERINFO.match(url)
    from_url = bool(is_http and match and match["userinfo"])
    if from_url and match:
        user, _, password = match["userinfo"].partition(":")
        credentials = (unquote(user), unquote(password))
        secrets.append(match["userinfo"])
        git_url = redact_url(url)
    elif is_http and token:
        credentials = ("x-access-token", token)
    header = None
    if credentials:
        user, password = credentials
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        header = f"Authorization: Basic {basic}"
        # The password, or a user name that is really a token (https://TOKEN@host).
        secrets += [basic, password or user]
    return GitUrl(
        git_url=git_url,
        display=redact_url(url),
        local_path=local,
        is_http=is_http,
        has_credentials=credentials is not None,
        auth_field="ELT_REPO_URL" if from_url else "GITHUB_TOKEN",
        env=_git_env(header),
        secrets=tuple(sorted({s for s in secrets if s}, key=len, reverse=True)),
    )
