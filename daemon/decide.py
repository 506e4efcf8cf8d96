"""The keep rule: a sequential two-sample t test against the session's pooled run-to-run noise.

Why not "beat the incumbent by k·σ, σ from the baseline's 3 runs": a 3-run σ is itself very
uncertain (below half the true σ in about one session in five) and treating it as exact is where
most false keeps came from. Here σ is pooled from every run of unchanged code the session has
(the baseline, each incumbent with its confirmation runs and its periodic re-runs, plus the
candidate's own runs), and the bar is a Student-t quantile on the pooled degrees of freedom, so a
σ resting on few runs raises the bar by exactly as much as its own uncertainty calls for.

Why sequential: a candidate runs once, and again while it sits between a clear loss and a clear
win, up to ``Rule.max_runs`` runs. A keep always rests on at least ``Rule.min_runs`` candidate runs
(a lucky seed is not banked). The false-keep rate of a null change is held at ``Rule.alpha`` over
all the looks at which a keep is possible by splitting alpha across them (a weighted Bonferroni
split, ``Rule.spending``): the union bound holds whatever the correlation between looks, the number
of incumbent runs or the degrees of freedom, so the guarantee needs no simulation at run time; the
looks are strongly correlated, so the real rate comes out well below alpha (bench/_decision_sim.py).
Stopping early for futility only removes chances to keep, so it can never raise the false-keep rate.

The defaults of ``Rule`` come from bench/_decision_sim.py (run it to reproduce the figures).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from scipy.special import stdtr, stdtrit

Decision = Literal["keep", "discard", "more"]


@dataclass(frozen=True)
class Noise:
    """Run-to-run noise of unchanged code, pooled over every code version measured more than once."""

    sigma: float  # pooled standard deviation (floored at min_sigma)
    df: int  # degrees of freedom of the pooled estimate (sum of n_g - 1)
    runs: int  # runs that went into it (groups of one run carry no information on spread and are not counted)
    groups: int  # code versions (groups) that went into it
    # The min_sigma it was floored at: judge() floors again after adding the candidate's own runs to the pool.
    floor: float = 0.0


def pooled_noise(groups: Sequence[Sequence[float]], min_sigma: float) -> Noise:
    """Pooled within-group σ of the metric over versions of unchanged code, each measured several times.

    ``groups``: the metric values of each code version measured more than once in the session (the
    baseline, each incumbent with its confirmation runs and re-runs). Means differ between versions,
    so each group contributes its spread around its own mean: s² = Σ Σ (x - x̄_g)² / Σ (n_g - 1).
    Do not pass the candidate being judged: judge() adds its runs itself.
    """
    ss, df, runs, used = 0.0, 0, 0, 0
    for group in groups:
        values = _finite(group, "a noise group")
        if len(values) < 2:
            continue
        mean = statistics.fmean(values)
        ss += math.fsum((v - mean) ** 2 for v in values)
        df += len(values) - 1
        runs += len(values)
        used += 1
    if df < 1:
        raise ValueError("the noise floor needs a code version measured at least twice")
    return Noise(sigma=max(math.sqrt(ss / df), min_sigma), df=df, runs=runs, groups=used, floor=min_sigma)


def noise_sigma(baseline: list[float], min_sigma: float) -> float:
    """Legacy: the σ of one group (the baseline's runs), floored. Prefer pooled_noise()."""
    return pooled_noise([baseline], min_sigma).sigma


# Defaults chosen with bench/_decision_sim.py (3 baseline runs, the incumbent re-run every 4
# candidates, 40 candidates a session, true gains drawn from -0.02 ... 0.05, σ = 0.004 ... 0.021;
# `--variants 0.007` prints the alternatives). What they buy at σ = 0.007 (the 60 s budget on a quiet
# 2-core machine):
# - alpha 0.02: the goal (≤ 2 % of null changes kept) as a guarantee; the looks are correlated and
#   futility stops early, so the realised rate is ~0.8 % in sessions and ≤ 1.5 % against a fresh,
#   well-measured incumbent. A true gain of 0.03 bpb is kept ~98 % of the time, 0.02 bpb ~77 %
#   (alpha 0.01: 97 % and 70 %, for 0.3 points fewer false keeps). Today's rule: 3.6 % false keeps,
#   87 % of 0.03 bpb gains.
# - max_runs 4: a near-the-bar candidate gets up to 4 runs; 5 adds ~1 point at 0.02 bpb for
#   ~0.1 more runs per decision; 3 loses ~3 points at 0.02 bpb.
# - futility (1.0, 1.5, 2.0): after runs 1, 2, 3 a candidate whose t is below these is dropped: a
#   null change costs ~1.2 runs, a harmful one 1.0. (0.5, 1.0, 1.5) buys ~3 points at 0.02 bpb for
#   ~11 % more candidate runs; (1.5, 2.0, 2.5) saves ~10 % of the runs and loses ~10 points at 0.02 bpb.
# - spending (1, 2, 3): alpha split 1:2:3 over the keep looks after runs 2, 3, 4 rather than evenly:
#   after two runs only large gains clear any bar, and the last look is where near-the-bar candidates
#   are decided; it buys ~4 points at 0.02 bpb and ~1 point at 0.03 over an even split, at no cost.
# - min_runs 2 (the brief's floor) is also the better design: min_runs 1 spends alpha on a single
#   seed and loses ~15 points at 0.02 bpb.
DEFAULT_ALPHA = 0.02
DEFAULT_FUTILITY = (1.0, 1.5, 2.0)
DEFAULT_SPENDING = (1.0, 2.0, 3.0)


@dataclass(frozen=True)
class Rule:
    """How a candidate is judged, run after run."""

    alpha: float = DEFAULT_ALPHA  # one-sided false-keep rate the rule targets per decision, overall across its looks
    min_runs: int = 2  # a keep always rests on at least this many candidate runs (another seed)
    max_runs: int = 4  # sequential testing cap per candidate
    # Futility boundary in t units: after look k (k candidate runs, k < max_runs) the candidate is
    # discarded when its t is below futility[k-1]; looks past the tuple's end reuse its last value;
    # an empty tuple never stops for futility (every candidate runs max_runs times unless kept).
    futility: tuple[float, ...] = DEFAULT_FUTILITY
    # How alpha is split over the looks at which a keep is possible (after min_runs, ..., max_runs
    # runs): relative weights, looks past the tuple's end reuse its last weight; empty: evenly.
    spending: tuple[float, ...] = DEFAULT_SPENDING

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not 1 <= self.min_runs <= self.max_runs:
            raise ValueError(f"need 1 <= min_runs <= max_runs, got {self.min_runs} and {self.max_runs}")
        if any(not math.isfinite(f) for f in self.futility):
            raise ValueError("futility boundaries must be finite")
        if any(not (math.isfinite(w) and w > 0) for w in self.spending):
            raise ValueError("alpha spending weights must be positive")

    @property
    def keep_looks(self) -> int:
        """The looks at which a keep is possible: after min_runs, ..., max_runs candidate runs."""
        return self.max_runs - self.min_runs + 1

    def alpha_at(self, look: int) -> float:
        """The share of alpha spent at ``look`` (candidate runs so far): 0 before min_runs and past max_runs.

        The shares over the keep looks sum to alpha, so by the union bound the probability that a
        null change clears the bar at any look is at most alpha (Bonferroni with unequal weights).
        """
        if not self.min_runs <= look <= self.max_runs:
            return 0.0
        weights = [self._weight(k) for k in range(self.keep_looks)]
        return self.alpha * weights[look - self.min_runs] / math.fsum(weights)

    def _weight(self, k: int) -> float:
        return self.spending[min(k, len(self.spending) - 1)] if self.spending else 1.0

    def bar(self, df: int, look: int) -> float:
        """The t a candidate must exceed to be kept after ``look`` runs (from min_runs on)."""
        return _t_quantile(1.0 - self.alpha_at(min(max(look, self.min_runs), self.max_runs)), df)

    def futility_at(self, look: int) -> float | None:
        """The t below which a candidate is dropped after ``look`` runs; None at the last look or without a boundary."""
        if look >= self.max_runs or not self.futility:
            return None
        return self.futility[min(look, len(self.futility)) - 1]


@dataclass(frozen=True)
class Verdict:
    decision: Decision  # "more": run the candidate again (on another seed)
    reason: str  # one line for humans; the numbers in it are describe(evidence)
    evidence: dict[str, Any]  # JSON-serialisable numbers behind it

    @property
    def keep(self) -> bool:
        return self.decision == "keep"

    @property
    def more(self) -> bool:
        return self.decision == "more"


def judge(incumbent: Sequence[float], candidate: Sequence[float], noise: Noise, rule: Rule, direction: str) -> Verdict:
    """After each candidate run: keep, discard, or run the candidate again.

    A pooled two-sample t test of the candidate's mean against the incumbent's: the improvement
    over its standard error, against the Student-t bar on the pooled degrees of freedom.
    """
    ev = _compare(incumbent, candidate, noise, direction)
    look, t = ev["candidate_n"], ev["t"]
    bar = rule.bar(ev["df"], look)
    futility = rule.futility_at(look)
    ev.update({
        "bar": bar, "threshold": bar * ev["se"], "futility": futility, "look": look,
        "min_runs": rule.min_runs, "max_runs": rule.max_runs, "alpha": rule.alpha, "alpha_look": rule.alpha_at(look),
    })
    numbers = describe(ev)
    runs = f"{look} run{'s' if look != 1 else ''}"
    if t > bar and look >= rule.min_runs:
        return Verdict("keep", f"improvement beyond noise after {runs}: {numbers}", ev)
    if look >= rule.max_runs:  # never "more" at the cap
        if ev["improvement"] > 0:
            return Verdict("discard", f"no improvement beyond noise in {runs}: {numbers}", ev)
        return Verdict("discard", f"no improvement in {runs}: {numbers}", ev)
    if futility is not None and t < futility:
        if ev["improvement"] > 0:
            return Verdict("discard", f"no improvement beyond noise after {runs} (too far below the bar to go on): {numbers}", ev)
        return Verdict("discard", f"no improvement after {runs}: {numbers}", ev)
    if t > bar:  # only before min_runs: a lucky seed is not banked
        return Verdict("more", f"cleared the bar after {runs}, but a keep rests on {rule.min_runs}: {numbers}", ev)
    return Verdict("more", f"near the bar after {runs}: {numbers}", ev)


def worse_beyond_noise(
    incumbent: Sequence[float], candidate: Sequence[float], noise: Noise, direction: str, alpha: float,
) -> tuple[bool, dict[str, Any]]:
    """Did the candidate get worse than the incumbent beyond noise? One-sided pooled t test at ``alpha``.

    For a second metric such as the holdout split: pass the noise pooled from that metric's values.
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    ev = _compare(incumbent, candidate, noise, direction)
    # t measures the improvement, so the bar of this test is negative: worse beyond noise is t below
    # it (and describe() shows "t = −3.1 on 9 df, bar −2.3", in the same unit as every decision).
    bar = -_t_quantile(1.0 - alpha, ev["df"])
    ev.update({"bar": bar, "threshold": bar * ev["se"], "alpha": alpha, "test": "worse beyond noise"})
    return ev["t"] < bar, ev


def describe(evidence: Mapping[str, Any]) -> str:
    """The one formatting of a decision's numbers: ``2.4120 → 2.3801 bpb (Δ −0.0319, t = 4.1 on 9 df, bar 2.9)``.

    Every figure after Δ is in standard errors of the difference. Reads the old judge's evidence
    too (σ taken as exact: ``z`` instead of ``t``, the bar as keep_sigma), and a baseline's
    (``2.4120 ± 0.0070 bpb over 3 runs``); what it cannot read it leaves out rather than fail.
    """
    unit = str(evidence.get("unit", "bpb"))
    inc, cand = _num(evidence.get("incumbent_mean")), _num(evidence.get("candidate_mean"))
    if inc is None or cand is None:
        mean, sigma = _num(evidence.get("mean")), _num(evidence.get("sigma"))
        if mean is None:
            return ""
        runs = evidence.get("runs")
        over = f" over {len(runs)} runs" if isinstance(runs, list) else ""
        return f"{mean:.4f} ± {sigma:.4f} {unit}{over}" if sigma is not None else f"{mean:.4f} {unit}{over}"
    parts = [f"Δ {_signed(cand - inc)}"]
    t, df, z = _num(evidence.get("t")), _num(evidence.get("df")), _num(evidence.get("z"))
    if t is not None:
        parts.append(f"t = {_minus(t, 1)}" + (f" on {df:.0f} df" if df is not None else ""))
    elif z is not None:
        parts.append(f"z = {_minus(z, 1)}")
    bar = _num(evidence.get("bar"))
    if bar is None:  # the old judge: the threshold in the metric's units over the standard error, i.e. keep_sigma
        threshold, stderr = _num(evidence.get("threshold")), _num(evidence.get("stderr"))
        bar = threshold / stderr if threshold is not None and stderr else _num(evidence.get("keep_sigma"))
    if bar is not None:
        parts.append(f"bar {_minus(bar, 1)}")
    return f"{inc:.4f} → {cand:.4f} {unit} ({', '.join(parts)})"


# -- internals ---------------------------------------------------------------------------------------


def _compare(incumbent: Sequence[float], candidate: Sequence[float], noise: Noise, direction: str) -> dict[str, Any]:
    """The t statistic of the improvement and the numbers behind it (everything but the bar)."""
    sign = _sign(direction)
    inc, cand = _finite(incumbent, "the incumbent"), _finite(candidate, "the candidate")
    if not inc or not cand:
        raise ValueError("both the incumbent and the candidate need at least one run")
    if noise.df < 1:
        raise ValueError("the noise estimate needs at least one degree of freedom (a code version measured twice)")
    inc_mean, cand_mean = statistics.fmean(inc), statistics.fmean(cand)
    # The candidate's own spread joins the pool (the pooled two-sample t): the pool already assumes
    # a change moves the mean, not the noise (every incumbent was once a candidate), its runs add
    # degrees of freedom, and a candidate that made training erratic pays for it with a wider σ.
    cand_ss = math.fsum((v - cand_mean) ** 2 for v in cand)
    df = noise.df + len(cand) - 1
    sigma = max(math.sqrt((noise.df * noise.sigma**2 + cand_ss) / df), noise.floor)
    if not sigma > 0.0:
        # Bit-identical runs and min_sigma 0 (deterministic training): any difference is real. A tiny
        # relative σ keeps t finite, so the evidence stays valid JSON and the loop does not stop.
        sigma = 1e-9 * max(1.0, abs(inc_mean), abs(cand_mean))
    se = sigma * math.sqrt(1 / len(inc) + 1 / len(cand))
    improvement = sign * (inc_mean - cand_mean)
    t = improvement / se
    return {
        "incumbent_runs": inc, "incumbent_mean": inc_mean, "candidate_runs": cand, "candidate_mean": cand_mean,
        "candidate_n": len(cand), "incumbent_n": len(inc), "direction": direction,
        "difference": cand_mean - inc_mean, "improvement": improvement,
        "sigma": sigma, "se": se, "df": df, "t": t, "p": float(stdtr(df, -t)),
        "noise_sigma": noise.sigma, "noise_df": noise.df, "noise_runs": noise.runs, "noise_groups": noise.groups,
    }


@lru_cache(maxsize=4096)
def _t_quantile(p: float, df: int) -> float:
    return float(stdtrit(df, p))


def _sign(direction: str) -> float:
    if direction == "minimize":
        return 1.0
    if direction == "maximize":
        return -1.0
    raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} has a value that is not a finite number")
    return out


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _signed(value: float, places: int = 4) -> str:
    # Δ always carries its sign; a true minus sign, as the line is for people.
    return f"{value:+.{places}f}".replace("-", "−")


def _minus(value: float, places: int) -> str:
    return f"{value:.{places}f}".replace("-", "−")
