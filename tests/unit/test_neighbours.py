"""supervise.Neighbours: the machine's load from processes outside the daemon's own tree, read without a wait."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from overnight.daemon import supervise
from overnight.daemon.supervise import Neighbours


def test_the_own_tree_is_not_a_neighbour_however_busy_the_rest_of_the_machine_is() -> None:
    """Two readings over the same window, one counting a spinning tree as its own: they differ by that tree's CPU
    (about a core), whatever else the machine runs meanwhile (other tests included)."""
    spin = f"{sys.executable} -c 'while True: pass'"
    tree = subprocess.Popen(["sh", "-c", f"{spin} & wait"])  # an idle root and its busy descendant
    idle = subprocess.Popen(["sleep", "60"])
    try:
        owning, not_owning = Neighbours(min_window=0.0, root=tree.pid), Neighbours(min_window=0.0, root=idle.pid)
        time.sleep(2.0)
        excluded = not_owning.cores() - owning.cores()
    finally:
        for proc in (tree, idle):
            subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
            proc.kill()
            proc.wait()
    assert 0.4 < excluded < 1.3, excluded


def test_a_reading_soon_after_the_last_waits_only_for_the_rest_of_its_minimum_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    neighbours = Neighbours(min_window=30.0)
    monkeypatch.setattr(supervise.time, "sleep", slept.append)
    neighbours.cores()
    assert len(slept) == 1 and 29.0 < slept[0] <= 30.0
    neighbours.min_window = 0.0  # the window since the last reading is long enough: no wait
    neighbours.cores()
    assert len(slept) == 1
