"""watchdog on the user's program.md and editable files: their own edits, from any editor or a git checkout.

Editors save in bursts (write, rename over, touch) and a checkout writes many files at once, so
events are collected and delivered once things have been quiet for ``settle`` seconds, as the set
of watched paths whose *content* changed since the last delivery (a touch is not a change).
Only the files' directories are watched, not the whole tree: ``.overnight/`` (the loop's own
worktrees) never produces an event here.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("overnight.daemon")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class UserFileWatcher(FileSystemEventHandler):
    def __init__(self, root: Path, paths: Iterable[str], on_change: Callable[[list[str]], None],
                 settle: float = 0.5) -> None:
        self.root = root.resolve()
        self.paths = {(self.root / rel).resolve(): rel for rel in paths}
        self.on_change = on_change
        self.settle = settle
        self._digests = {rel: _digest(path) for path, rel in self.paths.items()}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        observer = Observer()
        for directory in sorted({path.parent for path in self.paths}):
            if directory.is_dir():
                observer.schedule(self, str(directory), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)

    def on_any_event(self, event: FileSystemEvent) -> None:
        touched = [event.src_path, getattr(event, "dest_path", "")]
        if not any(p and Path(str(p)).resolve() in self.paths for p in touched):
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.settle, self._deliver)
            self._timer.daemon = True
            self._timer.start()

    def _deliver(self) -> None:
        changed = []
        for path, rel in self.paths.items():
            digest = _digest(path)
            if digest is not None and digest != self._digests.get(rel):
                changed.append(rel)
            self._digests[rel] = digest
        if changed:
            log.info("your change to %s: the loop syncs with it after the experiment in flight", ", ".join(changed))
            try:
                self.on_change(changed)
            except Exception:  # a failing listener must not kill the watcher thread
                log.exception("handling a change of %s failed", changed)
