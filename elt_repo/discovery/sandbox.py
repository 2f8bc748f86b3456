"""The discovery workers' sandbox: pipeline code listed at refresh cannot harm the refresher.

A worker (`dlt_inspect --serve`) calls `enter` before it imports dlt or any pipeline code. It
forks: the parent stays behind as a small keeper, and the child, the worker proper, runs:

- in its own PID namespace, where it is process 1. It cannot see or signal the refresher
  (`os.getppid()` is 0 there), every orphan is its child, and `sweep` after each listing kills
  every other process in the namespace, `setsid` children included. When the worker dies,
  the kernel kills whatever is left in it.
- in its own mount namespace, where every mount is read-only and locked so, behind a user
  namespace: nothing can be written, the worktree and the state dir included, except a small
  private tmpfs for HOME, TMPDIR and dlt's data dir. A fresh /proc shows only the namespace.
- under a memory limit (RLIMIT_AS) and, per listing, a CPU-time limit (RLIMIT_CPU).

Where the kernel refuses namespaces (containers whose seccomp profile blocks `unshare`),
`ELT_DISCOVERY_SANDBOX=auto` keeps the limits and the keeper: the keeper is the worker's
parent, so killing the parent kills only the keeper, and it is a subreaper that kills the
worker's orphans. `required` refuses to list without namespaces; `off` keeps only the limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
from dataclasses import dataclass

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
_SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and aarch64
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY = 0x1
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 36, 38
SCRATCH = "/dev/shm"  # exists on every Linux; the sandbox mounts a private tmpfs there
SCRATCH_SIZE = "64m"


class SandboxError(Exception):
    """The sandbox could not be set up."""


@dataclass(frozen=True)
class Limits:
    """What a discovery worker may use (ELT_DISCOVERY_MEMORY_MB, _CPU_SECONDS, _SANDBOX)."""

    memory_mb: int = 2048  # address space of each process; 0: unlimited
    cpu_seconds: int = 60  # CPU time of one listing; 0: unlimited
    mode: str = "auto"

    def argv(self) -> list[str]:
        """The worker's command-line arguments; `from_argv` reads them back."""
        memory, cpu = f"--memory-mb={self.memory_mb}", f"--cpu-seconds={self.cpu_seconds}"
        return [memory, cpu, f"--sandbox={self.mode}"]

    @classmethod
    def from_argv(cls, argv: list[str]) -> Limits:
        values = dict(a.lstrip("-").split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        return cls(
            int(values.get("memory-mb", cls.memory_mb)),
            int(values.get("cpu-seconds", cls.cpu_seconds)),
            values.get("sandbox", cls.mode),
        )

    def memory_message(self) -> str:
        return (
            f"the listing used more than its memory limit of {self.memory_mb} MiB "
            "(ELT_DISCOVERY_MEMORY_MB)"
        )

    def cpu_message(self) -> str:
        return (
            f"the listing used more than its CPU-time limit of {self.cpu_seconds} s "
            "(ELT_DISCOVERY_CPU_SECONDS)"
        )


_libc = ctypes.CDLL(None, use_errno=True)
_pid_namespace = False  # this process is the worker, process 1 of its own PID namespace
_isolated = False  # and its mounts are read-only, with a scratch tmpfs


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(errno)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _refuse_unless_optional(limits: Limits, exc: Exception) -> None:
    """With ELT_DISCOVERY_SANDBOX=required, a sandbox that cannot be made ends the worker."""
    if limits.mode == "required":
        sys.stderr.write(f"no discovery sandbox: {exc} (ELT_DISCOVERY_SANDBOX=required)\n")
        sys.stderr.flush()
        os._exit(3)


def _own_user_namespace() -> None:
    """A user namespace mapping only our own uid and gid to themselves."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(_CLONE_NEWUSER), "unshare(user)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    result = _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data))
    _check(result, f"mount {target}")


def _read_only_everywhere() -> None:
    """Every mount read-only, then a private tmpfs for scratch and a /proc of our own."""

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "propagation", "userns_fd")]

    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    attr = MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
    result = _libc.syscall(
        _SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    _check(result, "mount_setattr / read-only")
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    _mount("tmpfs", SCRATCH, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={SCRATCH_SIZE},mode=1777")


def _isolate() -> None:
    """In the child of the keeper, as process 1 of the new PID namespace."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    _read_only_everywhere()
    # A second user namespace: the mounts belong to the first, so nothing here may undo them.
    _own_user_namespace()
    for var in ("HOME", "TMPDIR"):
        os.environ[var] = SCRATCH
    os.environ["DLT_DATA_DIR"] = f"{SCRATCH}/dlt"  # dlt.pipeline() at import writes here


def _keep(child: int, limits: Limits) -> None:
    """The keeper: wait for the worker, say how it died, and leave nothing of it behind."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # only the worker answers on stdout

    def _stop(*_: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)

    signal.signal(signal.SIGTERM, _stop)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    _sweep_children()
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0
    if os.WIFSIGNALED(status) or code > 128:  # the init passes the worker's signal on as 128+N
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else code - 128
        if sig == signal.SIGXCPU:
            sys.stderr.write(limits.cpu_message() + "\n")
        elif sig != signal.SIGKILL and sig in signal.valid_signals():
            sys.stderr.write(f"the worker was killed by {signal.Signals(sig).name}\n")
        sys.stderr.flush()
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def _init(worker: int) -> None:
    """Process 1 of the namespace: reap every orphan; when the worker ends, end the same way."""
    os.closerange(0, 3)  # it answers nothing, and keeps no pipe open
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
        if pid == worker:
            os._exit(
                128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            )


def enter(limits: Limits) -> str:
    """Set up this worker's sandbox; returns how it is isolated, for the log.

    Returns only in the worker; the calling process becomes the keeper and never returns.
    """
    global _isolated, _pid_namespace
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a limit's SIGXCPU leaves no core file
    how = "limits only (ELT_DISCOVERY_SANDBOX=off)"
    namespaces = False
    if limits.mode != "off":
        try:
            # The same steps for root and for any other user: a user namespace first, which
            # owns the mount namespace, so that the worker's own second one cannot undo it.
            _own_user_namespace()
            _check(_libc.unshare(_CLONE_NEWNS | _CLONE_NEWPID), "unshare(mount, pid)")
            namespaces = True
        except (SandboxError, OSError) as exc:
            _refuse_unless_optional(limits, exc)
            how = f"limits only: the kernel refused namespaces ({exc})"
    if not namespaces:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the worker's orphans come to the keeper
    child = os.fork()
    if child:
        _keep(child, limits)
    if namespaces:
        try:
            _isolate()
            _isolated = True
            how = "namespaces: own PID namespace, read-only mounts"
        except (SandboxError, OSError) as exc:
            _refuse_unless_optional(limits, exc)
            how = f"own PID namespace only: {exc}"
        # Process 1 of a namespace ignores the signals it has no handler for, a limit's SIGXCPU
        # included, and reaps the orphans: a small init does that, the worker is process 2.
        worker = os.fork()
        if worker:
            _init(worker)
        _pid_namespace = True
    else:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of what it starts: ours
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if limits.memory_mb:
        size = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    return how


def limit_cpu(limits: Limits) -> None:
    """Before a listing: at most `cpu_seconds` more CPU time, else SIGXCPU ends the worker."""
    if not limits.cpu_seconds:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime) + 1 + limits.cpu_seconds
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def sweep() -> None:
    """After a listing: no process it started is left, `setsid` children included."""
    if _pid_namespace:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # everyone in the namespace but us and its init
        _reap()
        if _isolated:
            _clear_scratch()
    else:
        _sweep_children()


def _reap() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def _sweep_children() -> None:
    """Without a PID namespace: kill our children until none is left. As a subreaper, the
    orphans of each killed process become our children in turn."""
    for _ in range(100):
        children = _children()
        if not children:
            return
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _clear_scratch() -> None:
    """What one listing left in the scratch tmpfs is not the next one's to read."""
    import shutil

    for entry in os.scandir(SCRATCH):
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
