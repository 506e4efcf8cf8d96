"""Runs one training run sealed, charges it from outside, and has the pinned harness score what it saved.

The training process runs in the sandbox (``sandbox.py``): it sees its experiment's tree read-only, the training
split, and a scratch directory; it gets the write end of a pipe (``OVERNIGHT_CHANNEL_FD``) for msgpack progress
frames. Nothing it says about itself is believed: the CPU it used is read from ``/proc`` for its whole process tree
(``supervise.py``) and the run is killed when it passes its budget. Frames only tell *when* it says it moved from
start-up to training to export; each phase has its own allowance, so time spent training before the ``start``
frame or after the ``end`` frame is charged too.

The model it saved is copied out of its scratch (no symlinks, no hard links, bounded size) and scored by the
session's pinned copy of the harness, in a second sandbox that never sees anything the run wrote but that file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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

from .evaluator import Evaluator, finite
from .sandbox import Sandbox, copy_out, remove_tree
from .supervise import Sample, StopSignal, TreeWatch, machine_busy_seconds, tree_pids

Frame = dict[str, Any]

# How often the supervisor samples the tree.
_POLL_S = 0.2
_LOG_TAIL_CHARS = 4000
# Exit code of `prepare.py evaluate` when it refuses a model (unsafe file, not causal, ...): not a crash, `invalid`.
EXIT_REFUSED = 4
# The largest model file the harness is handed.
_MAX_MODEL_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Limits:
    """How a run is charged. All CPU figures are *budget seconds*: CPU seconds of the tree ÷ the run's threads.

    ``train_factor``: the training phase (``start`` frame to ``end`` frame) may use this multiple of the budget. The
    harness stops an honest run after a step count calibrated from its fastest steps, so it uses the budget times
    its mean/fastest step-time ratio; a run that trains on regardless is killed here.
    ``grace``: start-up (before ``start``) and export (after ``end``) together.
    ``hang_window``: a tree that neither ran nor waited for a CPU this long is hung.
    ``wall_factor``, ``wall_slack``: the wall-clock ceiling, ``wall_factor × (budget + grace) + wall_slack``; reached
    while the machine kept the run waiting for a core, the run is *starved* (not a measurement), otherwise it timed out.
    """

    train_factor: float = 1.5
    grace: float = 15.0
    hang_window: float = 60.0
    wall_factor: float = 6.0
    wall_slack: float = 60.0
    max_procs: int = 256
    eval_cpu: float = 600.0


@dataclass(frozen=True)
class Harness:
    """The session's pinned copy of the frozen files: where it is and what it must hash to."""

    directory: Path          # holds the frozen files at their workspace-relative paths
    workdir: str             # the evaluation's working directory inside it
    evaluate: tuple[str, ...]
    check: Callable[[], str | None]  # re-hashes the copy; a message when it no longer matches


@dataclass(frozen=True)
class DataPin:
    """The harness's data as pinned for the session (``prepare.py --json``)."""

    directory: Path
    manifest_sha256: str | None = None
    training_files: tuple[str, ...] = ("manifest.json", "train.bin")
    hidden_sources: tuple[Path, ...] = ()


@dataclass(frozen=True)
class RunRequest:
    tree: Path                       # the experiment's files (its commit checked out), read-only to the run
    workdir: str                     # where the run starts, relative to the tree
    command: tuple[str, ...]
    budget: float
    clock: str                       # steps | cpu | wall: already resolved
    memory_limit_gb: float
    seed: int
    threads: int
    run_dir: Path                    # the run's own folder: scratch, copied-out model (the daemon's)
    log_path: Path
    data: DataPin
    harness: Harness
    sandbox: Sandbox
    limits: Limits = Limits()
    network: bool = False
    gpu: bool = False
    scale: float = 1.0
    # (steps, step seconds) of the code this run derives from: the harness keeps that step count unless this code's
    # calibrated speed differs by more than its tolerance (equal code, equal steps, whatever the machine's load).
    anchor: tuple[int, float] | None = None
    # A calibration that disagrees with the anchor while other processes keep the machine busy makes the run
    # starved: its step count would follow the neighbours' load, not the code (the loop sets it with machine_share).
    load_starves: bool = False
    # The GPUs the run may see (CUDA_VISIBLE_DEVICES), when slots share a machine's GPUs; None: all.
    devices: str | None = None
    # The session's warm evaluator (evaluator.py); None: a fresh evaluation process for this run alone.
    evaluator: Evaluator | None = None
    # Checks after the training process ended and before anything is evaluated (frozen files, the Python
    # environment): a message makes the run `invalid`, never evaluated.
    after_run: Callable[[], str | None] = lambda: None
    # Reported mode: no model hand-off and no harness; the run's score is the last `<metric>: <number>` line it
    # prints (autoresearch's `val_bpb: 0.9979`). The script keeps its own time: the budget bounds the whole run.
    reported_metric: str | None = None
    # Host folders the run may read (reported mode), as the config names them.
    readable: tuple[str, ...] = ()
    # What the harness scores the model on (gauges.py: a candidate's runs first on val only), and where the model
    # file is kept for a later scoring of the gauges (None: it goes with the run's folder).
    splits: str = "val,holdout,ood"
    keep_model: Path | None = None


@dataclass
class RunOutcome:
    status: str  # ok | crash | timeout | interrupted | starved | invalid
    val_bpb: float | None = None
    holdout_bpb: float | None = None
    ood_bpb: float | None = None
    train_bpb: float | None = None
    steps: int | None = None
    steps_planned: int | None = None
    step_seconds: float | None = None
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
    # Measured from outside: CPU seconds of the whole tree, and seconds its threads waited for a core.
    cpu_seconds: float | None = None
    delay_seconds: float | None = None
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    error: str | None = None
    log_tail: str = ""
    data_changed: bool = False
    # The harness's self-checks (causality, batch independence, finite outputs, ...) and its flags.
    checks: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    # Which check refused the model (an `invalid` run), with the harness's evidence.
    refused_check: str | None = None


def resolve_command(command: tuple[str, ...]) -> list[str]:
    return [sys.executable if part == "{python}" else part for part in command]


def cuda_available() -> bool:
    # Asked in a child process: importing torch here would cost the long-lived daemon ~200 MB of memory.
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return probe.stdout.strip() == "True"


def gpu_count() -> int:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    try:
        return int(probe.stdout.strip() or 0)
    except ValueError:
        return 0


def resolve_clock(clock: str) -> str:
    """``auto`` is the calibrated step count on every device (equal code, equal training)."""
    return "steps" if clock == "auto" else clock


class _FrameReader(threading.Thread):
    """Reads msgpack frames from the harness's pipe until the child closes it; stamps when each kind arrived."""

    def __init__(self, fd: int, on_frame: Callable[[Frame], None]) -> None:
        super().__init__(daemon=True, name="overnight-frames")
        self.fd = fd
        self.on_frame = on_frame
        self.frames: list[Frame] = []
        self.bad_frames = 0
        # monotonic time of the first frame of each type ("start", "end", ...): the phases' boundaries.
        self.arrived: dict[str, float] = {}

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
                        if len(self.frames) < 100_000:  # a run cannot grow the daemon without bound
                            self.frames.append(frame)
                        self.arrived.setdefault(str(frame["type"]), time.monotonic())
                        try:
                            self.on_frame(frame)
                        except Exception:  # a listener's bug must not stop the run's supervision
                            pass
                except (msgpack.UnpackException, ValueError):
                    # Garbage on the channel: drop what is buffered and keep the run going.
                    self.bad_frames += 1
                    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=16 * 1024 * 1024)


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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run's session and every descendant still alive, then reap the child."""
    pids = tree_pids(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


# -- supervision --------------------------------------------------------------------------------------


@dataclass
class _Verdict:
    status: str             # exited | timeout | starved | crash | interrupted
    error: str | None = None


@dataclass
class _Phases:
    """CPU of the tree (budget seconds) at the phase boundaries the frames mark, as the supervisor saw it."""

    at_start: float | None = None
    at_end: float | None = None
    launched: float = field(default_factory=time.monotonic)
    wall_start: float | None = None
    wall_end: float | None = None


class _Supervisor:
    """Polls a process tree and says when, and why, it must be stopped."""

    def __init__(self, proc: subprocess.Popen[bytes], *, threads: int, memory_limit_gb: float, limits: Limits,
                 stop: StopSignal | None) -> None:
        self.proc = proc
        self.watch = TreeWatch(proc.pid)
        self.threads = max(1, threads)
        self.memory_limit_mb = memory_limit_gb * 1024
        self.limits = limits
        self.stop = stop
        self.started = time.monotonic()
        self._machine_start = machine_busy_seconds()
        self.last = Sample(0.0, 0.0, 0.0, 0)
        # (wall, cpu + delay) a hang window ago: a tree that neither ran nor waited is not doing anything.
        self._history: list[tuple[float, float]] = []

    def charge(self, sample: Sample | None = None) -> float:
        return (sample or self.last).cpu / self.threads

    def check(self, sample: Sample, wall: float, wall_cap: float) -> _Verdict | None:
        """The limits every process tree has: memory, size, the user's stop, hangs, the wall ceiling."""
        if self.stop is not None and self.stop.is_set():
            return _Verdict("interrupted", "stopped by the user")
        if sample.rss_mb > self.memory_limit_mb:
            return _Verdict("crash", f"out of memory: {sample.rss_mb / 1024:.2f} GB exceeds the "
                                     f"{self.memory_limit_mb / 1024:g} GB limit")
        if sample.procs > self.limits.max_procs:
            return _Verdict("crash", f"too many processes: {sample.procs} (at most {self.limits.max_procs})")
        now_active = sample.cpu + sample.delay
        self._history.append((wall, now_active))
        window = self.limits.hang_window
        while len(self._history) > 1 and self._history[1][0] <= wall - window:
            self._history.pop(0)
        w0, a0 = self._history[0]
        if wall - w0 >= window * 0.99 and now_active - a0 < 0.02 * window:
            return _Verdict("timeout", f"hung: used no CPU for {wall - w0:.0f} s")
        if wall > wall_cap:
            waited = sample.delay / max(1e-9, sample.cpu + sample.delay)
            if waited > 0.3:
                return _Verdict("starved", f"the machine gave it too little CPU: {wall:.0f} s wall for "
                                           f"{self.charge(sample):.1f} budget-seconds of CPU ({waited:.0%} of its time "
                                           "waiting for a core)")
            return _Verdict("timeout", f"killed after {wall:.0f} s wall ({self.charge(sample):.1f} budget-seconds of CPU)")
        return None

    def poll(self) -> Sample:
        self.last = self.watch.sample()
        return self.last

    def others_cores(self) -> float:
        """How many cores other processes kept busy, on average, since this run started (the machine's busy CPU
        time less this tree's)."""
        wall = max(1e-3, time.monotonic() - self.started)
        return max(0.0, (machine_busy_seconds() - self._machine_start - self.last.cpu) / wall)


def _supervise_training(proc: subprocess.Popen[bytes], req: RunRequest, reader: _FrameReader,
                        stop: StopSignal | None, on_phase: Callable[[str], None]) -> tuple[_Verdict, _Phases, _Supervisor]:
    lim = req.limits
    sup = _Supervisor(proc, threads=req.threads, memory_limit_gb=req.memory_limit_gb, limits=lim, stop=stop)
    phases = _Phases()
    wall_cap = lim.wall_factor * (req.budget + lim.grace) + lim.wall_slack
    train_cap = lim.train_factor * req.budget + 1.0
    phase = "starting" if req.reported_metric is None else "training"  # a reported run marks no phases
    on_phase(phase)
    calibration_seen = False
    while True:
        exited = proc.poll() is not None
        sample = sup.poll()
        now = time.monotonic()
        wall = now - sup.started
        charge = sup.charge(sample)
        # Phase boundaries, as the frames mark them (the CPU at the first poll after the frame arrived).
        if phases.at_start is None and "start" in reader.arrived:
            phases.at_start, phases.wall_start = charge, reader.arrived["start"]
            phase = "training"
            on_phase(phase)
        if phases.at_end is None and "end" in reader.arrived:
            phases.at_end, phases.wall_end = charge, reader.arrived["end"]
            phase = "exporting"
            on_phase(phase)
        if exited:
            return _Verdict("exited"), phases, sup
        verdict = sup.check(sample, wall, wall_cap)
        if verdict is None and not calibration_seen and "calibrated" in reader.arrived:
            calibration_seen = True
            verdict = _calibrated_under_load(req, reader, sup)
        if verdict is None:
            verdict = _over_budget(req, phases, charge, now, train_cap)
            if verdict is not None and verdict.status == "timeout" and verdict.error and "past its budget" in verdict.error:
                # A step costs more CPU while another process shares the cores (caches, memory bandwidth, a
                # hyperthread sibling): a run that overran while the machine was busy did not get its budget's
                # worth of machine — not a measurement, and not the code's fault. Alone on the machine, an
                # overrun is the code's own (it computes more per step than its calibration showed).
                others = sup.others_cores()
                if others >= _BUSY_OTHERS:
                    verdict = _Verdict("starved", f"trained past its budget while the machine was busy (other processes "
                                                  f"kept {others:.1f} cores busy on average): {verdict.error.split(': ', 1)[1]}")
        if verdict is not None:
            _kill_tree(proc)
            return verdict, phases, sup
        time.sleep(_POLL_S)


def _calibrated_under_load(req: RunRequest, reader: _FrameReader, sup: _Supervisor) -> _Verdict | None:
    if not req.load_starves or req.anchor is None:
        return None
    frame = next((f for f in reader.frames if f.get("type") == "calibrated"), None)
    if frame is None or frame.get("anchored") is not False:
        return None
    others = sup.others_cores()
    if others < _BUSY_OTHERS:
        return None  # a quiet machine: the code's own speed changed, and its step count follows it
    return _Verdict("starved", f"its speed was measured while the machine was busy (other processes kept {others:.1f} "
                               f"cores busy) and disagreed with the anchor ({frame.get('steps')} steps planned, "
                               f"{req.anchor[0]} anchored): its step count would follow the load, not the code")


# Other processes keeping at least this many cores busy, on average over a run, make an overrun "starved".
_BUSY_OTHERS = 0.5


def _over_budget(req: RunRequest, phases: _Phases, charge: float, now: float, train_cap: float) -> _Verdict | None:
    """Each phase within its allowance: start-up and export share the grace, training its multiple of the budget."""
    lim = req.limits
    if req.reported_metric is not None:
        # The script keeps its own time and speaks no frames: the whole run is charged, against the budget's
        # training allowance plus the grace (on a GPU, its wall time too).
        spent = max(charge, now - phases.launched) if req.gpu else charge
        allowed = lim.train_factor * req.budget + lim.grace
        if spent > allowed:
            return _Verdict("timeout", f"ran past its budget: {spent:.1f} budget-seconds, over the {allowed:.1f} allowed "
                                       f"({lim.train_factor:g} × budget {req.budget:g} s + grace {lim.grace:g} s)")
        return None
    startup = phases.at_start if phases.at_start is not None else charge
    if phases.at_start is None:
        if startup > lim.grace:
            return _Verdict("timeout", f"used {startup:.1f} budget-seconds of CPU before training began "
                                       f"(start-up and export may use {lim.grace:g} together)")
        return None
    end = phases.at_end if phases.at_end is not None else charge
    training = end - phases.at_start
    if req.gpu and phases.wall_start is not None:
        # On a GPU the work is not CPU time: the training phase is charged its wall time too.
        wall_end = phases.wall_end if phases.wall_end is not None else now
        training = max(training, wall_end - phases.wall_start)
    if training > train_cap:
        return _Verdict("timeout", f"trained past its budget: {training:.1f} budget-seconds of CPU in training, "
                                   f"over the {train_cap:.1f} allowed ({lim.train_factor:g} × budget {req.budget:g} s)")
    if phases.at_end is not None:
        export = charge - phases.at_end
        if startup + export > lim.grace:
            return _Verdict("timeout", f"used {startup + export:.1f} budget-seconds of CPU outside training "
                                       f"(start-up {startup:.1f}, after training {export:.1f}; the grace is {lim.grace:g})")
    return None


# -- the run ------------------------------------------------------------------------------------------


def execute(
    req: RunRequest,
    on_frame: Callable[[Frame], None] = lambda frame: None,
    stop: StopSignal | None = None,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> RunOutcome:
    """Run one training run to its end (or its kill) and have the pinned harness score the model it saved."""
    req.log_path.parent.mkdir(parents=True, exist_ok=True)
    remove_tree(req.run_dir)
    scratch = req.run_dir / "scratch"
    scratch.mkdir(parents=True)
    read_fd, write_fd = os.pipe()
    run_env = {
        "OVERNIGHT_CHANNEL_FD": str(write_fd),
        "OVERNIGHT_BUDGET_S": repr(req.budget),
        "OVERNIGHT_BUDGET_CLOCK": req.clock,
        "OVERNIGHT_SEED": str(req.seed),
        "OVERNIGHT_THREADS": str(req.threads),
        "OVERNIGHT_SCALE": repr(req.scale),
        **({"OVERNIGHT_ANCHOR_STEPS": str(req.anchor[0]), "OVERNIGHT_ANCHOR_STEP_S": repr(req.anchor[1])}
           if req.anchor else {}),
        **({"CUDA_VISIBLE_DEVICES": req.devices} if req.devices is not None else {}),
        # Spin-waiting OpenMP threads would burn CPU time that the run is charged for.
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    launch = req.sandbox.training(
        command=resolve_command(req.command), tree=req.tree, workdir=req.workdir, scratch=scratch,
        data_files={name: req.data.directory / name for name in req.data.training_files},
        hidden_sources=list(req.data.hidden_sources), network=req.network, gpu=req.gpu, env=run_env,
        pass_fds=(write_fd,), memory_limit_gb=req.memory_limit_gb, model_name="model.ovm", readable=req.readable,
    )
    started = time.monotonic()
    try:
        with req.log_path.open("wb") as log:
            try:
                proc = subprocess.Popen(
                    launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True,
                    preexec_fn=launch.preexec,
                )
            except OSError as exc:
                os.close(read_fd)
                os.close(write_fd)
                return RunOutcome(status="crash", error=f"could not start {req.command[0]}: {exc}")
            os.close(write_fd)
            reader = _FrameReader(read_fd, on_frame)
            reader.start()
            verdict, phases, sup = _supervise_training(proc, req, reader, stop, on_phase)
            _kill_tree(proc)  # the whole tree goes with the run: stragglers, double-forked children
        reader.join(timeout=5)
        wall = time.monotonic() - started
        outcome = _summarise(reader.frames, verdict, sup, wall, proc.returncode)
        if "start" in reader.arrived:
            outcome.startup_seconds = reader.arrived["start"] - started
        if outcome.status == "crash" and outcome.error and outcome.error.startswith("the run exited"):
            # Say why, not only that: the last line of a traceback names the exception.
            last = _last_line(_tail(req.log_path))
            if last:
                outcome.error += f": {last}"
        if outcome.status == "ok" and req.reported_metric is not None:
            _read_reported(req, outcome, req.reported_metric)
        elif outcome.status == "ok":
            _after_run(req, outcome, scratch, phases)
            if outcome.status == "ok":
                on_phase("evaluating")
                _evaluate(req, outcome, stop)
        outcome.log_tail = _tail(req.log_path)
        return outcome
    finally:
        remove_tree(req.run_dir)


def _after_run(req: RunRequest, out: RunOutcome, scratch: Path, phases: _Phases) -> None:
    """What must hold before the model is scored: the data, the harness and the environment untouched, a model saved."""
    if not _manifest_unchanged(req.data):
        out.status, out.data_changed = "crash", True
        out.error = f"the harness's data in {req.data.directory} changed during the run: a run may not write it"
        return
    problem = req.after_run()
    if problem:
        out.status, out.error = "invalid", problem
        return
    if phases.at_end is None:
        out.status, out.error = "crash", "the run exited without finishing its training (no end frame)"
        return
    try:
        copy_out(scratch / "model.ovm", req.run_dir / "model.ovm", max_bytes=_MAX_MODEL_BYTES)
    except FileNotFoundError:
        out.status, out.error = "crash", "the run finished without saving a model for the harness to evaluate"
    except (OSError, ValueError) as exc:
        out.status, out.error = "invalid", f"the model file cannot be handed to the harness: {exc}"


def _read_reported(req: RunRequest, out: RunOutcome, metric: str) -> None:
    """Reported mode: the score is the script's own last ``<metric>: <number>`` line (and, where it prints them,
    autoresearch's ``num_steps``, ``training_seconds`` and ``peak_vram_mb``). Nothing here can vouch for it."""
    problem = req.after_run()
    if problem:
        out.status, out.error = "invalid", problem
        return
    text = req.log_path.read_text(encoding="utf-8", errors="replace")
    value = _reported(text, metric)
    if value is None:
        out.status, out.error = "crash", f"the run printed no finite `{metric}: <number>` line"
        return
    out.val_bpb = value
    steps = _reported(text, "num_steps")
    out.steps = int(steps) if steps is not None else out.steps
    out.train_seconds = _reported(text, "training_seconds") or out.train_seconds
    vram = _reported(text, "peak_vram_mb")
    if vram is not None:
        out.peak_mem_mb = vram


def _reported(text: str, name: str) -> float | None:
    """The last ``name: number`` (or ``name = number``) line of a run's output, if finite."""
    pattern = re.compile(rf"^\s*{re.escape(name)}\s*[:=]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$", re.M)
    found = pattern.findall(text)
    return finite(float(found[-1])) if found else None


def _manifest_unchanged(data: DataPin) -> bool:
    if data.manifest_sha256 is None:
        return True
    import hashlib

    try:
        digest = hashlib.sha256((data.directory / "manifest.json").read_bytes()).hexdigest()
    except OSError:
        return False
    return digest == data.manifest_sha256


def _summarise(frames: list[Frame], verdict: _Verdict, sup: _Supervisor, wall: float, returncode: int | None) -> RunOutcome:
    out = RunOutcome(status="ok", wall_seconds=wall, peak_mem_mb=sup.watch.peak_rss_mb or None,
                     cpu_seconds=sup.last.cpu, delay_seconds=sup.last.delay)
    error = verdict.error
    for frame in frames:
        kind = frame.get("type")
        if kind == "start":
            out.n_params = _int(frame.get("n_params"))
            out.device = str(frame.get("device", ""))[:32] or None
        elif kind == "calibrated":
            out.steps_planned = _int(frame.get("steps"))
            out.step_seconds = finite(frame.get("step_seconds"))
        elif kind == "progress":
            step, elapsed, loss = _int(frame.get("step")), finite(frame.get("elapsed")), finite(frame.get("train_loss"))
            if step is not None and elapsed is not None and loss is not None:
                out.curve.append((step, elapsed, loss))
            out.tokens_per_s = finite(frame.get("tokens_per_s")) or out.tokens_per_s
        elif kind == "end":
            out.steps = _int(frame.get("steps"))
            out.steps_planned = _int(frame.get("steps_planned")) or out.steps_planned
            out.tokens = _int(frame.get("tokens"))
            out.train_seconds = finite(frame.get("elapsed"))
            out.train_wall_seconds = finite(frame.get("wall"))
            reported = finite(frame.get("peak_mem_mb"))
            if reported is not None and out.device == "cuda":
                out.peak_mem_mb = reported  # GPU memory is only visible from inside the process
        elif kind == "error":
            error = error or str(frame.get("message", "the run reported an error"))[:2000]
    if out.tokens and out.train_seconds:
        out.tokens_per_s = out.tokens / out.train_seconds
    if verdict.status != "exited":
        out.status, out.error = verdict.status, error
    elif returncode != 0:
        out.status = "crash"
        out.error = error or f"the run exited with code {returncode}"
        if returncode is not None and returncode < 0:
            out.error = error or f"the run was killed by signal {-returncode}"
    return out


# -- evaluation ---------------------------------------------------------------------------------------


def _evaluate(req: RunRequest, out: RunOutcome, stop: StopSignal | None) -> None:
    problem = req.harness.check()
    if problem:
        out.status, out.error = "invalid", problem
        return
    model = req.run_dir / "model.ovm"
    if req.keep_model is not None:
        req.keep_model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model, req.keep_model)
    if req.evaluator is not None:
        answer = req.evaluator.evaluate(model, req.splits, req.threads, stop)
        out.eval_seconds = answer.seconds
        with req.log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n--- evaluation by the session's pinned harness (warm; its log: {req.evaluator.log_path}) ---\n"
                      f"{json.dumps(answer.result)[:20000] if answer.result else answer.error}\n")
        if answer.code is None:
            out.status = "interrupted" if answer.error == "stopped by the user" else "crash"
            out.error = f"evaluation: {answer.error}"
            return
        _judge(out, answer.code, answer.result, f"exit code {answer.code} (see {req.evaluator.log_path})")
        return
    _evaluate_cold(req, out, stop)


def _evaluate_cold(req: RunRequest, out: RunOutcome, stop: StopSignal | None) -> None:
    """One evaluation process for this model alone (a harness without a warm form)."""
    model = req.run_dir / "model.ovm"
    launch = req.sandbox.evaluation(
        command=[*resolve_command(req.harness.evaluate), "--splits", req.splits],
        harness_dir=req.harness.directory, workdir=req.harness.workdir, model_file=model,
        data_dir=req.data.directory, env={"OVERNIGHT_THREADS": str(req.threads), "OMP_WAIT_POLICY": "PASSIVE"},
    )
    started = time.monotonic()
    result_path = req.run_dir / "evaluation.out"
    with result_path.open("wb") as stdout, (req.run_dir / "evaluation.err").open("wb") as stderr:
        proc = subprocess.Popen(launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, start_new_session=True, preexec_fn=launch.preexec)
        lim = req.limits
        sup = _Supervisor(proc, threads=req.threads, memory_limit_gb=req.memory_limit_gb, limits=lim, stop=stop)
        verdict: _Verdict | None = None
        while proc.poll() is None:
            sample = sup.poll()
            wall = time.monotonic() - sup.started
            verdict = sup.check(sample, wall, lim.wall_factor * lim.eval_cpu / 4 + lim.wall_slack)
            if verdict is None and sup.charge(sample) > lim.eval_cpu:
                verdict = _Verdict("crash", f"the harness evaluation used more than {lim.eval_cpu:g} budget-seconds of CPU")
            if verdict is not None:
                break
            time.sleep(_POLL_S)
        _kill_tree(proc)
    out.eval_seconds = time.monotonic() - started
    stdout_text = result_path.read_text(encoding="utf-8", errors="replace")
    stderr_text = (req.run_dir / "evaluation.err").read_text(encoding="utf-8", errors="replace")
    with req.log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n--- evaluation by the session's pinned harness ---\n{stdout_text[-20000:]}{stderr_text[-20000:]}")
    if verdict is not None:
        status = "crash" if verdict.status == "timeout" else verdict.status
        out.status, out.error = status, f"evaluation: {verdict.error}"
        return
    _judge(out, proc.returncode, _last_json(stdout_text), _last_line(stderr_text) or f"exit code {proc.returncode}")


def _judge(out: RunOutcome, code: int | None, result: dict[str, Any] | None, failure: str) -> None:
    """The run's outcome from what the harness answered: scores, a refusal (``invalid``), or a failure."""
    if code == EXIT_REFUSED and result is not None and isinstance(result.get("refused"), str):
        out.status, out.error = "invalid", str(result["refused"])[:500]
        out.refused_check = str(result.get("check") or "") or None
        evidence = result.get("evidence")
        out.checks = {str(out.refused_check or "refused"): {"ok": False, **(evidence if isinstance(evidence, dict) else {})}}
        return
    if code != 0:
        out.status, out.error = "crash", f"evaluation failed: {failure}"
        return
    if result is None:
        out.status, out.error = "crash", "evaluation printed no result"
        return
    out.val_bpb = finite(result.get("val_bpb"))
    out.holdout_bpb = finite(result.get("holdout_bpb"))
    out.ood_bpb = finite(result.get("ood_bpb"))
    out.train_bpb = finite(result.get("train_bpb"))
    checks, flags = result.get("checks"), result.get("flags")
    out.checks = checks if isinstance(checks, dict) else {}
    out.flags = [str(f)[:300] for f in flags] if isinstance(flags, list) else []
    if out.val_bpb is None:
        out.status, out.error = "crash", f"evaluation gave no finite val_bpb: {result.get('val_bpb')!r}"


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None
