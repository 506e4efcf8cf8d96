"""What people see (`results`, `show`, `plot`, the live view, the suggestions' evidence), checked against a real
journal filled the way the loop fills it: agent text verbatim, one unit for every decision (describe()), σ pooled
over the session's unchanged code, held / starved / invalid visible, an unsealed session marked."""

from __future__ import annotations

import json
import math
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from overnight.daemon import report
from overnight.daemon.cli import main
from overnight.daemon.decide import Rule, describe, judge, pooled_noise, worse_beyond_noise
from overnight.daemon.events import (
    ExperimentFinished,
    ExperimentStarted,
    Flagged,
    Message,
    PhaseChanged,
    Progress,
    RunFinished,
    RunStarted,
    SessionOpened,
    StateChanged,
    TransferChecked,
)
from overnight.daemon.executor import RunOutcome
from overnight.daemon.journal import Journal, Run, Session
from overnight.daemon.live import LiveView
from overnight.daemon.noise import session_noise
from overnight.daemon.suggestions import SuggestionBook, cumulative_evidence, experiment_evidence

TRICKY = "use x[0] and [bold]not bold[/bold] in [sweep]"
MIN_SIGMA = 0.001
CHECKS_OK = {"load": {"ok": True, "format": "safetensors"}, "batch": {"ok": True, "max_deviation": 0.0},
             "causal": {"ok": True, "max_deviation": 0.0}, "finite": {"ok": True}}
CAUSAL_FAILED = {"causal": {"ok": False, "window_start": 512, "cut": 64, "replaced_with": "random bytes"}}
REFUSED = "the model looks at future bytes: its prediction at a position changes when only later bytes change"


def _journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.db")
    j.create_session(Session("t", "overnight/t", "abc", {}, {}, 0.0))
    exp_id = j.start_experiment(tag="t", kind="experiment", parent_commit="abc", description=TRICKY, agent="replay",
                                hypothesis=TRICKY)
    j.add_run(Run(experiment_id=exp_id, seed=1, status="crash", started=0.0, finished=1.0, error="boom",
                  log_tail=f"Traceback\n{TRICKY}\n", log_path="x.log"))
    j.finish_experiment(exp_id, status="crash", decided_by="loop", reason=TRICKY, error=TRICKY)
    return j


def _run(j: Journal, exp_id: int, seed: int, val: float | None, hold: float | None = None, status: str = "ok",
         **extra: Any) -> None:
    j.add_run(Run(experiment_id=exp_id, seed=seed, status=status, started=0.0, finished=1.0, val_bpb=val,
                  holdout_bpb=hold, ood_bpb=None if val is None else val + 0.9, train_bpb=None if val is None else val - 0.1,
                  steps=410 if val is not None else None, steps_planned=450, cpu_seconds=58.2, peak_mem_mb=900.0,
                  checks=extra.pop("checks", CHECKS_OK if status == "ok" else {}), **extra))


def _session(tmp_path: Path, sandbox: str = "none") -> Journal:
    """A session as the loop records it: a baseline, a keep, a held keep, a discard, an invalid run, a starved run,
    a transfer check and flags; every decision's evidence from the real keep rule."""
    j = Journal(tmp_path / ".overnight" / "journal.db")
    config = {"sandbox": sandbox, "network": False, "min_sigma": MIN_SIGMA, "direction": "minimize", "budget": 60.0}
    j.create_session(Session("s", "overnight/s", "abc", {}, config, 0.0))
    rule = Rule()

    base = j.start_experiment(tag="s", kind="baseline", parent_commit="abc", description="baseline", agent="loop")
    base_val, base_hold = [2.410, 2.404, 2.416], [2.430, 2.425, 2.436]
    for k, (v, h) in enumerate(zip(base_val, base_hold, strict=True)):
        _run(j, base, 100 * base + k, v, h)
    noise = pooled_noise([base_val], MIN_SIGMA)
    j.finish_experiment(base, status="keep", decided_by="keep rule", reason="baseline: 2.4100 ± 0.0060 over 3 runs",
                        evidence={"runs": base_val, "mean": 2.41, "sigma": noise.sigma, "df": noise.df},
                        val_bpb=2.41, holdout_bpb=sum(base_hold) / 3, ood_bpb=3.31)

    def candidate(description: str, vals: list[float], holds: list[float], incumbent: list[float],
                  inc_holds: list[float]) -> tuple[int, dict[str, Any], str]:
        exp_id = j.start_experiment(tag="s", kind="experiment", parent_commit="abc", description=description,
                                    agent="replay")
        j.set_commit(exp_id, f"{exp_id:07d}aaaa", f"refs/overnight/s/{exp_id}", "")
        for k, (v, h) in enumerate(zip(vals, holds, strict=True)):
            _run(j, exp_id, 100 * exp_id + k, v, h)
        verdict = judge(incumbent, vals, session_noise(j, "s", MIN_SIGMA), rule, "minimize")
        ev = {**verdict.evidence, "incumbent_id": base}
        status, reason = verdict.decision, verdict.reason
        if status == "keep":
            worse, check = worse_beyond_noise(inc_holds, holds, session_noise(j, "s", MIN_SIGMA, "holdout_bpb"),
                                              "minimize", rule.alpha)
            ev["holdout"] = check
            if worse:
                status = "held"
                reason = f"val improved but the holdout got worse beyond noise: holdout {check['incumbent_mean']:.4f} → " \
                         f"{check['candidate_mean']:.4f}"
        j.finish_experiment(exp_id, status=status, decided_by="keep rule", reason=reason, evidence=ev,
                            val_bpb=sum(vals) / len(vals), holdout_bpb=sum(holds) / len(holds),
                            ood_bpb=sum(vals) / len(vals) + 0.9)
        return exp_id, ev, status

    held, _, status = candidate("memorise the validation split", [2.360, 2.358], [2.520, 2.526], base_val, base_hold)
    assert status == "held"
    kept, _, status = candidate("restore a sane learning rate", [2.372, 2.368], [2.392, 2.390], base_val, base_hold)
    assert status == "keep"
    j.add_flag("s", f"#{held} is held for you: val improved but the holdout got worse beyond noise")
    discarded, _, status = candidate("a wider MLP", [2.374], [2.395], [2.372, 2.368], [2.392, 2.390])
    assert status == "discard"

    bad = j.start_experiment(tag="s", kind="experiment", parent_commit="abc", description="peek ahead", agent="replay")
    _run(j, bad, 100 * bad, None, status="starved", error="the machine gave it too little CPU: 200 s wall for 60 s",
         delay_seconds=41.5)
    _run(j, bad, 100 * bad + 1, None, status="invalid", error=REFUSED, checks=CAUSAL_FAILED)
    j.finish_experiment(bad, status="invalid", decided_by="loop", reason=f"run 2 refused: {REFUSED}", error=REFUSED,
                        evidence={"check": "causal", "checks": CAUSAL_FAILED})
    j.add_transfer("s", incumbent_id=kept, baseline_id=base, budget=240.0, scale=2.0, baseline_bpb=2.2,
                   incumbent_bpb=2.175, gain=0.025, gain_at_budget=0.04, ratio=0.625, error=None)
    return j


def _render(renderable: object) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def _by(j: Journal, description: str) -> Any:
    return next(e for e in j.experiments("s") if e.description == description)


# -- agent text ------------------------------------------------------------------------------------


def test_table_and_show_print_agent_text_verbatim(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rows = report.rows(j, "t")
    assert TRICKY in _render(report.to_table(rows))
    assert TRICKY in _render(report.results(j, "t"))
    exp = j.experiments("t")[0]
    shown = _render(report.show(exp, j.runs(exp.id), j))
    assert shown.count(TRICKY) >= 4  # description, hypothesis, decision, error, log tail


def test_tsv_keeps_one_line_per_experiment(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    tsv = report.to_tsv(report.rows(j, "t"))
    assert tsv.splitlines()[1].split("\t")[1:4] == ["0.000000", "0.0", "crash"]


# -- results ---------------------------------------------------------------------------------------


def test_tsv_keeps_autoresearchs_columns_and_writes_held_as_discard(tmp_path: Path) -> None:
    j = _session(tmp_path)
    lines = report.to_tsv(report.rows(j, "s")).splitlines()
    assert lines[0].split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    by_desc = {line.split("\t")[4]: line.split("\t") for line in lines[1:]}
    assert all(len(cols) == 5 for cols in by_desc.values())
    assert by_desc["memorise the validation split"][3] == "discard"
    assert by_desc["restore a sane learning rate"][3] == "keep"
    assert by_desc["peek ahead"][1:4] == ["0.000000", "0.9", "crash"]  # a refused model: a failed run there


@pytest.mark.parametrize(("status", "written"), [
    ("keep", "keep"), ("discard", "discard"), ("held", "discard"), ("pruned", "discard"), ("crash", "crash"),
    ("timeout", "crash"), ("invalid", "crash"), ("interrupted", None), ("running", None),
])
def test_tsv_speaks_only_autoresearchs_statuses(status: str, written: str | None) -> None:
    row = report.Row(id=1, kind="experiment", commit="abc1234", val_bpb=1.0, delta=None, holdout_bpb=None,
                     memory_gb=None, status=status, description="d", runs=1, steps=None)
    lines = report.to_tsv([row]).splitlines()
    assert [line.split("\t")[3] for line in lines[1:]] == ([written] if written else [])


def test_results_table_has_holdout_ood_held_transfer_flags_and_marks_an_unsealed_session(tmp_path: Path) -> None:
    j = _session(tmp_path, sandbox="none")
    out = _render(report.results(j, "s"))
    header = out.splitlines()[0]
    assert "UNSEALED" in header and "session s" in header
    assert "4 experiments: 1 kept, 1 held, 1 discarded, 1 failed" in header
    assert report.noise_text(session_noise(j, "s", MIN_SIGMA)) in header  # the pooled σ, not the baseline's
    assert 'sandbox = "none"' in out and "could read the validation data" in out
    assert "holdout" in out and "OOD" in out
    kept = _by(j, "restore a sane learning rate")
    row = next(line for line in out.splitlines() if "restore a sane learning rate" in line)
    assert f"{kept.holdout_bpb:.4f}" in row and f"{kept.ood_bpb:.4f}" in row and "keep" in row
    assert "held" in next(line for line in out.splitlines() if "memorise the validation split" in line)
    assert f"transfer check of #{kept.id} at 240 s, model scale 2: ratio 0.62 (62% of the gain survived" in out
    assert "⚠ #" in out and "is held for you" in out


def test_a_sealed_session_is_not_marked_unsealed(tmp_path: Path) -> None:
    j = _session(tmp_path, sandbox="bwrap")
    out = _render(report.results(j, "s"))
    assert "UNSEALED" not in out and "sealed (bwrap)" in out.splitlines()[0]


def test_a_session_from_before_sealed_runs_counts_as_unsealed(tmp_path: Path) -> None:
    j = _journal(tmp_path)  # its config has no "sandbox": its runs were never sealed
    out = _render(report.results(j, "t"))
    assert "UNSEALED" in out and "predates sealed runs" in out


def test_results_json_has_holdout_ood_transfer_and_seal(tmp_path: Path) -> None:
    j = _session(tmp_path)
    data = json.loads(report.to_json(report.rows(j, "s")))
    kept = _by(j, "restore a sane learning rate")
    row = next(r for r in data if r["id"] == kept.id)
    assert row["holdout_bpb"] == pytest.approx(kept.holdout_bpb) and row["ood_bpb"] == pytest.approx(kept.ood_bpb)
    assert row["transfer_ratio"] == pytest.approx(0.625) and row["sealed"] is False
    assert [r["status"] for r in data] == ["keep", "held", "keep", "discard", "invalid"]
    assert next(r for r in data if r["description"] == "peek ahead")["steps"] is None  # no step count of a starved run


def test_cli_results_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _session(tmp_path).close()
    assert main(["-C", str(tmp_path), "results"]) == 0
    table = capsys.readouterr().out
    assert "UNSEALED" in table and "held" in table and "transfer check" in table
    assert main(["-C", str(tmp_path), "results", "--format", "tsv"]) == 0
    tsv = capsys.readouterr().out.splitlines()
    assert tsv[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription" and "held" not in "\n".join(tsv)
    assert main(["-C", str(tmp_path), "results", "--format", "json"]) == 0
    assert "held" in [r["status"] for r in json.loads(capsys.readouterr().out)]


# -- show ------------------------------------------------------------------------------------------


def test_show_states_the_decision_with_describe_and_every_run(tmp_path: Path) -> None:
    j = _session(tmp_path)
    held = _by(j, "memorise the validation split")
    out = _render(report.show(held, j.runs(held.id), j))
    assert "held" in out and "UNSEALED" in out
    assert describe(held.evidence) in out  # val: the one formatting of the decision's numbers
    assert describe(held.evidence["holdout"]) + ": worse beyond noise" in out
    assert report.noise_text(session_noise(j, "s", MIN_SIGMA)) in out
    assert "σ" not in describe(held.evidence)  # no second unit for the same numbers
    # every run: val, holdout, OOD, train bpb, steps taken/planned, CPU seconds measured from outside
    run = j.runs(held.id)[0]
    assert all(f"{v:.4f}" in out for v in (run.val_bpb, run.holdout_bpb, run.ood_bpb, run.train_bpb))
    assert "410/450" in out and "58.2" in out
    assert "✓ load  ✓ batch  ✓ causal  ✓ finite" in out


def test_show_makes_starved_and_invalid_runs_and_failed_checks_visible(tmp_path: Path) -> None:
    j = _session(tmp_path, sandbox="bwrap")
    bad = _by(j, "peek ahead")
    out = _render(report.show(bad, j.runs(bad.id), j))
    assert "sealed (bwrap)" in out and "UNSEALED" not in out
    assert "starved" in out and "not a measurement" in out and "waited 41.5 s for a core" in out
    assert f"invalid: {REFUSED}" in out
    assert "✗ causal (window_start 512, cut 64, replaced_with random bytes)" in out
    assert "—/450" in out


def test_show_flags_of_a_run(tmp_path: Path) -> None:
    j = _session(tmp_path)
    exp_id = j.start_experiment(tag="s", kind="experiment", parent_commit="abc", description="x", agent="replay")
    _run(j, exp_id, 1, 2.1, 2.2, checks={**CHECKS_OK, "train_gap": {"ok": False, "val_minus_train_bpb": -0.31}},
         flags=["val far below train: the model may have seen the validation bytes"])
    out = _render(report.show(j.experiment(exp_id), j.runs(exp_id), j))  # type: ignore[arg-type]
    assert "✗ train_gap (val_minus_train_bpb -0.3100)" in out
    assert "⚠ val far below train" in out


def test_cli_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    j = _session(tmp_path)
    kept = _by(j, "restore a sane learning rate")
    j.close()
    assert main(["-C", str(tmp_path), "show", str(kept.id)]) == 0
    out = capsys.readouterr().out
    assert describe(kept.evidence) in out and "improvement beyond noise" in out and "UNSEALED" in out


# -- plot ------------------------------------------------------------------------------------------


def _labels(fig: Any) -> list[str]:
    return fig.axes[0].get_legend_handles_labels()[1]


def test_plot_draws_holdout_pooled_band_held_and_the_bar_at_the_last_look(tmp_path: Path) -> None:
    j = _session(tmp_path)
    fig = report.figure(j, "s")
    ax = fig.axes[0]
    labels = _labels(fig)
    noise = session_noise(j, "s", MIN_SIGMA)
    assert any(f"σ = {noise.sigma:.4f} pooled over {noise.runs} runs" in label for label in labels)
    assert "incumbent's holdout" in labels and "holdout of kept and held" in labels
    assert any(label.startswith("held") for label in labels)
    assert any("keep bar at its last look" in label for label in labels)
    assert ax.get_title() == ("Overnight session 's': baseline + 4 experiments: 1 kept, 1 held, 1 discarded, 1 failed"
                              "  [UNSEALED runs]")
    # The bar's marks: the incumbent's mean less the threshold at the candidate's last look, where a keep was
    # possible; the candidate dropped after one run (below the runs a keep rests on) had no bar to beat.
    bars = next(c for c in ax.collections if "keep bar" in str(c.get_label()))
    measured = [e for e in j.experiments("s") if e.kind == "experiment" and e.evidence and "threshold" in e.evidence]
    assert [e.evidence["look"] for e in measured] == [2, 2, 1]
    want = sorted((e.id, e.evidence["incumbent_mean"] - e.evidence["threshold"]) for e in measured
                  if e.evidence["look"] >= e.evidence["min_runs"])
    got = sorted((float(x), float(y)) for x, y in bars.get_offsets())
    assert [x for x, _ in got] == [x for x, _ in want] and [y for _, y in got] == pytest.approx([y for _, y in want])
    # The measurements set the scale: every value shows, and a far bar (one run, few df) does not squash them.
    lo, hi = ax.get_ylim()
    values = [v for e in j.experiments("s") for v in (e.val_bpb, e.holdout_bpb) if v is not None]
    assert lo < min(values) and max(values) < hi and hi - lo < 0.5
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_an_empty_session_plots_a_figure_that_says_so_without_warnings(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.create_session(Session("e", "overnight/e", "abc", {}, {"sandbox": "bwrap"}, 0.0))
    out = tmp_path / "empty.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.plot(j, "e", out)
        fig = report.figure(j, "e")
        assert [t.get_text() for t in fig.axes[0].texts] == ["no experiments in session 'e' yet"]
        j.start_experiment(tag="e", kind="baseline", parent_commit="abc", description="baseline", agent="loop")
        fig2 = report.figure(j, "e")
        assert "(one in flight)" in fig2.axes[0].texts[0].get_text()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plot_writes_a_png(tmp_path: Path) -> None:
    _session(tmp_path).close()
    out = tmp_path / "p.png"
    assert main(["-C", str(tmp_path), "plot", "-o", str(out)]) == 0
    width, height = struct.unpack(">II", out.read_bytes()[16:24])
    assert width >= 1000 and height >= 500


# -- the live view ---------------------------------------------------------------------------------


def _view(j: Journal | None) -> tuple[LiveView, Console]:
    console = Console(width=240, record=True, file=open("/dev/null", "w"), force_terminal=False)
    return LiveView(console, agent="replay", budget=60.0, journal=lambda: j), console


def test_live_view_reads_pooled_sigma_best_flags_transfer_and_seal_on_resume(tmp_path: Path) -> None:
    j = _session(tmp_path)
    view, console = _view(j)
    view(SessionOpened(tag="s", resumed=True, worktree="/w", branch="overnight/s"))
    noise = session_noise(j, "s", MIN_SIGMA)
    kept = _by(j, "restore a sane learning rate")
    screen = _render(view.render())
    assert f"noise σ {noise.sigma:.4f} (pooled: {noise.runs} runs, {noise.df} df)" in screen
    assert f"best {kept.val_bpb:.4f} (#{kept.id})" in screen
    assert f"transfer #{kept.id}: 62% of the gain survived" in screen
    assert "UNSEALED" in screen and "is held for you" in screen
    assert "UNSEALED" in console.export_text()  # the session line says it too


def test_live_view_shows_the_phase_of_the_run_in_flight(tmp_path: Path) -> None:
    j = _session(tmp_path, sandbox="bwrap")
    view, _ = _view(j)
    view(SessionOpened(tag="s", resumed=True, worktree="/w", branch="overnight/s"))
    exp = _by(j, "a wider MLP")
    view(ExperimentStarted(experiment=exp, runs_planned=4))
    view(PhaseChanged(phase="waiting"))
    assert re.search(r"phase\s+waiting for the machine", _render(view.render()))
    view(RunStarted(experiment_id=exp.id, run=0, seed=1, budget=60.0, clock="steps"))
    for phase, said in (("training", "training"), ("exporting", "exporting the model"), ("evaluating", "evaluating")):
        view(PhaseChanged(phase=phase, experiment_id=exp.id, run=0))
        assert re.search(rf"phase\s+{said}", _render(view.render()))
    assert "UNSEALED" not in _render(view.render())
    view(RunFinished(experiment_id=exp.id, run=0, outcome=RunOutcome(status="ok")))
    view(ExperimentFinished(experiment=exp))
    assert "phase" not in _render(view.render())


def test_live_view_prints_each_runs_result_as_it_comes(tmp_path: Path) -> None:
    j = _session(tmp_path, sandbox="bwrap")
    view, console = _view(j)
    view(SessionOpened(tag="s", resumed=True, worktree="/w", branch="overnight/s"))
    exp = _by(j, "a wider MLP")
    view(ExperimentStarted(experiment=exp, runs_planned=3))
    view(RunFinished(experiment_id=exp.id, run=0, outcome=RunOutcome(status="ok", val_bpb=2.2413, steps=2214)))
    view(RunFinished(experiment_id=exp.id, run=1, outcome=RunOutcome(
        status="starved", error="the machine gave it too little CPU\ndetails")))
    view(RunFinished(experiment_id=exp.id, run=1, outcome=RunOutcome(status="interrupted", error="stopped by the user")))
    text = console.export_text()
    assert "run 1/3: val 2.2413 bpb · 2,214 steps" in text
    assert "run 2/3: starved (the machine gave it too little CPU) — runs again" in text
    assert "interrupted" not in text and "details" not in text


def test_live_view_follows_the_run_that_trains_while_the_last_model_is_scored(tmp_path: Path) -> None:
    """Overlap: #A's model is scored while #B trains. The panel shows #B with #B's own phase and frames; #A's result
    line says whose it is; #A's decision leaves #B in the panel."""
    j = _session(tmp_path, sandbox="bwrap")
    view, console = _view(j)
    view(SessionOpened(tag="s", resumed=True, worktree="/w", branch="overnight/s"))
    a, b = _by(j, "a wider MLP"), _by(j, "restore a sane learning rate")
    view(ExperimentStarted(experiment=a, runs_planned=2))
    view(RunStarted(experiment_id=a.id, run=0, seed=1, budget=60.0, clock="steps"))
    view(StateChanged(state="proposing", message="replay is proposing"))  # the next proposal, while #A trains on
    view(ExperimentStarted(experiment=b, runs_planned=3))
    view(RunStarted(experiment_id=b.id, run=0, seed=2, budget=60.0, clock="steps"))
    view(PhaseChanged(phase="training", experiment_id=b.id, run=0))
    view(PhaseChanged(phase="evaluating", experiment_id=a.id, run=0))  # #A's, not the panel's
    view(Progress(experiment_id=b.id, run=0, frame={"type": "progress", "step": 7, "elapsed": 3.0, "train_loss": 3.5}))
    view(Progress(experiment_id=a.id, run=0, frame={"type": "progress", "step": 99, "elapsed": 59.0, "train_loss": 2.0}))
    screen = _render(view.render())
    assert f"#{b.id}" in screen and "run 1/3" in screen and re.search(r"phase\s+training", screen)
    assert "step 7" in screen and "step 99" not in screen
    view(RunFinished(experiment_id=a.id, run=0, outcome=RunOutcome(status="ok", val_bpb=2.5012, steps=99)))
    assert f"#{a.id} run 1/2: val 2.5012 bpb" in console.export_text()
    view(ExperimentFinished(experiment=a))
    screen = _render(view.render())
    assert f"#{b.id}" in screen and "step 7" in screen and re.search(r"phase\s+training", screen)
    view(ExperimentFinished(experiment=b))
    assert "phase" not in _render(view.render())


def test_live_view_prints_a_flag_once_and_keeps_it_and_the_transfer(tmp_path: Path) -> None:
    j = _session(tmp_path)
    view, console = _view(None)  # events only
    view(SessionOpened(tag="s", resumed=False, worktree="/w", branch="overnight/s"))
    view(Flagged(text="val improved but the holdout did not"))
    view(Message(level="warning", text="val improved but the holdout did not"))
    assert console.export_text().count("val improved but the holdout did not") == 1
    view(TransferChecked(incumbent_id=3, ratio=0.25, gain=0.01, gain_at_budget=0.04))
    screen = _render(view.render())
    assert "⚠ val improved but the holdout did not" in screen and "transfer #3: 25% of the gain survived" in screen
    j.close()


def test_live_view_refreshes_pooled_sigma_after_each_experiment(tmp_path: Path) -> None:
    j = _session(tmp_path)
    view, _ = _view(j)
    view(SessionOpened(tag="s", resumed=True, worktree="/w", branch="overnight/s"))
    kept = _by(j, "restore a sane learning rate")
    _run(j, kept.id, 100 * kept.id + 5, 2.380, 2.391)  # the incumbent re-measured: the pool grows
    view(ExperimentStarted(experiment=kept, runs_planned=1))
    remeasured = j.experiment(kept.id)
    assert remeasured is not None
    view(ExperimentFinished(experiment=remeasured))
    noise = session_noise(j, "s", MIN_SIGMA)
    assert f"noise σ {noise.sigma:.4f} (pooled: {noise.runs} runs" in _render(view.render())


# -- the suggestions' evidence ---------------------------------------------------------------------


def test_suggestion_and_hunk_evidence_state_one_unit(tmp_path: Path) -> None:
    j = _session(tmp_path)
    kept = _by(j, "restore a sane learning rate")
    hunk = experiment_evidence(kept)
    assert hunk == f"#{kept.id}: {describe(kept.evidence)}"
    ev = cumulative_evidence(j, "s", kept)
    assert ev is not None
    book = SuggestionBook(None, j, None)  # type: ignore[arg-type]  # _evidence reads the journal only
    line = book._evidence("s", kept, (kept.id,))
    assert line == f"#{kept.id}: {describe(ev)}"
    noise = session_noise(j, "s", MIN_SIGMA)
    base = j.baseline("s")
    assert base is not None
    se = noise.sigma * math.sqrt(1 / 3 + 1 / 2)
    assert ev["t"] == pytest.approx((base.val_bpb - kept.val_bpb) / se) and ev["df"] == noise.df
    for text in (hunk, line):  # both in standard errors of the difference, σ pooled: no "σ" multiple
        assert " bpb (Δ −" in text and " df" in text and "σ" not in text


def test_hunk_evidence_of_old_and_missing_evidence(tmp_path: Path) -> None:
    j = _session(tmp_path)
    kept = _by(j, "restore a sane learning rate")
    old = {"incumbent_mean": 2.41, "candidate_mean": 2.37, "z": 3.1, "keep_sigma": 2.0}
    import dataclasses

    assert experiment_evidence(dataclasses.replace(kept, evidence=old)) == \
        f"#{kept.id}: 2.4100 → 2.3700 bpb (Δ −0.0400, z = 3.1, bar 2.0)"
    assert experiment_evidence(dataclasses.replace(kept, evidence=None)) == f"#{kept.id}"
    base = j.baseline("s")
    assert base is not None and cumulative_evidence(j, "s", base) is None
