"""Synthetic journal rows and agent contexts: shared by the agent tests and bench/agent_pipelining.py."""

from __future__ import annotations

from typing import Any

from overnight.daemon.agents import Context
from overnight.daemon.journal import Experiment

TRAIN = "trainer/train.py"
SOURCE = "import math\nLR = 3e-3\nWEIGHT_DECAY = 0.1\n\n\ndef main():\n    return math.pi\n"


def exp(id_: int, status: str = "discard", kind: str = "experiment", description: str = "something",
        val: float | None = 2.0, **kw: Any) -> Experiment:
    values: dict[str, Any] = dict(
        id=id_, tag="t", kind=kind, status=status, parent_commit="p", commit_sha="c", ref=None,
        description=description, hypothesis="", reasoning="", diff="", agent="claude", meta={}, val_bpb=val,
        holdout_bpb=None, decided_by=None, decision_reason=None, evidence=None, error=None, attempts=1,
        created=0.0, finished=None)
    values.update(kw)
    return Experiment(**values)


def context(**kw: Any) -> Context:
    base = exp(1, "keep", "baseline", "baseline", 2.5, evidence={"sigma": 0.004})
    values: dict[str, Any] = dict(program="Lower val_bpb.", files={TRAIN: SOURCE}, incumbent=base,
                                  history=[base], feedback=[], sigma=0.004, bar=0.012)
    values.update(kw)
    return Context(**values)
