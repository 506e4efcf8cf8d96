"""The session's noise, as every part of Overnight states it: pooled over all runs of unchanged code."""

from __future__ import annotations

from .decide import Noise, pooled_noise
from .journal import Journal


def session_noise(journal: Journal, tag: str, min_sigma: float, column: str = "val_bpb") -> Noise:
    """Pooled σ of the session's unchanged code (baselines, incumbents, their re-runs); df 0 before it is known."""
    groups = journal.unchanged_groups(tag, column)
    try:
        return pooled_noise(groups, min_sigma)
    except ValueError:  # no version measured twice yet
        return Noise(sigma=min_sigma, df=0, runs=sum(map(len, groups)), groups=len(groups))
