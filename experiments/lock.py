"""A lock on the run directory, so that two processes never run the same configuration at once.

The lock is the kernel's (``flock`` on ``<run_dir>/.lock``), not the file's existence: the kernel
grants it to one process at a time and releases it when that process exits however it exits, so
there is no stale lock to judge, no pid that could have been reused or belong to someone else, and
no moment when a half-written lock file is read. The file holds the owner's host and pid only so
that a refused process can say who holds it. After taking the lock, the holder checks that the path
still names the file it locked (a releasing holder unlinks it; a process that opened it just before
would otherwise hold a lock on a file no one else sees) and tries again if not.

Locks are as reliable as the file system's ``flock``: local disks and NFSv4 honour it across
processes; on a file system that ignores it, two hosts could run the same configuration at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path


class RunLocked(RuntimeError):
    """The run directory is locked by another live process."""


def owner(path: Path) -> dict | None:
    """Who the lock file says holds it (host and pid), or None when there is none or it is empty
    (a lock being written, or one released)."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_locked(path: Path) -> bool:
    """Whether some process holds the lock at ``path`` now (this process's own other handles
    included): a shared lock that cannot be had means an exclusive one is held."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a shared lock taken here
    return False


class RunLock:
    """``with RunLock(run_dir / ".lock"):`` — exclusive, released on exit or when the process
    ends; raises :class:`RunLocked` at once when another process holds it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        for _ in range(100):  # each retry means a holder released and unlinked in between
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                info = owner(self.path) or {}
                raise RunLocked(
                    f"running elsewhere: {self.path.parent} (host {info.get('host', '?')}, "
                    f"pid {info.get('pid', '?')})"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # locked a file its holder has just unlinked: take the new one
                os.close(fd)
                continue
            me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, me, 0)
            self.fd = fd
            return self
        raise RunLocked(f"could not take the lock {self.path}")

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        # unlink while still holding it, so that no one takes a lock on a file about to vanish
        # unnoticed (a process that opened it before is sent back by the inode check above)
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
