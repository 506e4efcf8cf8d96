"""Fuzzed protocol traffic against a real daemon process: what a flood of hostile messages costs everyone else.

    python bench/fuzz.py [--messages 12000] [--fuzzers 8] [--seed 1] [--out bench/results/fuzz]

Starts `overnight daemon --paused` in a scratch workspace, then sends --messages seeded fuzzed messages
(tests/fuzzing.py: every malformed kind, authenticated and not) over --fuzzers concurrent connections, beside a
slow-drip connection and an honest client asking for the status every half second. Prints and writes: messages
sent and answered, reconnects (connections the daemon closed), the honest client's answer times (p50, p99, max)
and unanswered requests, the daemon's RSS before, at its peak and after, daemon.log growth, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzzing import Tally, canary, fuzzer, slow_drip  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=12000)
    ap.add_argument("--fuzzers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "fuzz"))
    args = ap.parse_args()

    from overnight.daemon.cli import main as cli
    from overnight.daemon.server import app, discovery

    with tempfile.TemporaryDirectory(prefix="overnight-bench-fuzz-") as tmp:
        root = Path(tmp) / "ws"
        assert cli(["init", str(root)]) == 0
        proc = subprocess.Popen([sys.executable, "-m", "overnight.daemon.cli", "-C", str(root), "daemon", "--paused"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while (info := discovery.read(root / ".overnight")) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.1)
            time.sleep(2)  # past data preparation
            daemon = psutil.Process(proc.pid)
            rss_before = daemon.memory_info().rss
            log = root / ".overnight" / "daemon.log"
            log_before = log.stat().st_size if log.exists() else 0
            peak = [rss_before]
            tally = Tally()
            per = max(1, args.messages // args.fuzzers)
            load = os.getloadavg()[0]

            async def scenario() -> bool:
                stop = asyncio.Event()

                async def sample() -> None:
                    while not stop.is_set():
                        peak[0] = max(peak[0], daemon.memory_info().rss)
                        await asyncio.sleep(0.2)

                sampler = asyncio.ensure_future(sample())
                honest = asyncio.ensure_future(canary(info.host, info.port, info.token, stop, tally))
                drip = asyncio.ensure_future(slow_drip(info.host, info.port, 30.0))
                await asyncio.gather(*(fuzzer(info.host, info.port, info.token if i % 4 else None,
                                              random.Random(args.seed * 1000 + i), per, app.MAX_MESSAGE_BYTES, tally)
                                       for i in range(args.fuzzers)))
                dropped = await drip
                stop.set()
                await honest
                await sampler
                return dropped

            started = time.monotonic()
            dropped = asyncio.run(scenario())
            seconds = time.monotonic() - started
            alive = proc.poll() is None
            rss_after = daemon.memory_info().rss if alive else 0
            log_after = sum(p.stat().st_size for p in log.parent.glob("daemon.log*"))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    lat = sorted(tally.canary)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    rows = [
        ("messages sent", f"{tally.sent:,}"), ("answers received", f"{tally.answered:,}"),
        ("connections closed by the daemon (fuzzer reconnected)", f"{tally.reconnects:,}"),
        ("honest status requests answered", f"{len(lat)}"), ("… unanswered within 5 s", f"{len(tally.canary_failures)}"),
        ("… answer time p50 / p99 / max (ms)", f"{p(0.5):.0f} / {p(0.99):.0f} / {max(lat) * 1000 if lat else float('nan'):.0f}"),
        ("slow-drip connection cut at the handshake deadline", "yes" if dropped else "no"),
        ("daemon RSS before / peak / after (MB)", f"{rss_before / 2**20:.0f} / {peak[0] / 2**20:.0f} / {rss_after / 2**20:.0f}"),
        ("daemon.log growth (KB)", f"{(log_after - log_before) / 1024:.0f}"),
        ("daemon alive at the end", "yes" if alive else "NO"),
    ]
    md = ["# Fuzzed protocol traffic\n",
          f"`python bench/fuzz.py --messages {args.messages} --fuzzers {args.fuzzers} --seed {args.seed}` on "
          f"{platform.machine()}, python {platform.python_version()} ({time.strftime('%Y-%m-%d')}): {seconds:.0f} s, "
          f"{tally.sent / seconds:.0f} messages/s; load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the "
          f"end. Kinds: {', '.join(f'{k} {v}' for k, v in sorted(tally.by_kind.items()))}.\n",
          "| what | figure |", "|---|---:|", *[f"| {a} | {b} |" for a, b in rows]]
    text = "\n".join(md) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({
        "sent": tally.sent, "answered": tally.answered, "reconnects": tally.reconnects, "by_kind": tally.by_kind,
        "canary_ms": [x * 1000 for x in lat], "canary_failures": tally.canary_failures, "dropped_drip": dropped,
        "rss_mb": [rss_before / 2**20, peak[0] / 2**20, rss_after / 2**20], "log_kb": (log_after - log_before) / 1024,
        "seconds": seconds, "median_ms": statistics.median(lat) * 1000 if lat else None}, indent=2))
    return 0 if alive and not tally.canary_failures else 1


if __name__ == "__main__":
    sys.exit(main())
