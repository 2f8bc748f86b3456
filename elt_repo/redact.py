"""Keep secrets out of messages: URL credentials, the values of secret-named variables, and
the secrets this process resolved for its own connections.

Also `plain`, which takes the terminal codes out of what a tool printed, before it is shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|CREDENTIAL|PRIVATE_KEY", re.I)
# Shorter values (say "1" or "yes") would mask ordinary words; real secrets are longer.
_MIN_SECRET_LENGTH = 6
# Secrets this process resolved for its own connections (the warehouse's password), whatever
# variable they came from, or none: a literal password in ELT_WAREHOUSE.
_REMEMBERED: set[str] = set()


def remember_secret(value: str) -> None:
    """Mask `value` in everything `redact` returns from now on, in this process."""
    if len(value) >= _MIN_SECRET_LENGTH:
        _REMEMBERED.add(value)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values of variables whose names say they are secret, longest first."""
    values = {
        value
        for name, value in environ.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with URL userinfo, every secret variable's value and every remembered secret
    replaced by ***."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    values = {*secret_values(os.environ if environ is None else environ), *_REMEMBERED}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """`text` without terminal colour and cursor codes, which Sling writes into its errors."""
    return _ANSI.sub("", text)
