"""The keep rule and the noise statistics behind it.

A candidate is kept only if it beats the incumbent by more than ``keep_sigma`` standard errors of
the difference, where σ is the run-to-run noise measured by repeating the baseline at session
start. A candidate that clears the bar on its first run is re-run on another seed before it is
kept, so a lucky seed is not banked as an improvement.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    keep: bool
    # True when the first screen passed and a confirmation run on another seed is wanted.
    confirm: bool
    reason: str
    evidence: dict[str, Any]


def noise_sigma(baseline: list[float], min_sigma: float) -> float:
    """Run-to-run σ of the metric from repeated baseline runs, floored at ``min_sigma``."""
    if len(baseline) < 2:
        raise ValueError("the noise floor needs at least two baseline runs")
    return max(statistics.stdev(baseline), min_sigma)


def judge(
    incumbent: list[float], candidate: list[float], *, sigma: float, keep_sigma: float,
    direction: str, confirm_runs: int,
) -> Verdict:
    """Compare the candidate's runs with the incumbent's; say keep, discard, or run again."""
    if not incumbent or not candidate:
        raise ValueError("both the incumbent and the candidate need at least one run")
    inc_mean, cand_mean = statistics.fmean(incumbent), statistics.fmean(candidate)
    sign = 1.0 if direction == "minimize" else -1.0
    improvement = sign * (inc_mean - cand_mean)
    stderr = sigma * math.sqrt(1 / len(incumbent) + 1 / len(candidate))
    threshold = keep_sigma * stderr
    z = improvement / stderr
    evidence = {
        "incumbent_runs": incumbent,
        "incumbent_mean": inc_mean,
        "candidate_runs": candidate,
        "candidate_mean": cand_mean,
        "improvement": improvement,
        "sigma": sigma,
        "stderr": stderr,
        "threshold": threshold,
        "z": z,
        "keep_sigma": keep_sigma,
    }
    cleared = improvement > threshold
    summary = f"{inc_mean:.4f} → {cand_mean:.4f} (Δ {-sign * improvement:+.4f}, {z:+.1f}σ; bar {threshold:.4f})"
    if not cleared:
        if len(candidate) > 1 and improvement > 0:
            return Verdict(False, False, f"did not hold up on another seed: {summary}", evidence)
        return Verdict(False, False, f"no improvement beyond noise: {summary}", evidence)
    if len(candidate) < 1 + confirm_runs:
        return Verdict(False, True, f"cleared the bar once, confirming on another seed: {summary}", evidence)
    return Verdict(True, False, f"improvement beyond noise: {summary}", evidence)
