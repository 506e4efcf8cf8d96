"""The daemon core is read from many server threads at once (an editor asks for inlay hints, hovers and
CodeLenses together): what it reads from git must be right, and must not hang, under that concurrency."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from overnight.daemon.agents.sweep import SweepAgent
from overnight.daemon.config import load_config
from overnight.daemon.server.core import DaemonCore

from ..conftest import commit_all


@pytest.mark.timeout(120)
def test_the_session_head_is_right_from_many_threads_at_once(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace()
    subprocess.run(["git", "-C", str(root), "branch", "overnight/t"], check=True)
    (root / "notes.txt").write_text("moved on\n")
    commit_all(root, "the user's branch moves on; the session's does not")
    want = subprocess.run(["git", "-C", str(root), "rev-parse", "overnight/t"], check=True, capture_output=True,
                          text=True).stdout.strip()
    core = DaemonCore(load_config(root), SweepAgent())
    assert core.session_head() is None  # no session yet
    core.tag = "t"
    # gitpython's Repo.rev_parse from 8 threads hangs within a few hundred calls (one shared cat-file pipe).
    with ThreadPoolExecutor(8) as pool:
        heads = list(pool.map(lambda _: core.session_head(), range(400)))
    assert set(heads) == {want}
    core.tag = "nope"
    assert core.session_head() is None
    core.journal.close()
