"""The session's pinned harness, its pinned data, and the interpreter environment runs must not change.

When a session starts, its frozen files (``prepare.py``) are copied out of the worktree into
``.overnight/harness/<tag>/`` and hashed. Every evaluation runs that copy, in isolated mode (``python -I``), in
its own sandbox, and the copy is re-hashed before each one: nothing a candidate writes is ever executed by the
evaluator. The worktree's own frozen files are hashed before *and after* every run as well.

The environment fingerprint covers what Python executes on its own at start-up from outside any script: ``.pth``
files and ``sitecustomize``/``usercustomize`` in the interpreter's site directories. A sealed run cannot write
them (the filesystem is read-only to it); the check catches an unsealed one that does, and anything else that
changed the interpreter mid-session.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from functools import partial
from pathlib import Path

from .executor import DataPin, resolve_command
from .sandbox import die_with_parent


class HarnessError(RuntimeError):
    """The pinned harness or its data cannot be used: the message says why and what to do."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned_dir(state_dir: Path, tag: str) -> Path:
    return state_dir / "harness" / tag


def pin(state_dir: Path, tag: str, sources: dict[str, bytes], hashes: dict[str, str]) -> Path:
    """Write the session's copy of its frozen files (workspace-relative path → content), checked against ``hashes``.

    Written to a temporary folder and renamed, so a kill leaves either no copy or a whole one."""
    target = pinned_dir(state_dir, tag)
    if target.is_dir() and check(target, hashes) is None:
        return target
    for rel, content in sources.items():
        if hashlib.sha256(content).hexdigest() != hashes.get(rel):
            raise HarnessError(f"{rel} is not the version session {tag!r} was started with: its hash differs")
    tmp = target.with_name(f".{tag}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)  # even for no files: the rename below needs its source
    for rel, content in sources.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o444)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def check(directory: Path, hashes: dict[str, str]) -> str | None:
    """None when every pinned file still hashes as the session recorded; otherwise what differs."""
    for rel, digest in hashes.items():
        path = directory / rel
        try:
            if path.is_symlink() or _sha256(path) != digest:
                return f"the session's pinned harness file {rel} changed: evaluation refused"
        except OSError:
            return f"the session's pinned harness file {rel} is missing: evaluation refused"
    return None


def isolated(command: tuple[str, ...]) -> list[str]:
    """The command run by the interpreter in isolated mode: no PYTHONPATH, no user site, not the script's folder."""
    argv = resolve_command(command)
    if command and command[0] == "{python}":
        argv.insert(1, "-I")
    return argv


def prepare_data(harness: Path, workdir: str, prepare: tuple[str, ...]) -> DataPin | None:
    """Build or verify the corpus with the pinned harness; its last stdout line pins the data for the session.

    None when the harness does not report its data (a custom harness): then nothing is pinned."""
    stdout = _run_prepare(harness, workdir, prepare, "the harness could not prepare the data")
    try:
        pinned = json.loads(stdout.strip().splitlines()[-1])
        directory = Path(str(pinned["data_dir"]))
        training = tuple(str(n) for n in pinned.get("training_files", ("manifest.json", "train.bin")))
        hidden = tuple(Path(str(p)) for p in pinned.get("hidden_sources", ()))
        return DataPin(directory=directory, manifest_sha256=str(pinned["manifest_sha256"]), training_files=training,
                       hidden_sources=hidden)
    except (IndexError, ValueError, KeyError, TypeError, AttributeError):
        return None


def prepare_reported(harness: Path, workdir: str, prepare: tuple[str, ...]) -> None:
    """Reported mode: run the (optional) prepare command once per start; nothing is pinned, since the script
    reads and scores its own data."""
    if prepare:
        _run_prepare(harness, workdir, prepare, "the prepare command failed")


def _run_prepare(harness: Path, workdir: str, prepare: tuple[str, ...], failure: str) -> str:
    """The prepare command, from the pinned copy of the frozen files; its stdout, or a HarnessError saying why not."""
    proc = subprocess.run(isolated(prepare), cwd=harness / workdir, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=_data_env(), preexec_fn=partial(die_with_parent, os.getpid()))
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[-3:]
        raise HarnessError(f"{failure}:\n  " + "\n  ".join(detail))
    return proc.stdout


def _data_env() -> dict[str, str]:
    """The harness's own environment: the daemon's, minus anything that changes how Python starts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


# -- the interpreter's environment ----------------------------------------------------------------------


def _site_dirs() -> list[Path]:
    dirs = {Path(p) for p in site.getsitepackages() if p}
    for key in ("purelib", "platlib"):
        dirs.add(Path(sysconfig.get_paths()[key]))
    user = site.getusersitepackages()
    if user:
        dirs.add(Path(user))
    dirs.add(Path(sysconfig.get_paths()["stdlib"]))
    return sorted(d for d in dirs if d.is_dir())


def environment_fingerprint() -> dict[str, str]:
    """Path → sha256 of every file Python runs by itself at start-up: ``*.pth``, ``sitecustomize``, ``usercustomize``."""
    found: dict[str, str] = {}
    for directory in _site_dirs():
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for path in entries:
            name = path.name
            if name.endswith(".pth") or name.split(".")[0] in ("sitecustomize", "usercustomize"):
                try:
                    found[str(path)] = _sha256(path) if path.is_file() else "not a file"
                except OSError:
                    found[str(path)] = "unreadable"
    found["sys.executable"] = sys.executable
    return found


def environment_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changed = [p for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]
    return changed
