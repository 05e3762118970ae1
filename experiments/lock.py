"""A lock file in the run directory, so that two processes never run the same configuration at once.

The lock holds the owner's host name and process id. A lock whose process is gone (killed, crashed)
is stale and is taken over; a lock held by a live process makes the second process report that the
run is running elsewhere and leave it alone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path


class RunLocked(RuntimeError):
    """The run directory is locked by another live process."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner(path: Path) -> dict | None:
    """The lock's owner, or None when there is no lock or it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def held_by_live_process(path: Path) -> bool:
    info = owner(path)
    return (
        bool(info) and info.get("host") == socket.gethostname() and _alive(int(info.get("pid", -1)))
    )


class RunLock:
    """``with RunLock(run_dir / ".lock"):`` — exclusive, released on exit, stale locks taken over."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> RunLock:
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = owner(self.path)
                if held_by_live_process(self.path) or (
                    info and info.get("host") != socket.gethostname()
                ):
                    raise RunLocked(
                        f"running elsewhere: {self.path.parent} (host {info.get('host')}, pid {info.get('pid')})"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return self
        raise RunLocked(f"could not take the lock {self.path}")

    def __exit__(self, *exc) -> None:
        info = owner(self.path)
        if info and info.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
