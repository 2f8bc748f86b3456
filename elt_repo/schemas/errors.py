"""Config errors as data: every problem names a file, a field and what is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigError:
    """One problem with one pipeline's config or with the repo itself."""

    path: str
    field: str
    message: str
    # The pipeline the error belongs to, and its group, when the folder says (for the UI).
    pipeline: str | None = None
    group: str | None = None
    # The environment failed, not the config: a source that did not answer, a variable unset,
    # a module missing. Such an error is not kept with the folder's tree hash: the next
    # refresh tries the folder again.
    retry: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "field": self.field, "message": self.message}
        data.update({k: v for k, v in (("pipeline", self.pipeline), ("group", self.group)) if v})
        if self.retry:
            data["retry"] = True
        return data


class ConfigException(ValueError):
    """Raised when a config cannot be loaded; carries the errors as values."""

    def __init__(self, errors: Iterable[ConfigError]):
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


def config_error(path: str, field: str, message: str, retry: bool = False) -> ConfigException:
    """A single problem, ready to raise; `retry` when the environment, not the config, failed."""
    return ConfigException([ConfigError(path, field, message, retry=retry)])


def flatten_messages(messages: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Turn marshmallow's nested error dict into (dotted.field, message) pairs."""
    out: list[tuple[str, str]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = prefix if key == "_schema" else f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_messages(value, name))
    elif isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            out.extend((prefix or "<root>", m) for m in messages)
        else:
            for item in messages:
                out.extend(flatten_messages(item, prefix))
    else:
        out.append((prefix or "<root>", str(messages)))
    return out
