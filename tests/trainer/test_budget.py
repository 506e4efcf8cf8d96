"""The budget clocks: `steps` (calibrated from the code's own speed, the default), `cpu` and `wall`.

The steps below are real CPU work (a busy loop on process time), so the clock measures what it
would measure in a training run.
"""

from __future__ import annotations

import time
from typing import Any

import prepare
import pytest


class Recorder(prepare.Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.fixture(autouse=True)
def by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OVERNIGHT_CHANNEL_FD", "OVERNIGHT_BUDGET_CLOCK", "OVERNIGHT_BUDGET_S"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.timeout(30)
def test_steps_clock_fixes_the_step_count_from_the_fastest_window() -> None:
    rec = Recorder()
    budget = prepare.Budget(seconds=0.6, device="cpu", threads=1, reporter=rec)
    assert budget.clock == "steps"  # auto = steps, on every device
    budget.start()
    steps, fractions = 0, []
    while not budget.done():
        fractions.append(budget.fraction())
        # Steps 12-21 are three times slower, as if a neighbour took the core during calibration.
        busy(0.012 if 12 <= steps < 22 else 0.004)
        steps += 1
    (calibrated,) = [f for f in rec.frames if f["type"] == "calibrated"]
    assert set(calibrated) == {"type", "steps", "step_seconds", "calibration_steps", "anchored"}
    assert calibrated["anchored"] is None  # no anchor given: the run sets its own N
    n = calibrated["steps"]
    assert steps == n == budget.steps_planned == budget.step
    # The slow stretch does not count: the fastest window is one of the 4 ms ones.
    assert 0.004 <= calibrated["step_seconds"] < 0.006
    assert n == round(0.6 / calibrated["step_seconds"])
    # Calibrated after the warm-up steps plus at least CALIBRATION_MIN_STEPS timed ones.
    assert calibrated["calibration_steps"] >= prepare.CALIBRATION_WARMUP_STEPS + prepare.CALIBRATION_MIN_STEPS
    after = fractions[calibrated["calibration_steps"]:]
    assert after == pytest.approx([i / n for i in range(calibrated["calibration_steps"], n)])
    assert budget.fraction() == 1.0 and budget.elapsed() == pytest.approx(0.6)


@pytest.mark.timeout(30)
def test_a_budget_too_short_to_calibrate_plans_what_it_ran() -> None:
    rec = Recorder()
    budget = prepare.Budget(seconds=0.01, clock="steps", device="cpu", threads=1, reporter=rec)
    budget.start()
    steps = 0
    while not budget.done():
        busy(0.004)
        steps += 1
    # Stopped by the raw CPU clock before the first timed window, and says so in its frame.
    assert 1 <= steps < prepare.CALIBRATION_WARMUP_STEPS + prepare.CALIBRATION_WINDOW_STEPS["cpu"]
    assert budget.steps_planned == steps and budget.fraction() == 1.0
    assert [f["steps"] for f in rec.frames if f["type"] == "calibrated"] == [steps]
    zero = prepare.Budget(seconds=0, clock="steps", device="cpu", threads=1, reporter=Recorder())
    assert zero.done() and zero.steps_planned == 0 and zero.fraction() == 1.0


@pytest.mark.timeout(30)
def test_a_short_budget_ends_on_the_provisional_count_during_calibration() -> None:
    budget = prepare.Budget(seconds=0.06, clock="steps", device="cpu", threads=1, reporter=Recorder())
    budget.start()
    steps = 0
    while not budget.done():
        busy(0.004)
        steps += 1
    # ~15 steps: past the first window, short of CALIBRATION_MIN_STEPS timed steps.
    assert steps == budget.steps_planned
    assert prepare.CALIBRATION_WARMUP_STEPS + prepare.CALIBRATION_WINDOW_STEPS["cpu"] <= steps < 25
    assert budget.step_seconds is not None and steps == round(0.06 / budget.step_seconds)


@pytest.mark.timeout(30)
def test_cpu_and_wall_clocks_still_work() -> None:
    b = prepare.Budget(seconds=0.3, clock="cpu", device="cpu", threads=1)
    b.start()
    time.sleep(0.2)  # sleeping burns no CPU time
    assert b.elapsed() < 0.1 and not b.done()
    while not b.done():
        pass
    assert b.elapsed() >= 0.3 and b.steps_planned is None
    w = prepare.Budget(seconds=0.1, clock="wall", device="cpu")
    w.start()
    time.sleep(0.15)
    assert w.done()
    with pytest.raises(ValueError, match="steps, wall, cpu or auto"):
        prepare.Budget(clock="sundial")


@pytest.mark.timeout(30)
def test_only_a_run_by_hand_is_capped_in_wall_time(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    by_hand = prepare.Budget(seconds=0.1, clock="cpu", device="cpu", threads=1)
    monkeypatch.setenv("OVERNIGHT_CHANNEL_FD", "99")  # read at construction only
    supervised = prepare.Budget(seconds=0.1, clock="cpu", device="cpu", threads=1)
    assert supervised.supervised and not by_hand.supervised
    by_hand.start()
    supervised.start()
    time.sleep(prepare.HAND_WALL_CAP_FACTOR * 1.0 + 0.1)  # the cap is HAND_WALL_CAP_FACTOR x max(budget, 1 s)
    assert by_hand.done() and by_hand.capped and by_hand.elapsed() < 0.1
    assert "no supervisor is watching" in capsys.readouterr().err
    # Under the daemon the limit is enforced from outside: the run itself does not stop.
    assert not supervised.done() and not supervised.capped


@pytest.mark.timeout(30)
def test_scale_reads_overnight_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVERNIGHT_SCALE", raising=False)
    assert prepare.scale() == 1.0
    monkeypatch.setenv("OVERNIGHT_SCALE", "2.5")
    assert prepare.scale() == 2.5
    for bad in ("0", "-1", "nan", "big"):
        monkeypatch.setenv("OVERNIGHT_SCALE", bad)
        with pytest.raises(ValueError, match="expected a positive number"):
            prepare.scale()


def _anchored_run(monkeypatch: pytest.MonkeyPatch, anchor_steps: int, anchor_t: float, step_t: float,
                  seconds: float = 0.6) -> tuple[dict[str, Any], list[float], int]:
    monkeypatch.setenv("OVERNIGHT_ANCHOR_STEPS", str(anchor_steps))
    monkeypatch.setenv("OVERNIGHT_ANCHOR_STEP_S", repr(anchor_t))
    rec = Recorder()
    budget = prepare.Budget(seconds=seconds, device="cpu", threads=1, reporter=rec)
    budget.start()
    steps, fractions = 0, []
    while not budget.done():
        fractions.append(budget.fraction())
        busy(step_t)
        steps += 1
    (calibrated,) = [f for f in rec.frames if f["type"] == "calibrated"]
    return calibrated, fractions, steps


@pytest.mark.timeout(60)
def test_equal_speed_keeps_the_anchors_step_count_and_schedule_from_step_0(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing noise must not change the step count of equal code: within the tolerance, N is the anchor's."""
    calibrated, fractions, steps = _anchored_run(monkeypatch, anchor_steps=140, anchor_t=0.0043, step_t=0.004)
    assert calibrated["anchored"] is True and calibrated["steps"] == steps == 140
    # The LR schedule used the anchor's N from the very first step: no provisional estimate to diverge on.
    assert fractions == pytest.approx([i / 140 for i in range(140)])


@pytest.mark.timeout(60)
def test_code_clearly_faster_than_its_anchor_buys_more_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    calibrated, _, steps = _anchored_run(monkeypatch, anchor_steps=100, anchor_t=0.008, step_t=0.004)
    assert calibrated["anchored"] is False
    # About twice as fast: about twice the anchor's steps (the fastest window of a busy-wait is a little under 4 ms).
    assert 190 <= steps <= 230 and steps == calibrated["steps"]


@pytest.mark.timeout(60)
def test_a_bad_anchor_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERNIGHT_ANCHOR_STEPS", "many")
    monkeypatch.setenv("OVERNIGHT_ANCHOR_STEP_S", "nan")
    budget = prepare.Budget(seconds=0.2, device="cpu", threads=1)
    assert budget.anchor_steps is None and budget.anchor_step_seconds is None
