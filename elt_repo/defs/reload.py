"""Asking dagster-webserver to reload the code location, for the sensor and refresh.py."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

RELOAD_TIMEOUT = 120  # seconds: the webserver answers once the location has loaded again


def reload_location(url: str, location: str, timeout: float = RELOAD_TIMEOUT) -> str | None:
    """Ask the webserver at `url` to reload `location` and wait; None, or why it failed.

    `url` may carry a path prefix, https, and `user:password@`, sent as basic auth; the
    password never appears in the returned reason.
    """
    from dagster_graphql import DagsterGraphQLClient, ReloadRepositoryLocationStatus
    from requests.auth import HTTPBasicAuth

    parts = urlsplit(url)
    auth = None
    if parts.username:  # https://user:password@host: sent as basic auth, never shown
        auth = HTTPBasicAuth(unquote(parts.username), unquote(parts.password or ""))
    try:
        client = DagsterGraphQLClient(
            parts.hostname or "127.0.0.1",
            port_number=parts.port,
            use_https=parts.scheme == "https",
            path_prefix=parts.path.rstrip("/"),
            timeout=int(timeout),
            auth=auth,
        )
        info = client.reload_repository_location(location)
    except Exception as exc:  # unreachable, an HTTP error, or not a GraphQL answer
        reason = _reason(exc, timeout)
    else:
        if info.status == ReloadRepositoryLocationStatus.SUCCESS:
            return None
        message = " ".join(str(info.message or "").split())[:500]
        reason = f"{info.failure_type}: {message}" if message else str(info.failure_type)
    return reason.replace(parts.password, "***") if parts.password else reason


def _reason(exc: BaseException, timeout: float) -> str:
    """One line for a failed GraphQL call: the root cause, not the client's query dump."""
    import requests

    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (is dagster-webserver running?)"
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
