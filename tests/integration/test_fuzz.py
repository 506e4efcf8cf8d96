"""Fuzzed protocol traffic against a real daemon process (seeded, so a failure replays): authenticated and
unauthenticated fuzzers side by side with a slow-drip connection, while an honest client's status requests are
answered throughout and the daemon's memory stays bounded. bench/fuzz.py sends 10,000 messages and more."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from overnight.daemon.server import app, discovery

from ..fuzzing import Tally, canary, fuzzer, slow_drip


@pytest.fixture
def daemon_process(make_workspace: Callable[..., Path]) -> Iterator[tuple[subprocess.Popen[bytes], discovery.Discovery]]:
    root = make_workspace()
    proc = subprocess.Popen([sys.executable, "-m", "overnight.daemon.cli", "-C", str(root), "daemon", "--paused"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while (info := discovery.read(root / ".overnight")) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.1)
    yield proc, info
    proc.terminate()
    proc.wait(timeout=60)


@pytest.mark.timeout(300)
def test_fuzzed_traffic_never_starves_an_honest_client(
        daemon_process: tuple[subprocess.Popen[bytes], discovery.Discovery]) -> None:
    proc, info = daemon_process
    daemon = psutil.Process(proc.pid)
    rss_before = daemon.memory_info().rss
    tally = Tally()

    async def scenario() -> bool:
        stop = asyncio.Event()
        honest = asyncio.ensure_future(canary(info.host, info.port, info.token, stop, tally))
        drip = asyncio.ensure_future(slow_drip(info.host, info.port, 20.0))
        await asyncio.gather(*(fuzzer(info.host, info.port, info.token if i % 3 else None, random.Random(i), 400,
                                      app.MAX_MESSAGE_BYTES, tally) for i in range(6)))
        dropped = await drip
        stop.set()
        await honest
        return dropped

    dropped = asyncio.run(asyncio.wait_for(scenario(), timeout=240))
    assert tally.sent == 2400 and tally.answered > 0, tally
    assert tally.canary and not tally.canary_failures, tally.canary_failures
    assert max(tally.canary) < 5.0
    assert dropped  # the slow drip was cut at the handshake deadline (10 s)
    assert proc.poll() is None  # still serving
    assert daemon.memory_info().rss - rss_before < 100 * 2**20
