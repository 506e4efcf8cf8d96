"""Reading a user's file on a client's behalf: only declared editable files, only regular files, bounded.

A client names files by URI. The daemon reads one from disk only when the client has no open buffer for it,
and only when it is one of the workspace's editable files (config ``editable``), a regular file (not a FIFO,
a device or a symlink out of the workspace) and at most ``MAX_FILE_BYTES`` — all checked before the first
byte is read, so a hover on ``/dev/zero``, a FIFO or a 300 MB file costs nothing and cannot block a worker.
The answer for every refused path is the same ``None``: the daemon does not reveal whether a path exists.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# A training script is kilobytes; a file this large is not one the loop could have edited.
MAX_FILE_BYTES = 4 * 1024 * 1024


def read_editable(root: Path, rel: str | None, editable: tuple[str, ...] | list[str]) -> str | None:
    """The text of the editable file ``rel`` under ``root``, or None (not editable, not regular, too big, unreadable)."""
    if rel is None or rel not in editable:
        return None
    path = root / rel
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the last component is not a link.
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
            return None
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:
            return None  # it grew past the limit while we read
        return b"".join(chunks).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
