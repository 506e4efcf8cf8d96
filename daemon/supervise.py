"""Watching a process tree from outside: the CPU it received, the CPU it waited for, its memory, its size.

Everything the loop charges a run with is measured here, from ``/proc``, never from what the run says about
itself. The tree is the process we started and every descendant still alive; a descendant that exited and was
reaped left its CPU time in its parent's ``cutime``/``cstime`` (in a sandbox the PID namespace's init reaps
double-forked orphans, and it is part of the tree), so CPU spent by short-lived children is not lost.

Run-queue delay (``/proc/<pid>/task/<tid>/schedstat``, field 2) tells a *starved* run — runnable but not
given a core because the machine is busy — from a *hung* one — sleeping, blocked, or spinning on nothing: the
first is the machine's fault and is not a measurement, the second is the run's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Protocol

import psutil

_TICK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
_PAGE = float(os.sysconf("SC_PAGE_SIZE")) if hasattr(os, "sysconf") else 4096.0


class StopSignal(Protocol):
    """What stops a run from outside: the loop's stop, or one run's own (a threading.Event has this shape)."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Sample:
    """One look at the tree: cumulative CPU seconds received and waited for, resident memory, process count."""

    cpu: float
    delay: float
    rss_mb: float
    procs: int


def _stat_cpu_rss(pid: int) -> tuple[float, float] | None:
    """utime + stime + cutime + cstime (seconds) and RSS (MB) of one process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        rss_pages = int(fields[21])
    except (IndexError, ValueError):
        return None
    return ticks / _TICK, rss_pages * _PAGE / 2**20


def _pss_mb(pid: int) -> float | None:
    """Proportional set size (MB): resident memory with pages shared between processes divided among them, so a
    forked tree is not charged its shared pages once per process. None when the kernel does not say."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _delay(pid: int) -> float:
    """Run-queue wait (seconds) of every live thread of one process."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def tree_pids(root: int) -> list[int]:
    """The root and every live descendant."""
    try:
        proc = psutil.Process(root)
        return [root, *(p.pid for p in proc.children(recursive=True))]
    except psutil.Error:
        return []


@dataclass
class TreeWatch:
    """Cumulative accounting of a process tree, monotonic across samples.

    A process that exits between two samples takes the CPU it used since the last sample with it unless its
    parent reaps it (then it moves to the parent's cutime); the totals never go backwards either way.
    """

    root: int
    _cpu: float = 0.0
    _delay: float = 0.0
    # Per live pid: what it contributed at the last sample, so an exit does not make the totals drop.
    _seen_cpu: dict[int, float] = field(default_factory=dict)
    _seen_delay: dict[int, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    peak_procs: int = 0

    def sample(self) -> Sample:
        pids = tree_pids(self.root)
        rss = 0.0
        cpu_now: dict[int, float] = {}
        delay_now: dict[int, float] = {}
        for pid in pids:
            stat = _stat_cpu_rss(pid)
            if stat is None:
                continue
            cpu_now[pid], mb = stat
            if len(pids) > 1:  # forked processes share pages: RSS would count them once per process
                mb = _pss_mb(pid) or mb
            rss += mb
            delay_now[pid] = _delay(pid)
        # Growth of each live process since its last sample (a new pid grows from 0).
        for pid, value in cpu_now.items():
            self._cpu += max(0.0, value - self._seen_cpu.get(pid, 0.0))
        for pid, value in delay_now.items():
            self._delay += max(0.0, value - self._seen_delay.get(pid, 0.0))
        # A reaped child's CPU moves into its parent's cutime: counted again there. Undo that double count by
        # subtracting what the vanished pids had contributed, bounded by what the parents gained.
        gone = set(self._seen_cpu) - set(cpu_now)
        if gone:
            reaped = sum(self._seen_cpu[p] for p in gone)
            grown = sum(max(0.0, cpu_now[p] - self._seen_cpu.get(p, 0.0)) for p in cpu_now if p in self._seen_cpu)
            self._cpu -= min(reaped, grown)
        self._seen_cpu, self._seen_delay = cpu_now, delay_now
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        self.peak_procs = max(self.peak_procs, len(cpu_now))
        return Sample(cpu=self._cpu, delay=self._delay, rss_mb=rss, procs=len(cpu_now))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, since boot)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Neighbours:
    """How many cores processes outside this one's tree keep busy, on average since the last reading.

    The window is the time since the previous reading — for the loop, the whole previous run — so a reading
    costs no wait of its own (a fresh sample cost every run half a second). This process and its descendants
    (the session's runs and its warm evaluator) are subtracted: the machine's own work is not a neighbour.
    A reading sooner than ``min_window`` after the last waits for the rest of it."""

    def __init__(self, min_window: float = 0.5, root: int | None = None) -> None:
        self.min_window = min_window
        self._own = TreeWatch(os.getpid() if root is None else root)
        self._at, self._busy, self._used = time.monotonic(), machine_busy_seconds(), self._own.sample().cpu

    def cores(self) -> float:
        wait = self.min_window - (time.monotonic() - self._at)
        if wait > 0:
            time.sleep(wait)
        at, busy, used = time.monotonic(), machine_busy_seconds(), self._own.sample().cpu
        others = (busy - self._busy) - (used - self._used)
        window = max(1e-3, at - self._at)
        self._at, self._busy, self._used = at, busy, used
        return max(0.0, others / window)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
