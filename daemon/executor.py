"""Starts one training run, enforces its budget and memory from outside, reads its progress, evaluates it.

The training process gets the write end of a pipe (``OVERNIGHT_CHANNEL_FD``) on which the
harness writes msgpack frames. The budget is enforced here, not trusted to ``train.py``: the run
is killed once its budget clock passes budget + grace (and, whatever the clock, once wall time
passes a hang limit). The metric comes from a separate evaluation process running the frozen
harness on the model the run saved: a number ``train.py`` prints is never read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import psutil

Frame = dict[str, Any]

# How often the supervisor samples the child's clock and memory.
_POLL_S = 0.1
# A run on the CPU clock that sleeps or blocks accrues no CPU time; past this many budgets of
# wall time it is treated as hung.
_HANG_FACTOR = 3.0
_LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class RunRequest:
    cwd: Path
    command: tuple[str, ...]
    evaluate: tuple[str, ...]
    budget: float
    clock: str  # "cpu" or "wall": already resolved
    grace: float
    memory_limit_gb: float
    seed: int
    threads: int
    model_out: Path
    log_path: Path
    # The harness's data, pinned by the loop: the run is pointed at it, and its manifest must still
    # hash the same after the run (a run that rewrites the data and its manifest is caught here).
    data_dir: str | None = None
    manifest_sha256: str | None = None


@dataclass
class RunOutcome:
    status: str  # ok | crash | timeout | interrupted
    val_bpb: float | None = None
    holdout_bpb: float | None = None
    steps: int | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    n_params: int | None = None
    device: str | None = None
    peak_mem_mb: float | None = None
    train_seconds: float | None = None
    wall_seconds: float = 0.0
    startup_seconds: float | None = None
    train_wall_seconds: float | None = None
    eval_seconds: float | None = None
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    error: str | None = None
    log_tail: str = ""
    data_changed: bool = False


def _child_setup() -> None:
    """In the training process before exec: its own process group (so the whole tree can be
    killed) and, on Linux, death with its parent, so a kill -9 of the loop leaves no orphan run."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def resolve_command(command: tuple[str, ...]) -> list[str]:
    return [sys.executable if part == "{python}" else part for part in command]


def resolve_clock(clock: str) -> str:
    if clock != "auto":
        return clock
    # Asked in a child process: importing torch here would cost the long-lived daemon ~200 MB of
    # memory for one boolean.
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return "wall" if probe.stdout.strip() == "True" else "cpu"


class _FrameReader(threading.Thread):
    """Reads msgpack frames from the harness's pipe until the child closes it."""

    def __init__(self, fd: int, on_frame: Callable[[Frame], None]) -> None:
        super().__init__(daemon=True, name="overnight-frames")
        self.fd = fd
        self.on_frame = on_frame
        self.frames: list[Frame] = []
        self.bad_frames = 0
        # When the harness's start frame arrived (monotonic clock): start-up ends there.
        self.started_at: float | None = None

    def run(self) -> None:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=16 * 1024 * 1024)
        with os.fdopen(self.fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                unpacker.feed(chunk)
                try:
                    for frame in unpacker:
                        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                            self.bad_frames += 1
                            continue
                        self.frames.append(frame)
                        if frame["type"] == "start" and self.started_at is None:
                            self.started_at = time.monotonic()
                        try:
                            self.on_frame(frame)
                        except Exception:  # a listener's bug must not stop the run's supervision
                            pass
                except (msgpack.UnpackException, ValueError):
                    # Garbage on the channel: drop what is buffered and keep the run going.
                    self.bad_frames += 1
                    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=16 * 1024 * 1024)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _sample(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds (user + sys) and resident MB of the process tree."""
    cpu = rss = 0.0
    for p in _tree(proc):
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
        except psutil.Error:
            continue
    return cpu, rss / 2**20


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _LOG_TAIL_CHARS))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _data_env(req: RunRequest) -> dict[str, str]:
    return {"OVERNIGHT_DATA_DIR": req.data_dir} if req.data_dir else {}


def _manifest_unchanged(req: RunRequest) -> bool:
    if req.data_dir is None or req.manifest_sha256 is None:
        return True
    try:
        digest = hashlib.sha256((Path(req.data_dir) / "manifest.json").read_bytes()).hexdigest()
    except OSError:
        return False
    return digest == req.manifest_sha256


def execute(
    req: RunRequest,
    on_frame: Callable[[Frame], None] = lambda frame: None,
    stop: threading.Event | None = None,
) -> RunOutcome:
    """Run one training run to its end (or its kill) and evaluate the model it saved."""
    req.log_path.parent.mkdir(parents=True, exist_ok=True)
    req.model_out.unlink(missing_ok=True)
    read_fd, write_fd = os.pipe()
    env = {
        **os.environ,
        "OVERNIGHT_CHANNEL_FD": str(write_fd),
        "OVERNIGHT_BUDGET_S": repr(req.budget),
        "OVERNIGHT_BUDGET_CLOCK": req.clock,
        "OVERNIGHT_SEED": str(req.seed),
        "OVERNIGHT_THREADS": str(req.threads),
        "OVERNIGHT_MODEL_OUT": str(req.model_out),
        **_data_env(req),
        "PYTHONUNBUFFERED": "1",
        # Spin-waiting OpenMP threads would burn CPU time that the cpu budget clock charges.
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    started = time.monotonic()
    with req.log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(
                resolve_command(req.command), cwd=req.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,), preexec_fn=_child_setup,
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            return RunOutcome(status="crash", error=f"could not start {req.command[0]}: {exc}")
        os.close(write_fd)
        reader = _FrameReader(read_fd, on_frame)
        reader.start()
        status, error, peak_mb = _supervise(proc, req, started, stop)
    reader.join(timeout=5)
    wall = time.monotonic() - started
    outcome = _summarise(reader.frames, status, error, peak_mb, wall, req, proc.returncode)
    if reader.started_at is not None:
        outcome.startup_seconds = reader.started_at - started
    if outcome.status == "crash" and outcome.error and outcome.error.startswith("the run exited"):
        # Say why, not only that: the last line of a traceback names the exception.
        last = _last_line(_tail(req.log_path))
        if last:
            outcome.error += f": {last}"
    if not _manifest_unchanged(req):
        outcome.status, outcome.data_changed = "crash", True
        outcome.error = f"the harness's data in {req.data_dir} changed during the run: a run may not write it"
    if outcome.status == "ok":
        _evaluate(req, outcome)
    outcome.log_tail = _tail(req.log_path)
    return outcome


def _supervise(
    proc: subprocess.Popen[bytes], req: RunRequest, started: float, stop: threading.Event | None
) -> tuple[str, str | None, float]:
    """Wait for the child while enforcing the limits; returns (status, error, peak MB)."""
    ps = psutil.Process(proc.pid)
    peak_mb = 0.0
    limit_mb = req.memory_limit_gb * 1024
    wall_limit = req.budget + req.grace if req.clock == "wall" else _HANG_FACTOR * req.budget + req.grace
    while proc.poll() is None:
        cpu, rss_mb = _sample(ps)
        peak_mb = max(peak_mb, rss_mb)
        wall = time.monotonic() - started
        used = wall if req.clock == "wall" else cpu / max(1, req.threads)
        if stop is not None and stop.is_set():
            _kill_group(proc)
            return "interrupted", "stopped by the user", peak_mb
        if rss_mb > limit_mb:
            _kill_group(proc)
            return "crash", f"out of memory: {rss_mb / 1024:.2f} GB exceeds the {req.memory_limit_gb:g} GB limit", peak_mb
        if used > req.budget + req.grace or wall > wall_limit:
            _kill_group(proc)
            what = f"{used:.1f} s on the {req.clock} clock" if used > req.budget + req.grace else f"{wall:.1f} s wall"
            return "timeout", f"killed after {what}: budget {req.budget:g} s + grace {req.grace:g} s", peak_mb
        time.sleep(_POLL_S)
    # The process group may hold stragglers (a forked data worker): they die with the run.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return "exited", None, peak_mb


def _summarise(
    frames: list[Frame], status: str, error: str | None, peak_mb: float, wall: float,
    req: RunRequest, returncode: int | None,
) -> RunOutcome:
    out = RunOutcome(status="ok", wall_seconds=wall, peak_mem_mb=peak_mb or None)
    for frame in frames:
        kind = frame.get("type")
        if kind == "start":
            out.n_params = frame.get("n_params") if isinstance(frame.get("n_params"), int) else None
            out.device = str(frame.get("device", ""))[:32] or None
        elif kind == "progress":
            step, elapsed, loss = frame.get("step"), _finite(frame.get("elapsed")), _finite(frame.get("train_loss"))
            if isinstance(step, int) and elapsed is not None and loss is not None:
                out.curve.append((step, elapsed, loss))
            out.tokens_per_s = _finite(frame.get("tokens_per_s")) or out.tokens_per_s
        elif kind == "end":
            out.steps = frame.get("steps") if isinstance(frame.get("steps"), int) else None
            out.tokens = frame.get("tokens") if isinstance(frame.get("tokens"), int) else None
            out.train_seconds = _finite(frame.get("elapsed"))
            out.train_wall_seconds = _finite(frame.get("wall"))
            reported = _finite(frame.get("peak_mem_mb"))
            if reported is not None and out.device == "cuda":
                out.peak_mem_mb = reported  # GPU memory is only visible from inside the process
        elif kind == "error":
            error = error or str(frame.get("message", "the run reported an error"))[:2000]
    if out.tokens and out.train_seconds:
        out.tokens_per_s = out.tokens / out.train_seconds
    if status in ("timeout", "interrupted") or (status == "crash" and error):
        out.status, out.error = status, error
    elif returncode != 0:
        out.status = "crash"
        out.error = error or f"the run exited with code {returncode}"
        if returncode is not None and returncode < 0:
            out.error = error or f"the run was killed by signal {-returncode}"
    elif not req.model_out.exists():
        out.status, out.error = "crash", "the run finished without saving a model for the harness to evaluate"
    return out


def _evaluate(req: RunRequest, out: RunOutcome) -> None:
    command = [*resolve_command(req.evaluate), "--model", str(req.model_out), "--splits", "val,holdout"]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command, cwd=req.cwd, capture_output=True, text=True, timeout=max(120.0, req.budget),
            env={**os.environ, "OVERNIGHT_THREADS": str(req.threads), **_data_env(req)}, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        out.status, out.error = "crash", "the harness evaluation timed out"
        return
    out.eval_seconds = time.monotonic() - started
    with req.log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n--- evaluation ({' '.join(command)}) ---\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        out.status, out.error = "crash", f"evaluation failed: {message}"
        return
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        out.status, out.error = "crash", "evaluation printed no result"
        return
    out.val_bpb = _finite(result.get("val_bpb"))
    out.holdout_bpb = _finite(result.get("holdout_bpb"))
    if out.val_bpb is None:
        out.status, out.error = "crash", f"evaluation gave no finite val_bpb: {result.get('val_bpb')!r}"
