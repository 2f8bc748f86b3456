"""A watchdog for a known hang of Sling's DuckDB writer.

Under load, about one `sling run` into DuckDB in 150 stops for good after "streaming data":
Sling waits on a lock, the DuckDB CLI it feeds waits on its stdin pipe, and neither uses any
CPU again (Sling 1.4.11 with the DuckDB CLI 1.5.5; 1 of 157 runs, four at a time, on this
machine). A step would wait forever. The watch sees that state (the whole Sling process tree
idle, a child blocked reading a pipe) for `stall_seconds`, and kills the tree, so that the
run fails or is tried again instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from types import TracebackType


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks used) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _processes() -> dict[int, tuple[int, int]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat
    return found


def _tree(root: int, processes: dict[int, tuple[int, int]]) -> list[int]:
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(p for p, (parent, _) in processes.items() if parent == pid)
    return tree


def _reads_a_pipe(pid: int) -> bool:
    try:
        return "pipe_read" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def _is_sling(pid: int, binary: str) -> bool:
    """The Sling binary, or a script named like it (argv[1] of its interpreter)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
    except OSError:
        return False
    names = [a.decode(errors="replace") for a in argv]
    return binary in names or any(Path(n).name.startswith("sling") for n in names)


class StallWatch:
    """While in use, kills any Sling child of this process that has stalled as above."""

    def __init__(self, binary: str, stall_seconds: float, poll_seconds: float = 1.0):
        self.binary = binary
        self.stall_seconds = stall_seconds
        self.poll_seconds = poll_seconds
        self.stalled = False  # a stalled Sling was killed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="elt-sling-stall", daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        idle: dict[int, tuple[int, float]] = {}  # sling pid -> (CPU ticks, idle since)
        while not self._stop.wait(self.poll_seconds):
            processes = _processes()
            mine = os.getpid()
            roots = [
                p
                for p, (parent, _) in processes.items()
                if parent == mine and _is_sling(p, self.binary)
            ]
            now = time.monotonic()
            for root in roots:
                tree = _tree(root, processes)
                ticks = sum(processes[p][1] for p in tree if p in processes)
                blocked = any(_reads_a_pipe(p) for p in tree[1:])
                last = idle.get(root)
                if not blocked or last is None or last[0] != ticks:
                    idle[root] = (ticks, now)
                elif now - last[1] >= self.stall_seconds:
                    self.stalled = True
                    for pid in reversed(tree):
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
            for gone in set(idle) - set(roots):
                idle.pop(gone)
