"""The research memory (daemon/memory.py): what a session learned, with numbers, from a journal filled the way the
loop fills it; and the human's edits of its file, which win and persist across regenerations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from overnight.daemon import memory
from overnight.daemon.decide import Rule, judge
from overnight.daemon.journal import Journal, Run, Session
from overnight.daemon.noise import session_noise

MIN_SIGMA = 0.002
BASE_VAL = [2.410, 2.404, 2.416]


def _diff(old: str, new: str) -> str:
    return f"--- a/trainer/train.py\n+++ b/trainer/train.py\n@@ -3 +3 @@\n-{old}\n+{new}\n"


class Builder:
    """A session in a real journal: a baseline, then candidates decided by the real keep rule."""

    def __init__(self, tmp_path: Path) -> None:
        self.j = Journal(tmp_path / ".overnight" / "journal.db")
        self.j.create_session(Session("s", "overnight/s", "abc", {}, {"min_sigma": MIN_SIGMA, "budget": 60.0}, 0.0))
        self.base = self.j.start_experiment(tag="s", kind="baseline", parent_commit="abc", description="baseline",
                                            agent="loop")
        self.j.set_commit(self.base, "c0", "refs/overnight/s/0", "")
        for k, v in enumerate(BASE_VAL):
            self._run(self.base, k, v, hold=v + 0.02)
        self.j.finish_experiment(self.base, status="keep", decided_by="keep rule", reason="baseline",
                                 evidence={"runs": BASE_VAL, "mean": 2.41, "sigma": 0.006, "df": 2}, val_bpb=2.41,
                                 holdout_bpb=2.43, ood_bpb=3.31)
        self.incumbent, self.inc_vals = self.base, list(BASE_VAL)

    def _run(self, exp_id: int, k: int, val: float | None, hold: float | None = None, status: str = "ok",
             error: str | None = None) -> None:
        self.j.add_run(Run(experiment_id=exp_id, seed=100 * exp_id + k, status=status, started=0.0, finished=1.0,
                           val_bpb=val, holdout_bpb=hold, ood_bpb=None if val is None else val + 0.9, error=error,
                           curve=[(0, 0.0, 5.0), (100, 30.0, 3.0), (200, 60.0, 2.5)] if val is not None else []))

    def decided(self, description: str, vals: list[float], diff: str = "", status: str | None = None,
                hold: float = 2.6) -> int:
        exp_id = self.j.start_experiment(tag="s", kind="experiment", parent_commit=f"c{self.incumbent}",
                                         description=description, agent="claude")
        self.j.set_commit(exp_id, f"c{exp_id}", f"refs/overnight/s/{exp_id}", diff)
        for k, v in enumerate(vals):
            self._run(exp_id, k, v, hold)
        verdict = judge(self.inc_vals, vals, session_noise(self.j, "s", MIN_SIGMA), Rule(), "minimize")
        decision = status or verdict.decision
        assert decision != "more", (description, verdict.reason)
        ev: dict[str, Any] = {**verdict.evidence, "incumbent_id": self.incumbent}
        reason = verdict.reason
        if decision == "held":
            ev["holdout"] = {"incumbent_mean": 2.4312, "candidate_mean": 2.5987, "worse": True}
            reason = "val improved but the holdout got worse beyond noise: holdout 2.4312 → 2.5987"
        self.j.finish_experiment(exp_id, status=decision, decided_by="keep rule", reason=reason, evidence=ev,
                                 val_bpb=sum(vals) / len(vals), holdout_bpb=hold, ood_bpb=3.4567)
        if decision == "keep":
            self.incumbent, self.inc_vals = exp_id, list(vals)
        return int(exp_id)

    def failed(self, description: str, status: str, error: str, diff: str = "") -> int:
        exp_id = self.j.start_experiment(tag="s", kind="experiment", parent_commit=f"c{self.incumbent}",
                                         description=description, agent="claude")
        self.j.set_commit(exp_id, f"c{exp_id}", f"refs/overnight/s/{exp_id}", diff)
        self._run(exp_id, 0, None, status=status, error=error)
        self.j.finish_experiment(exp_id, status=status, decided_by="loop", reason=f"run 1 {status}", error=error)
        return int(exp_id)


def _session(tmp_path: Path) -> tuple[Builder, dict[str, int]]:
    b = Builder(tmp_path)
    ids = {
        "lr": b.decided("LR 3e-3 → 6e-3", [2.372, 2.368], _diff("LR = 3e-3", "LR = 6e-3")),
        "lr_up": b.decided("LR 6e-3 → 1.2e-2", [2.371, 2.375, 2.369, 2.374], _diff("LR = 6e-3", "LR = 1.2e-2")),
        "lr_down": b.decided("LR 6e-3 → 4e-3", [2.380, 2.385], _diff("LR = 6e-3", "LR = 4e-3")),
        "flash": b.failed("flash attention", "crash", "Traceback (most recent call last):\n  ...\n"
                          "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"),
        "mlp": b.decided("a wider MLP", [2.371, 2.373, 2.370, 2.372], "--- a/x\n+++ b/x\n-    h = 4 * d\n+    h = 6 * d\n"),
        "mlp_again": b.decided("A wider  MLP", [2.380, 2.384], "--- a/x\n+++ b/x\n-    h = 4 * d\n+    h = 8 * d\n"),
        "held": b.decided("memorise the validation split", [2.350, 2.352], status="held"),
    }
    return b, ids


# -- what it says -------------------------------------------------------------------------------------------------


def test_every_claim_has_its_numbers(tmp_path: Path) -> None:
    b, ids = _session(tmp_path)
    text = memory.generate(b.j, "s")
    lines = text.splitlines()
    lr = b.j.experiment(ids["lr"])
    assert lr is not None and lr.delta is not None and lr.evidence is not None
    sigmas = abs(lr.delta) / lr.evidence["sigma"]
    assert f"- #{ids['lr']} LR 3e-3 → 6e-3: Δ {lr.delta:+.4f} val_bpb ({sigmas:.1f}σ, 2 runs)" in lines
    assert "7 experiments decided: 1 crash, 3 discard, 1 held, 1 keep, 1 discard" not in text
    assert "7 experiments decided: 1 crash, 4 discard, 1 held, 1 keep." in text
    assert f"Baseline #{b.base}: val_bpb 2.4100; incumbent #{ids['lr']}: 2.3700 (-0.0400)." in text
    # The LR direction: three tries, one kept, two not, with the best of those.
    tries = [b.j.experiment(ids[k]) for k in ("lr_up", "lr_down")]
    best = min((e for e in tries if e is not None), key=lambda e: e.delta if e.delta is not None else 0.0)
    assert best.delta is not None
    assert (f"- LR: 3 tried, 1 keep (#{ids['lr']}); not kept: 2 discard; best of those Δ {best.delta:+.4f} val_bpb "
            f"(#{best.id})") in lines
    # A code change is grouped by its description's first words; the same description twice is a repeat.
    assert any(line.startswith("- “a wider mlp”: 2 tried, none kept (2 discard)") for line in lines)
    repeat = next(line for line in lines if "×2" in line)
    assert f"#{ids['mlp']} discard" in repeat and f"#{ids['mlp_again']} discard" in repeat
    # A crash with its error's last line.
    assert (f"- #{ids['flash']} crash: flash attention — RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
            in lines)
    held = next(line for line in lines if line.startswith(f"- #{ids['held']} "))
    assert "Δ -0.0" in held and "held" in held


def test_the_holdout_and_ood_scores_never_appear(tmp_path: Path) -> None:
    b, _ = _session(tmp_path)
    text = memory.generate(b.j, "s")
    for hidden in ("2.4312", "2.5987", "2.6000", "3.4567", "3.31", "holdout 2", "ood"):
        assert hidden not in text, hidden


def test_a_long_session_is_condensed_to_sixty_lines(tmp_path: Path) -> None:
    b = Builder(tmp_path)
    for k in range(40):
        b.failed(f"idea number {k} of many: {k}", "crash", f"ValueError: bad {k}")
        b.decided(f"SETTING_{k % 15} {k} → {k + 1}", [2.40, 2.41, 2.405, 2.408],
                  _diff(f"SETTING_{k % 15} = {k}", f"SETTING_{k % 15} = {k + 1}"))
    for k in range(14):
        b.decided(f"keep number {k}", [2.40 - 0.03 * (k + 1), 2.40 - 0.03 * (k + 1) - 0.002], _diff(f"K{k} = 0", f"K{k} = 1"))
    text = memory.generate(b.j, "s")
    lines = text.splitlines()
    assert len(lines) <= memory.MAX_LINES
    assert any(line.startswith("- 4 older keeps (") for line in lines)
    assert any(line.startswith("- 32 older: ") for line in lines)
    assert any("more directions" in line for line in lines)
    assert "keep number 13" in text and "idea number 39" in text


def test_generate_upto_sees_only_earlier_experiments(tmp_path: Path) -> None:
    b, ids = _session(tmp_path)
    early = memory.generate(b.j, "s", upto=ids["flash"])
    assert "flash attention" not in early and "LR 3e-3 → 6e-3" in early


# -- the human's edits win and persist ---------------------------------------------------------------------------


def _refresh(b: Builder, state: Path) -> str:
    return str(memory.refresh(b.j, state, "s"))


def test_first_refresh_writes_the_generated_text_and_remembers_it(tmp_path: Path) -> None:
    b, _ = _session(tmp_path)
    state = tmp_path / ".overnight"
    text = _refresh(b, state)
    assert text == memory.generate(b.j, "s") == memory.read(state, "s")
    assert b.j.meta("memory_generated:s") == text
    assert [p.name for p in (state / "memory").iterdir()] == ["s.md"]  # no temporary file left behind


def test_a_deleted_line_stays_deleted_across_two_regenerations(tmp_path: Path) -> None:
    b, ids = _session(tmp_path)
    state = tmp_path / ".overnight"
    path = memory.path(state, "s")
    _refresh(b, state)
    # The human deletes the LR direction line (its numbers change later) and the crash line (it never changes).
    lr_line = next(line for line in path.read_text().splitlines() if line.startswith("- LR: "))
    crash_line = next(line for line in path.read_text().splitlines() if "crash: flash attention" in line)
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if line.rstrip("\n") not in (lr_line, crash_line)))
    b.decided("LR 6e-3 → 5e-3", [2.381, 2.383], _diff("LR = 6e-3", "LR = 5e-3"))  # the LR line's numbers change
    first = _refresh(b, state)
    assert "- LR: " not in first and "crash: flash attention" not in first
    assert "- LR: 4 tried" in memory.generate(b.j, "s")  # what the human's deletion holds back
    b.failed("fused optimizer", "crash", "TypeError: nope")
    second = _refresh(b, state)
    assert "- LR: " not in second and "crash: flash attention" not in second
    assert f"#{ids['flash']}" not in second.split("## Failed to run")[1]
    assert "fused optimizer — TypeError: nope" in second  # a new fact still comes in
    assert path.read_text() == second


def test_a_rewritten_line_stays_rewritten_and_an_added_line_stays(tmp_path: Path) -> None:
    b, ids = _session(tmp_path)
    state = tmp_path / ".overnight"
    path = memory.path(state, "s")
    _refresh(b, state)
    text = path.read_text()
    kept = next(line for line in text.splitlines() if line.startswith(f"- #{ids['lr']} "))
    text = text.replace(kept, f"- #{ids['lr']} LR 6e-3 is the sweet spot: do not push it further (human)")
    text = text.replace("## Kept", "Note from the human: try rotary embeddings next.\n\n## Kept")
    path.write_text(text)
    for k in range(2):
        b.failed(f"new crash {k}", "crash", f"OSError: {k}")
        merged = _refresh(b, state)
        assert "LR 6e-3 is the sweet spot: do not push it further (human)" in merged
        assert kept not in merged
        assert "Note from the human: try rotary embeddings next." in merged
        assert f"new crash {k} — OSError: {k}" in merged
        assert merged.count("## Kept") == 1


def test_new_facts_appear_next_to_the_humans_additions(tmp_path: Path) -> None:
    b, _ = _session(tmp_path)
    state = tmp_path / ".overnight"
    path = memory.path(state, "s")
    _refresh(b, state)
    path.write_text(path.read_text() + "- my own note at the end\n")  # where the generator appends too
    b.failed("another crash", "timeout", "the run exceeded its budget")
    merged = _refresh(b, state)
    assert "- my own note at the end\n" in merged
    assert "another crash — the run exceeded its budget" in merged
    # Kept, the new keep too: its section grows, the human's note is untouched.
    new = b.decided("N_LAYER 4 → 6", [2.330, 2.332], _diff("N_LAYER = 4", "N_LAYER = 6"))
    merged = _refresh(b, state)
    assert f"- #{new} N_LAYER 4 → 6: Δ " in merged and "- my own note at the end\n" in merged


def test_a_conflicting_edit_keeps_the_humans_version(tmp_path: Path) -> None:
    b, _ = _session(tmp_path)
    state = tmp_path / ".overnight"
    path = memory.path(state, "s")
    _refresh(b, state)
    standing = next(line for line in path.read_text().splitlines() if "experiments decided" in line)
    path.write_text(path.read_text().replace(standing, "We are at 7 experiments (human summary)."))
    b.failed("yet another", "crash", "E: x")  # the generated standing line changes too: a conflict
    merged = _refresh(b, state)
    assert "We are at 7 experiments (human summary)." in merged
    assert "8 experiments decided" not in merged and standing not in merged
    assert "yet another — E: x" in merged  # elsewhere the generated change still comes in
    assert "<<<<<<<" not in merged and ">>>>>>>" not in merged


def test_merge_takes_both_sides_when_they_touch_different_lines() -> None:
    base = "# M\n\nA: 1 tried\nB: 2 tried\nC: 3 tried\n"
    human = "# M\n\nB: 2 tried\nC: 3 tried\n"  # deleted A
    generated = "# M\n\nA: 1 tried\nB: 5 tried\nC: 3 tried\n"  # B's numbers changed (merge3: one conflict)
    assert memory.merge(base, human, generated) == "# M\n\nB: 5 tried\nC: 3 tried\n"
    # The same line changed by both: the human's.
    assert memory.merge(base, base.replace("B: 2", "B: two"), generated) == "# M\n\nA: 1 tried\nB: two tried\nC: 3 tried\n"
    # Both inserted at one place: the human's first, then the generated.
    assert memory.merge("x\n", "x\nmine\n", "x\nnew fact\n") == "x\nmine\nnew fact\n"
    # No base (the journal forgot it): the human's text, and the generated lines it does not already have.
    assert memory.merge("", "x\nmine\n", "x\nnew fact\n") == "x\nmine\nnew fact\n"


def test_a_file_that_is_not_utf8_is_left_untouched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b, _ = _session(tmp_path)
    state = tmp_path / ".overnight"
    path = memory.path(state, "s")
    _refresh(b, state)
    stored = b.j.meta("memory_generated:s")
    raw = "caf\xe9 notes in latin-1\n".encode("latin-1")
    path.write_bytes(raw)
    b.failed("crash after", "crash", "E: y")
    with caplog.at_level(logging.WARNING, logger="overnight.memory"):
        text = _refresh(b, state)
    assert path.read_bytes() == raw
    assert text == memory.generate(b.j, "s") and "crash after" in text
    assert "not UTF-8" in caplog.text and str(path) in caplog.text
    assert b.j.meta("memory_generated:s") == stored  # the base stays the one the human's file was merged with
    assert memory.read(state, "s") is None


def test_a_removed_file_is_written_afresh(tmp_path: Path) -> None:
    b, _ = _session(tmp_path)
    state = tmp_path / ".overnight"
    _refresh(b, state)
    memory.path(state, "s").unlink()
    b.failed("after removal", "crash", "E: z")
    assert _refresh(b, state) == memory.generate(b.j, "s") == memory.read(state, "s")


def test_an_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    b, _ = _session(tmp_path)
    state = tmp_path / ".overnight"
    _refresh(b, state)
    path = memory.path(state, "s")
    before = path.stat().st_mtime_ns
    path.touch()
    touched = path.stat().st_mtime_ns
    assert _refresh(b, state) == path.read_text() and path.stat().st_mtime_ns == touched >= before


def test_an_editor_that_saves_crlf_does_not_freeze_the_memory(tmp_path: Path) -> None:
    b, _ = _session(tmp_path)
    state = tmp_path / ".overnight"
    path = memory.path(state, "s")
    _refresh(b, state)
    text = path.read_text().replace("## Kept", "My note.\n\n## Kept")
    path.write_bytes(text.replace("\n", "\r\n").encode())
    b.failed("crlf crash", "crash", "E: w")
    merged = _refresh(b, state)
    assert "My note.\n" in merged and "crlf crash — E: w" in merged and "\r" not in merged
