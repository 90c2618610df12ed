"""One run per work dir: an exclusive lock file ``<work_dir>/.lock``.

Two runs on one work dir overwrite each other's checkpoints, write into one log and one ``scalars.json``
and delete each other's unfinished checkpoint files. :func:`lock_work_dir` stops the second run at once.

The lock is an ``flock`` on the open ``.lock`` file, held for the life of the process: the kernel
releases it when the process ends, even by SIGKILL. The file records the holder (pid, host, start time,
command) for the refusal message. A file left behind by a process that is gone is taken over with a
warning; one left by another host is refused (that host's run may be alive: this one cannot tell).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmengine.logging import print_log

#: Name of the lock file inside the work dir.
LOCK_NAME = ".lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 probes without signalling)."""
    if pid <= 0:  # 0 and negative pids name process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {started}"
        f" ({holder.get('command', '?')})"
    )


def _read_holder(fd: int) -> dict | None:
    """The holder recorded in the lock file, or None when it is empty or unreadable (being written)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = b""
    while chunk := os.read(fd, 65536):
        text += chunk
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _flock(fd: int) -> bool | None:
    """Try to lock ``fd`` without waiting: True when locked, False when another process holds it, None
    when the file system has no ``flock`` (then the recorded pid decides)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
            return None
        raise
    return True


def _acquire(path: Path) -> int:
    """Lock ``path`` and record this process in it; returns the open fd. Raises SystemExit (a one-line
    message naming the holder) when another run holds it."""
    host = socket.gethostname()
    busy = f"work dir {path.parent} is in use by "
    refusal = ": refusing to start; stop that run or choose another work dir"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        locked = _flock(fd)
        holder = _read_holder(fd)
        try:
            if locked is False:
                raise SystemExit(busy + (_describe(holder) if holder else "another process") + refusal)
            if holder and holder.get("host") != host:
                raise SystemExit(
                    f"{busy}{_describe(holder)}, which this host cannot check: refusing to start; "
                    f"if that run has ended, delete {path}"
                )
            if holder and locked is None and pid_alive(int(holder.get("pid", -1))):
                raise SystemExit(busy + _describe(holder) + refusal)
        except SystemExit:
            os.close(fd)
            raise
        # the previous holder may have unlinked the file between our open and our lock: lock the new one
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    if holder:
        print_log(
            f"work dir {path.parent}: taking over the stale lock of {_describe(holder)}, which has ended",
            logger="current",
            level=logging.WARNING,
        )
    record = dict(pid=os.getpid(), host=host, started=time.time(), command=shlex.join(sys.argv))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)
    return fd


@contextmanager
def lock_work_dir(work_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<work_dir>/.lock`` (creating the work dir) for the ``with`` block; yields the lock's path.

    Exits with a message naming the holder's pid, host and start time when another live run holds it;
    takes over, with a warning, a lock left by a process of this host that has ended. The file is
    removed on leaving the block; after a crash the kernel drops the lock and the next run takes over.
    """
    path = Path(work_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked: a run waiting on this file retries on a fresh one
        os.close(fd)
