"""The session's warm harness: one sandboxed evaluator process for a whole session.

A fresh evaluation process per run pays the interpreter, ``import torch`` and the model loader's imports (~3.5 s of
an ~8 s evaluation) every time. The warm evaluator runs the pinned harness's ``prepare.py serve`` once per session
in sandbox B, and each model is evaluated by a child it forks after those imports: the imports are paid once, and a
model that subverts its evaluator still cannot reach the next model's (the parent never loads one).

The daemon places each model in a folder the evaluator sees read-only, writes one JSON request per line, and reads
one answer per line. Each evaluation is supervised like a run: its CPU, memory and progress are watched from
outside, and an evaluator that overruns, hangs or dies is killed and started again for the next model.
"""

from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .sandbox import Launch, Sandbox, remove_tree
from .supervise import StopSignal, TreeWatch, tree_pids

_POLL_S = 0.1
# The one long-lived thread that starts every evaluator process (see Evaluator._start).
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overnight-spawner")


@dataclass(frozen=True)
class Answer:
    """What the harness said about one model: its exit code and JSON line (``None`` when it said nothing usable)."""

    code: int | None
    result: dict[str, Any] | None
    error: str | None = None
    seconds: float = 0.0


def finite(value: object) -> float | None:
    """A number the harness (or a run's frame) gave, when it is a finite one; None for anything else."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def serve_command(evaluate: tuple[str, ...]) -> tuple[str, ...] | None:
    """The warm form of an evaluate command (``... prepare.py evaluate`` → ``... prepare.py serve``), or None when the
    harness's command is not of that shape (a custom harness: then every model gets a fresh process)."""
    if not evaluate or evaluate[-1] != "evaluate":
        return None
    return (*evaluate[:-1], "serve", "--models", "{model}")


class Evaluator:
    """One warm evaluator process, scoring one model at a time: a second ``evaluate`` (a run that landed while the
    last one's model, or a keep's gauges, are still being scored) waits for the first."""

    def __init__(self, *, sandbox: Sandbox, command: tuple[str, ...], harness_dir: Path, workdir: str, data_dir: Path,
                 folder: Path, log_path: Path, memory_limit_gb: float, eval_cpu: float, hang_window: float) -> None:
        self.sandbox = sandbox
        self.command = command
        self.harness_dir = harness_dir
        self.workdir = workdir
        self.data_dir = data_dir
        self.folder = folder
        self.log_path = log_path
        self.memory_limit_mb = memory_limit_gb * 1024
        self.eval_cpu = eval_cpu
        self.hang_window = hang_window
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._log: IO[bytes] | None = None
        self._next_id = 0
        self.started = 0  # how many evaluator processes were started (the first, and one after each kill)
        self._one_at_a_time = threading.Lock()

    # -- the process --------------------------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = self.log_path.open("ab")
        launch = self.sandbox.evaluation(
            self.command, harness_dir=self.harness_dir, workdir=self.workdir, model_file=self.folder,
            data_dir=self.data_dir, env={"OMP_WAIT_POLICY": "PASSIVE"},
        )
        # Started from a thread that lives as long as the daemon: the parent-death signal (bwrap's
        # --die-with-parent, the launch's own) fires when the *thread* that forked the process ends, and the runs
        # that call evaluate() each have a thread of their own.
        proc = _SPAWNER.submit(self._popen, launch).result()
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(proc, self._lines), daemon=True, name="overnight-evaluator").start()
        self._proc = proc
        self.started += 1
        return proc

    def _popen(self, launch: Launch) -> subprocess.Popen[bytes]:
        return subprocess.Popen(launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=self._log, start_new_session=True, preexec_fn=launch.preexec)

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], lines: queue.Queue[bytes | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line[:1_000_000])
        lines.put(None)  # the process closed its stdout: it is gone

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pid in tree_pids(proc.pid):
            try:
                os.kill(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()  # end of requests: it exits by itself
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        remove_tree(self.folder)

    # -- one model ----------------------------------------------------------------------------------

    def evaluate(self, model: Path, splits: str, threads: int, stop: StopSignal | None = None) -> Answer:
        """Move ``model`` (a file the daemon owns) into the evaluator's folder and have it scored."""
        started = time.monotonic()
        with self._one_at_a_time:
            answer = self._evaluate(model, splits, threads, stop)
        return Answer(answer.code, answer.result, answer.error, time.monotonic() - started)

    def _evaluate(self, model: Path, splits: str, threads: int, stop: StopSignal | None) -> Answer:
        started = time.monotonic()
        proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
        self._next_id += 1
        rid = self._next_id
        name = f"m{rid}.ovm"
        target = self.folder / name
        os.replace(model, target)
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps({"id": rid, "model": name, "splits": splits, "threads": threads}).encode()
                                 + b"\n")
                proc.stdin.flush()
            except OSError as exc:
                self._kill()
                return Answer(None, None, f"the evaluator is gone ({exc})", time.monotonic() - started)
            answer = self._wait(proc, rid, threads, stop)
        finally:
            target.unlink(missing_ok=True)
        return Answer(answer.code, answer.result, answer.error, time.monotonic() - started)

    def _wait(self, proc: subprocess.Popen[bytes], rid: int, threads: int, stop: StopSignal | None) -> Answer:
        watch = TreeWatch(proc.pid)
        base = watch.sample()
        last_active, last_change = base.cpu + base.delay, time.monotonic()
        while True:
            try:
                line = self._lines.get(timeout=_POLL_S)
            except queue.Empty:
                line = b""
            if line is None:
                self._kill()
                return Answer(None, None, "the evaluator process died")
            if line:
                answer = _parse(line, rid)
                if answer is not None:
                    return answer
                continue
            sample = watch.sample()
            used = (sample.cpu - base.cpu) / max(1, threads)
            now = time.monotonic()
            active = sample.cpu + sample.delay
            if active - last_active > 0.02 * _POLL_S:
                last_active, last_change = active, now
            why = None
            if stop is not None and stop.is_set():
                why = "stopped by the user"
            elif sample.rss_mb > self.memory_limit_mb:
                why = f"out of memory: {sample.rss_mb / 1024:.2f} GB"
            elif used > self.eval_cpu:
                why = f"used more than {self.eval_cpu:g} budget-seconds of CPU"
            elif now - last_change > self.hang_window:
                why = f"hung: used no CPU for {now - last_change:.0f} s"
            if why is not None:
                self._kill()  # its state is unknown: the next model gets a fresh evaluator
                return Answer(None, None, why)


def _parse(line: bytes, rid: int) -> Answer | None:
    """The answer to request ``rid`` in one stdout line; None for a line that is not it."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or message.get("id") != rid:
        return None
    code, result = message.get("code"), message.get("result")
    return Answer(code if isinstance(code, int) else None, result if isinstance(result, dict) else None)
