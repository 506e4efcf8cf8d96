"""The discovery file: where a workspace's daemon listens, and the secret a client must present.

``.overnight/daemon.json`` holds port, pid and a fresh token; it is created with mode 0600 so only
the user can read the token, and it is removed when the daemon stops.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import psutil

NAME = "daemon.json"


@dataclass(frozen=True)
class Discovery:
    host: str
    port: int
    pid: int
    token: str
    # The daemon process's start time (psutil's create_time): a pid reused by another process is not the daemon.
    started: float | None = None

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            if self.started is not None:
                return bool(abs(proc.create_time() - self.started) < 1.0)
            return "overnight" in " ".join(proc.cmdline())  # a file from before start times were recorded
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def path(state_dir: Path) -> Path:
    return state_dir / NAME


def write(state_dir: Path, info: Discovery) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    target = path(state_dir)
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # O_EXCL with mode 0600: the token is never readable by anyone else, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        started = info.started if info.started is not None else psutil.Process(info.pid).create_time()
        json.dump({"host": info.host, "port": info.port, "pid": info.pid, "token": info.token, "started": started}, fh)
    os.replace(tmp, target)
    return target


def read(state_dir: Path) -> Discovery | None:
    """The running daemon's discovery record, or None (no file, unreadable, or its process is gone)."""
    try:
        raw = json.loads(path(state_dir).read_text())
        started = raw.get("started")
        info = Discovery(str(raw["host"]), int(raw["port"]), int(raw["pid"]), str(raw["token"]),
                         float(started) if isinstance(started, (int, float)) else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if info.alive() else None


def remove(state_dir: Path, pid: int) -> None:
    """Remove the file if it is still this daemon's (a newer daemon may have replaced it)."""
    try:
        raw = json.loads(path(state_dir).read_text())
    except (OSError, ValueError):
        return
    if raw.get("pid") == pid:
        path(state_dir).unlink(missing_ok=True)
