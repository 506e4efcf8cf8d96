"""What the agent sees beyond the journal's lines: how each recent experiment trained (its loss curve against its
incumbent's, at equal fractions of the budget) and the research memory; and what it never sees (holdout, OOD)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from overnight.daemon import memory
from overnight.daemon.agents.curves import compare_line, condense, first_curve, of_experiments
from overnight.daemon.agents.prompt import MEMORY_CHARS, build, journal_text
from overnight.daemon.journal import Run

from ..fakes.context import context, exp
from .test_memory import _session

# A straight line from loss 4.0 at 0 s to 2.0 at 80 s, reported every 4 s (1/20 of an 80 s budget).
LINE = [(k, 4.0 * k, 4.0 - 0.1 * k) for k in range(21)]


# -- condensing a curve -------------------------------------------------------------------------------------------


def test_condense_reads_the_loss_at_equal_fractions_of_the_budget() -> None:
    points = condense(LINE, 80.0)
    assert [f for f, _ in points] == [k / 8 for k in range(1, 9)]
    assert [round(y, 6) for _, y in points] == [3.75, 3.5, 3.25, 3.0, 2.75, 2.5, 2.25, 2.0]
    # Between two reports: linear interpolation.
    assert condense([(0, 0.0, 4.0), (1, 30.0, 3.0), (2, 60.0, 1.0)], 60.0, points=4) == [
        (0.25, 3.5), (0.5, 3.0), (0.75, 2.0), (1.0, 1.0)]


def test_condense_skips_non_finite_losses_and_fractions_the_run_did_not_reach() -> None:
    noisy = [(k, t, math.nan if k == 10 else y) for k, t, y in LINE] + [(99, 90.0, math.inf)]
    assert condense(noisy, 80.0) == condense(LINE, 80.0)
    # A run pruned at 35 s of an 80 s budget: the fractions up to 35 s, none after.
    pruned = [p for p in LINE if p[1] <= 35.0]
    assert [f for f, _ in condense(pruned, 80.0)] == [0.125, 0.25, 0.375]
    # The last report 3 s before the budget's end still stands for its end (within half a step).
    assert condense([p for p in LINE if p[1] <= 77.0], 80.0)[-1] == (1.0, pytest.approx(2.1))
    assert condense([], 80.0) == [] and condense(LINE, 0.0) == []


def test_compare_line_says_where_the_candidate_was_ahead_or_behind() -> None:
    cand = [(k / 8, y) for k, y in enumerate([3.6, 3.21, 2.9, 2.80, 2.7, 2.61, 2.55, 2.50], 1)]
    inc = [(k / 8, y) for k, y in enumerate([3.7, 3.25, 3.0, 2.84, 2.7, 2.60, 2.50, 2.47], 1)]
    assert compare_line(cand, inc) == ("loss at 25/50/75/100% of budget: 3.210/2.800/2.610/2.500 "
                                       "(incumbent 3.250/2.840/2.600/2.470): ahead early, behind at the end")
    assert compare_line(cand, cand).endswith(": level throughout")
    dip = [(f, y + (0.1 if f == 0.5 else 0.0)) for f, y in inc]
    assert compare_line(dip, inc).endswith(": level early and at the end, behind in between")
    assert compare_line(cand, []) == "loss at 25/50/75/100% of budget: 3.210/2.800/2.610/2.500"
    assert compare_line([], inc) == ""
    # A curve that stops early (pruned): compared where both have points, and said so.
    line = compare_line(cand[:3], inc)
    assert line.startswith("loss at 12.5/25/37.5% of budget: 3.600/3.210/2.900 (incumbent 3.700/3.250/3.000)")
    assert line.endswith("ahead throughout; its curve stops at 37.5% of budget")


def test_of_experiments_takes_each_experiments_first_curve_whatever_its_status(tmp_path: Path) -> None:
    b, ids = _session(tmp_path)
    pruned = b.j.start_experiment(tag="s", kind="experiment", parent_commit="c2", description="slow", agent="claude")
    b.j.add_run(Run(experiment_id=pruned, seed=1, status="pruned", started=0.0, finished=1.0, curve=LINE[:9]))
    b.j.add_run(Run(experiment_id=pruned, seed=2, status="ok", started=0.0, finished=1.0, curve=LINE))
    b.j.finish_experiment(pruned, status="pruned", decided_by="pruner", reason="pruned")
    assert first_curve(b.j.runs(pruned)) == LINE[:9]
    curves = of_experiments(b.j, b.j.experiments("s"), 80.0)
    assert curves[pruned] == condense(LINE[:9], 80.0) and ids["flash"] not in curves  # the crash drew no curve
    assert curves[ids["lr"]] == condense([(0, 0.0, 5.0), (100, 30.0, 3.0), (200, 60.0, 2.5)], 80.0)


# -- the prompt ---------------------------------------------------------------------------------------------------


def _history() -> list:  # type: ignore[type-arg]
    base = exp(1, "keep", "baseline", "baseline", 2.5, commit_sha="c1", evidence={"sigma": 0.004})
    kept = exp(2, "keep", description="LR 3e-3 → 6e-3", val=2.4, parent_commit="c1", commit_sha="c2",
               evidence={"incumbent_mean": 2.5, "incumbent_id": 1})
    crashed = exp(3, "crash", description="flash attention", val=None, parent_commit="c2", commit_sha="c3",
                  error="RuntimeError: boom")
    return [base, kept, crashed]


def _prompt(**kw: object) -> str:
    history = _history()
    req = build(context(history=history, incumbent=history[1], **kw))
    return str(req.messages[0]["content"][1]["text"])


def test_the_curve_lines_sit_under_their_experiments_with_the_right_incumbent() -> None:
    base_curve = condense(LINE, 80.0)
    kept_curve = [(f, y - 0.1) for f, y in base_curve]
    crash_curve = [(f, y + 0.05) for f, y in base_curve[:2]]
    text = _prompt(curves={1: base_curve, 2: kept_curve, 3: crash_curve})
    recent = text.split("## Recent experiments")[1]
    lines = recent.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("#2 keep")))
    assert lines[at + 1] == ("    loss at 25/50/75/100% of budget: 3.400/2.900/2.400/1.900 "
                             "(incumbent #1 3.500/3.000/2.500/2.000): ahead throughout")
    # The crash has no evidence: its incumbent is the kept experiment its code was made from (#2).
    at = lines.index(next(line for line in lines if line.startswith("#3 crash")))
    assert lines[at + 1] == ("    loss at 12.5/25% of budget: 3.800/3.550 (incumbent #2 3.650/3.400): behind throughout; "
                             "its curve stops at 25% of budget")


def test_the_memory_comes_before_the_history_headings_nested_and_capped() -> None:
    note = "# What we learned — session s\n\n## Kept\n- #2 LR 3e-3 → 6e-3: Δ -0.1000 val_bpb (25.0σ, 2 runs)\n"
    text = _prompt(memory=note)
    assert text.index("## Where we stand") < text.index("## What we learned (research memory)") < text.index(
        "## Kept so far") < text.index("## Recent experiments")
    assert "### What we learned — session s" in text and "#### Kept" in text
    assert "- #2 LR 3e-3 → 6e-3: Δ -0.1000 val_bpb (25.0σ, 2 runs)" in text
    long = _prompt(memory="\n".join(f"- line {k}: " + "x" * 80 for k in range(200)))
    section = long.split("## What we learned (research memory)")[1].split("## Kept so far")[0]
    assert len(section) < MEMORY_CHARS + 300 and "more characters)" in section and "- line 199" not in section


def test_nothing_new_appears_without_memory_or_curves() -> None:
    text = _prompt()
    assert "research memory" not in text and "loss at" not in text
    assert text == _prompt(memory="  \n", curves={})
    # A running experiment's partial curve is not compared.
    history = [*_history(), exp(4, "running", description="deeper", val=None, parent_commit="c2")]
    ctx = context(history=history, incumbent=history[1], curves={4: condense(LINE[:5], 80.0)})
    assert "loss at" not in journal_text(ctx)


def test_holdout_and_ood_never_reach_the_prompt(tmp_path: Path) -> None:
    """The loop strips them from the experiments it passes (loop._for_agent); the prompt never prints those fields
    either, and the memory, generated from the raw journal, never states them."""
    b, ids = _session(tmp_path)
    raw = b.j.experiments("s")  # unstripped: holdout_bpb, ood_bpb, evidence["holdout"], the held reason
    held = next(e for e in raw if e.id == ids["held"])
    assert held.holdout_bpb == 2.6 and held.ood_bpb == 3.4567 and held.evidence and "holdout" in held.evidence
    assert held.decision_reason and "2.5987" in held.decision_reason
    incumbent = next(e for e in raw if e.id == ids["lr"])
    ctx = context(history=raw, incumbent=incumbent, memory=memory.refresh(b.j, tmp_path / ".overnight", "s"),
                  curves=of_experiments(b.j, raw, 60.0))
    sent = json.dumps(build(ctx).messages) + json.dumps(build(ctx).system)
    assert "loss at" in sent and "research memory" in sent
    for hidden in ("2.4312", "2.5987", "2.6000", "3.4567", "holdout 2", "ood"):
        assert hidden not in sent, hidden
