"""Bad input, table-driven, through the real CLI in a subprocess: every case exits 1 or 2 with one line that names
what is wrong, never a traceback — and nothing is lost (a damaged journal is kept, not overwritten)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from overnight.daemon.journal import Journal

from ..conftest import git, write_config

_CLI = [sys.executable, "-m", "overnight.daemon.cli"]


def _cli(root: Path, *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run([*_CLI, "-C", str(root), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "400"})
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return proc.returncode, lines


def _one_line_error(rc: int, lines: list[str], *words: str) -> None:
    assert rc in (1, 2), (rc, lines)
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "error" in lines[0], lines
    for word in words:
        assert word in lines[0], (word, lines)


# (arguments, words the message must contain)
ARGUMENTS = [
    (("run", "--budget", "nan"), ("--budget", "finite")),
    (("run", "--budget", "inf"), ("--budget", "finite")),
    (("run", "--budget", "1e9", "--max-experiments", "0"), ("budget", "604800")),
    (("run", "--budget", "-5", "--max-experiments", "0"), ("budget",)),
    (("run", "--slots", "0"), ("--slots",)),
    (("run", "--max-experiments", "-1"), ("--max-experiments",)),
    (("daemon", "--port", "99999"), ("--port", "65535")),
    (("show", "99999999999999999999999"), ("id",)),
    (("show", "x"), ("id", "whole number")),
    (("budget", "nan"), ("seconds", "finite")),
    (("frobnicate",), ("invalid choice",)),
    (("run", "--agent", "replay", "--replay-file", "missing.jsonl", "--max-experiments", "0"), ("replay file", "missing")),
]


@pytest.mark.parametrize(("args", "words"), ARGUMENTS, ids=[" ".join(a) for a, _ in ARGUMENTS])
def test_bad_arguments(make_workspace: Callable[..., Path], args: tuple[str, ...], words: tuple[str, ...]) -> None:
    root = make_workspace()
    _one_line_error(*_cli(root, *args), *words)


# (a line of overnight.toml, words the message must contain)
CONFIG = [
    ("memory_limit_gb = -1", ("memory_limit_gb",)),
    ("grace = -100", ("grace",)),
    ('workdir = "../../.."', ("../../..", "inside the workspace")),
    ('editable = ["/etc/passwd"]', ("/etc/passwd",)),
    ("budget = nan", ("budget",)),
    ("budget = inf", ("budget",)),
    ("budget = 1e9", ("budget",)),
    ('budget = "60"', ("budget",)),
    ("threads = -2", ("threads",)),
    ("alpha = 2", ("alpha",)),
    ("run = []", ("run",)),
    ('network = "yes"', ("network", "true or false")),
    ("sandbox = 3", ("sandbox",)),
    ('sandbox = "docker"', ("sandbox", "bwrap")),
    ("keep_sigma = 2", ("keep_sigma", "no longer")),
    ("no_such_key = 1", ("no_such_key",)),
    ("budget = ", ("overnight.toml",)),  # not TOML
]


@pytest.mark.parametrize(("line", "words"), CONFIG, ids=[line for line, _ in CONFIG])
def test_bad_config(make_workspace: Callable[..., Path], line: str, words: tuple[str, ...]) -> None:
    root = make_workspace()
    config = root / "overnight.toml"
    key = line.split("=")[0].strip()
    kept = [x for x in config.read_text().splitlines() if x.split("=")[0].strip() != key]
    config.write_text(line + "\n" + "\n".join(kept) + "\n")
    _one_line_error(*_cli(root, "run", "--max-experiments", "0"), *words)
    _one_line_error(*_cli(root, "results"), *words)


def test_config_and_replay_files_that_are_not_utf8(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace()
    (root / "bad.jsonl").write_bytes(b'{"description": "x\xff"}\n')
    _one_line_error(*_cli(root, "run", "--agent", "replay", "--replay-file", str(root / "bad.jsonl"),
                          "--max-experiments", "0"), "UTF-8")
    config = root / "overnight.toml"
    config.write_bytes(config.read_bytes() + b"# \xff\n")
    _one_line_error(*_cli(root, "results"), "UTF-8")


def _journal_with_history(path: Path) -> None:
    """A real journal with a session and a few hundred experiments (several pages), written by the Journal."""
    from overnight.daemon.journal import Session

    journal = Journal(path)
    journal.create_session(Session("t1", "overnight/t1", "0" * 40, {}, {}, 0.0))
    for i in range(300):
        journal.start_experiment(tag="t1", kind="experiment", parent_commit="0" * 40, agent="replay",
                                 description=f"experiment {i} " + "x" * 200)
    journal.close()


def test_a_damaged_journal_is_named_and_rebuilt_by_doctor_keeping_the_original(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace()
    path = root / ".overnight" / "journal.db"
    _journal_with_history(path)
    git(root, "branch", "overnight/t1")
    # Damage a page in the middle (a disk error, a bad copy): the header and most pages stay readable.
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle:middle + page] = b"\xde\xad" * (page // 2)
    path.write_bytes(bytes(data))
    damaged_bytes = bytes(data)
    for args in (("results",), ("show", "1"), ("run", "--max-experiments", "0")):
        _one_line_error(*_cli(root, *args), "damaged", "overnight doctor")
    rc, lines = _cli(root, "doctor")
    assert rc == 1 and any("journal" in line and "damaged" in line for line in lines), lines
    assert path.read_bytes() == damaged_bytes  # a check writes nothing
    rc, lines = _cli(root, "doctor", "--repair")
    assert rc == 0, lines
    kept = [p for p in path.parent.glob("journal.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes  # the damaged file, untouched, beside the new one
    assert Journal.check(path) == []
    db = sqlite3.connect(path)
    saved = db.execute("SELECT count(*) FROM experiments").fetchone()[0]
    db.close()
    assert 100 < saved < 300  # what the damaged page held is gone, the rest is back
    # (JSON: the experiments are all in flight, which autoresearch's tsv has no row for.)
    rc, lines = _cli(root, "results", "--format", "json")
    assert rc == 0 and sum('"id":' in line for line in lines) == saved


def test_a_journal_on_a_read_only_folder(make_workspace: Callable[..., Path]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through read-only permissions: this case needs an ordinary user")
    root = make_workspace()
    state = root / ".overnight"
    state.mkdir(exist_ok=True)
    state.chmod(0o500)
    try:
        _one_line_error(*_cli(root, "results"), "journal")
    finally:
        state.chmod(0o700)


def test_a_stale_daemon_file_naming_a_live_stranger_does_not_block_a_start(make_workspace: Callable[..., Path]) -> None:
    import json

    root = make_workspace()
    write_config(root, agent="replay", replay_file="none.jsonl")
    state = root / ".overnight"
    state.mkdir(exist_ok=True)
    # pid 1 is alive and is not an Overnight daemon.
    (state / "daemon.json").write_text(json.dumps({"host": "127.0.0.1", "port": 1, "pid": 1, "token": "x", "started": 1.0}))
    rc, lines = _cli(root, "status")
    assert rc == 1 and any("no Overnight daemon" in line for line in lines), lines
    rc, lines = _cli(root, "doctor", "--repair")
    assert not (state / "daemon.json").exists(), lines
