"""Reading a pipeline's files as untrusted input: bounded, total, and inside its folder.

Every file a pipeline's config names resolves, symlinks followed, inside the pipeline's folder;
it is a regular file (no device, FIFO or socket), under a size limit, UTF-8 without a byte-order
mark. Its YAML has no duplicate keys, nests no deeper than a limit, and does not expand past a
node limit through aliases. Anything else is a ConfigError naming the file and what is wrong,
so one bad file is one pipeline's error, never a refresh's crash.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from elt_repo.schemas import ConfigError, config_error

MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64
# Values a document may expand to, aliases followed: an alias bomb is a few lines of text that
# expand to billions, and walking it (to validate, to render a replication) runs out of memory.
MAX_YAML_NODES = 100_000


def confined(path: Path, folder: Path, rel: str, field: str) -> Path:
    """`path` resolved, symlinks followed; a config error unless it is inside `folder`."""
    shown = os.path.relpath(path, folder)
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        problem = "is a symlink to nothing" if path.is_symlink() else "not found"
        raise config_error(rel, field, f"{shown} {problem}") from None
    except (OSError, RuntimeError) as exc:  # a symlink loop: ELOOP, or RuntimeError
        raise config_error(rel, field, f"{shown} cannot be resolved: {_reason(exc)}") from None
    root = folder.resolve()
    if resolved != root and root not in resolved.parents:
        raise config_error(rel, field, f"{shown} resolves outside the pipeline folder")
    return resolved


def read_text(path: Path, folder: Path, rel: str, field: str, limit: int = MAX_YAML_BYTES) -> str:
    """A pipeline file's text: inside its folder, a regular file of at most `limit` bytes,
    valid UTF-8 with no byte-order mark."""
    resolved = confined(path, folder, rel, field)
    try:
        mode = os.stat(resolved).st_mode
        if not stat.S_ISREG(mode):
            raise config_error(rel, field, f"not a regular file ({_kind(mode)})")
        with open(resolved, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise config_error(rel, field, f"cannot be read: {_reason(exc)}") from None
    if len(data) > limit:
        raise config_error(rel, field, f"larger than {limit // 1024} KiB")
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        raise config_error(
            rel, field, "starts with a byte-order mark; save it as UTF-8 without one"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise config_error(
            rel, field, f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line}"
        ) from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and documents nested or expanding past a limit."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _Limit(f"nested deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges; the keys written beside it win, as in YAML
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _Limit(
                        f"duplicate key {key!r} at line {line} (first at line {seen[key]})"
                    )
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: SafeLoader's own error says so
        return super().construct_mapping(node, deep=deep)


class _Limit(Exception):
    pass


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values `node` stands for with every alias expanded (shared nodes counted each time)."""
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, done = stack.pop()
        if id(current) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [n for pair in current.value for n in pair]
        if done or not children:
            sizes[id(current)] = 1 + sum(sizes.get(id(c), 0) for c in children)
        else:
            stack.append((current, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(node)]


def load_yaml(text: str, rel: str, field: str) -> Any:
    """One YAML document, parsed safely and within the limits."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise _Limit(f"expands to more than {MAX_YAML_NODES} values through aliases")
        return loader.construct_document(node)
    except _Limit as exc:
        raise config_error(rel, field, f"invalid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise config_error(rel, field, f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise config_error(rel, field, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, folder: Path, rel: str, field: str) -> Any:
    """A pipeline's YAML file, read and parsed within every limit above."""
    return load_yaml(read_text(path, folder, rel, field), rel, field)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


__all__ = ["ConfigError", "confined", "load_yaml", "read_text", "read_yaml"]
