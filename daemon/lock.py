"""One loop per workspace: an advisory lock on a file in ``.overnight/``.

The kernel drops the lock when the holder dies, kill -9 included, so a stale lock file never
blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class WorkspaceBusy(RuntimeError):
    """Another loop already runs on this workspace."""


class WorkspaceLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "loop.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkspaceBusy(
                f"another Overnight loop (pid {holder}) is already running on this workspace; "
                "one loop per workspace — stop it first (Ctrl-C in its terminal)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkspaceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
