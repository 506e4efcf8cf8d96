"""Every training run as TensorBoard event files, and the ``overnight tensorboard`` command that serves them.

Layout, under the workspace's state folder (``.overnight``)::

    tb/<tag>/exp0007/run1/   one folder per run: TensorBoard draws each run as its own line
    tb/<tag>/session/        the incumbent's val_bpb after each decision: the session's progress as one chart

The journal stays the record; these files are a convenience for looking at curves, so writing them never
stops the experiment loop: a failure is a logged warning and the function returns None.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

log = logging.getLogger(__name__)

_EVENTS = "events.out.tfevents.*"
# The writers here live for one call and close() flushes; this only bounds how stale a file gets meanwhile.
_FLUSH_SECS = 10
# What a failed write may raise: the filesystem (OSError), a tag that is not a plain name (ValueError), and
# a missing tensorboard package (ImportError). None of them may reach the loop.
_WRITE_ERRORS = (OSError, ValueError, ImportError)


class _Writer:
    """Scalars and text as TensorBoard events, written with the ``tensorboard`` package's own event-file writer.

    Not ``torch.utils.tensorboard.SummaryWriter``: that imports torch, which would cost the long-lived daemon
    ~1.2 s and ~200 MB the first time a run is recorded (the daemon never imports torch otherwise)."""

    def __init__(self, folder: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._file = EventFileWriter(str(folder), flush_secs=_FLUSH_SECS)

    def _add(self, summary: Any, step: int, walltime: float | None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._file.add_event(Event(summary=summary, step=step, wall_time=time.time() if walltime is None else walltime))

    def add_scalar(self, tag: str, value: float, global_step: int, walltime: float | None = None) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._add(Summary(value=[Summary.Value(tag=tag, simple_value=value)]), global_step, walltime)

    def add_text(self, tag: str, text: str, global_step: int) -> None:
        """As SummaryWriter.add_text writes it (tag ``<tag>/text_summary``), so TensorBoard's text tab shows it."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        self._add(Summary(value=[Summary.Value(tag=f"{tag}/text_summary", metadata=metadata, tensor=tensor)]),
                  global_step, None)

    def close(self) -> None:
        self._file.close()


# -- layout -----------------------------------------------------------------------------------------


def _tag_folder(state_dir: Path, tag: str) -> Path:
    # The tag becomes a path component: one that climbs out (".."), nests ("/") or is empty would put files
    # outside the session's folder.
    if not tag or tag in (".", "..") or ".." in tag or "/" in tag or "\\" in tag or "\0" in tag:
        raise ValueError(f"session tag {tag!r} is not a plain name")
    return state_dir / "tb" / tag


def run_dir(state_dir: Path, tag: str, experiment_id: int, run: int) -> Path:
    """The folder of one run's event files: ``state_dir/tb/<tag>/exp<id:04d>/run<run>``."""
    return _tag_folder(state_dir, tag) / f"exp{experiment_id:04d}" / f"run{run}"


def session_dir(state_dir: Path, tag: str) -> Path:
    """The folder of the session's incumbent line (a sibling of the experiments, which are all ``exp…``)."""
    return _tag_folder(state_dir, tag) / "session"


def has_events(folder: Path) -> bool:
    """Whether any event file lies under ``folder``."""
    return folder.is_dir() and any(path.is_file() for path in folder.rglob(_EVENTS))


# -- writing ----------------------------------------------------------------------------------------


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _fresh_writer(folder: Path) -> _Writer:
    """A writer on an emptied folder: a run recorded again (a resumed loop, a starved run re-done) replaces
    its old events instead of adding a second copy of every point to the chart."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(_EVENTS):
        old.unlink()
    return _Writer(folder)


def _write_curve(writer: _Writer, curve: Sequence[tuple[int, float, float]]) -> None:
    """``train/loss`` by step. Wall times are laid out so TensorBoard's "relative" axis reads as training seconds."""
    finite_elapsed = [float(p[1]) for p in curve if math.isfinite(p[1])]
    anchor = time.time() - (finite_elapsed[-1] if finite_elapsed else 0.0)
    for step, elapsed, loss in curve:
        if not math.isfinite(loss):  # a diverged step: NaN would break the chart's scale, leave a gap instead
            continue
        walltime = anchor + elapsed if math.isfinite(elapsed) else None
        writer.add_scalar("train/loss", float(loss), global_step=int(step), walltime=walltime)


def _write_scalars(writer: _Writer, step: int, values: dict[str, float | None]) -> None:
    for name, value in values.items():
        if _finite(value):
            assert value is not None
            writer.add_scalar(name, float(value), global_step=step)


def _summary(experiment_id: int, run: int, status: str, description: str) -> str:
    # Markdown: TensorBoard's text tab renders it.
    return f"**#{experiment_id}**, run {run}: `{status}`\n\n{description}"


def write_run(
    state_dir: Path,
    tag: str,
    *,
    experiment_id: int,
    run: int,
    status: str,
    curve: Sequence[tuple[int, float, float]],
    val_bpb: float | None,
    holdout_bpb: float | None,
    ood_bpb: float | None,
    train_bpb: float | None,
    steps: int | None,
    tokens_per_s: float | None,
    wall_seconds: float | None,
    description: str,
) -> Path | None:
    """Write one finished run's curve, scores and summary; the folder written, or None when it could not be.

    ``curve`` is the run's ``(step, elapsed_seconds, train_loss)`` points. A run whose status is not "ok"
    still gets its curve (it shows where it diverged) but no scores, which it did not measure."""
    folder: Path | None = None
    try:
        folder = run_dir(state_dir, tag, experiment_id, run)
        writer = _fresh_writer(folder)
        try:
            _write_curve(writer, curve)
            final = steps if steps is not None else (int(curve[-1][0]) if curve else 0)
            if status == "ok":
                _write_scalars(writer, final, {
                    "eval/val_bpb": val_bpb, "eval/holdout_bpb": holdout_bpb, "eval/ood_bpb": ood_bpb,
                    "eval/train_bpb": train_bpb, "run/tokens_per_s": tokens_per_s, "run/wall_seconds": wall_seconds,
                })
            writer.add_text("run/summary", _summary(experiment_id, run, status, description), global_step=final)
        finally:
            writer.close()
    except _WRITE_ERRORS as exc:
        log.warning("TensorBoard files of #%s run %s not written (%s): %s", experiment_id, run, folder or state_dir, exc)
        return None
    return folder


def incumbent_line(state_dir: Path, tag: str, points: Iterable[tuple[int, float]]) -> None:
    """Rewrite the session's ``session/best_val_bpb`` line: one ``(experiment_id, incumbent val_bpb)`` point
    per decision, the whole line each time (it is short, and a rewrite cannot leave a stale point behind)."""
    folder: Path | None = None
    try:
        folder = session_dir(state_dir, tag)
        writer = _fresh_writer(folder)
        try:
            for experiment_id, best in points:
                if _finite(best):
                    writer.add_scalar("session/best_val_bpb", float(best), global_step=int(experiment_id))
        finally:
            writer.close()
    except _WRITE_ERRORS as exc:
        log.warning("TensorBoard incumbent line of session %s not written (%s): %s", tag, folder or state_dir, exc)


# -- the command ------------------------------------------------------------------------------------


def _folder(state_dir: Path, tag: str | None) -> Path:
    return state_dir / "tb" if tag is None else _tag_folder(state_dir, tag)


def command(state_dir: Path, tag: str | None) -> list[str]:
    """The command line that serves one session's files (``tag``) or every session's (None)."""
    # Loopback only, like the daemon: the curves and descriptions are the user's work, not the network's.
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(_folder(state_dir, tag)), "--host", "127.0.0.1"]


def cmd_tensorboard(args: argparse.Namespace, console: Console) -> int:
    """``overnight tensorboard``: print the command that serves the event files, or (``--start``) run it."""
    # Imported here: cli.py imports this module to register the command, and the workspace is found exactly
    # as every other command finds it (-C, else the git repository around the current directory).
    from .cli import _root
    from .config import load_config

    state_dir = load_config(_root(getattr(args, "workspace", None))).state_dir
    try:
        folder = _folder(state_dir, args.tag)
    except ValueError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 1
    if not has_events(folder):
        console.print(f"no TensorBoard files yet under {escape(str(folder))}: they are written as runs finish "
                      "(tensorboard = true in overnight.toml)", highlight=False)
        return 1
    argv = command(state_dir, args.tag)
    if not args.start:
        what = f"session {args.tag}" if args.tag else "every session"
        console.print(f"TensorBoard of {escape(what)}: each run's training loss and scores, one line per run, and the "
                      "incumbent's val_bpb per decision. Serve it on this machine with:", highlight=False)
        console.print(escape(shlex.join(argv)), highlight=False, soft_wrap=True)
        return 0
    # A child, not exec: Ctrl-C reaches it (same process group) and this command returns its exit code.
    return subprocess.run(argv, check=False).returncode


def add_parser(sub: Any) -> None:  # argparse._SubParsersAction of the CLI's own parser class
    """Register ``overnight tensorboard`` on the CLI's subcommands."""
    p = sub.add_parser("tensorboard", help="every run's loss curve and scores in TensorBoard (loopback only)")
    p.add_argument("--tag", help="one session (default: every session)")
    p.add_argument("--start", action="store_true", help="start TensorBoard here instead of printing its command line")
    p.set_defaults(func=cmd_tensorboard)
