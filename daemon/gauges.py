"""The holdout and out-of-distribution gauges, scored only when a keep needs them.

Every run is scored on val (the metric) and on a slice of its training split (the val-far-below-train flag) at
once. Holdout and OOD serve one decision only: whether a candidate the keep rule would keep is held back for the
human (its holdout got worse beyond noise) or flagged (its OOD did). Most candidates are discarded, so scoring
both gauges on every run spent ~2 of the ~4.5 CPU-seconds of each evaluation on numbers no decision read.

A candidate's runs therefore keep their model file next to their log (``<exp>-<k>.ovm``) until the candidate is
decided; a would-be keep has the gauges scored on those files by the same warm, sandboxed evaluator, before the
decision is recorded. Baselines and the incumbent's re-runs are scored on everything at once, as before.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .evaluator import Evaluator, finite
from .supervise import StopSignal

# What a candidate's run is scored on at first, and what its gauges add when a keep needs them.
FIRST = "val"
GAUGES = "holdout,ood"
EVERYTHING = "val,holdout,ood"


@dataclass(frozen=True)
class Gauges:
    holdout_bpb: float | None
    ood_bpb: float | None
    error: str | None = None
    interrupted: bool = False


def kept_model(log_path: Path) -> Path:
    """Where a candidate's run keeps its model until the candidate is decided: beside its log."""
    return log_path.with_suffix(".ovm")


def score(evaluator: Evaluator, model: Path, threads: int, stop: StopSignal | None) -> Gauges:
    """Holdout and OOD of a kept model file (which stays where it is: the evaluator is handed a copy)."""
    if not model.is_file():
        return Gauges(None, None, f"its model file {model.name} is gone")
    copy = model.with_name(f".gauge-{model.name}")
    shutil.copyfile(model, copy)
    try:
        answer = evaluator.evaluate(copy, GAUGES, threads, stop)
    finally:
        copy.unlink(missing_ok=True)
    if answer.code != 0 or answer.result is None:
        return Gauges(None, None, answer.error or f"the harness answered code {answer.code}",
                      interrupted=answer.error == "stopped by the user")
    return Gauges(finite(answer.result.get("holdout_bpb")), finite(answer.result.get("ood_bpb")))


def discard(runs_dir: Path, experiment_id: int | None = None) -> None:
    """Drop the kept model files of one experiment (decided, failed or interrupted), or all of a session's."""
    pattern = "*.ovm" if experiment_id is None else f"{experiment_id}-*.ovm"
    for path in runs_dir.glob(pattern):
        path.unlink(missing_ok=True)
