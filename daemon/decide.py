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
all the looks at which a keep is possible by splitting alpha evenly across them (Bonferroni): the
union bound holds whatever the correlation between looks, the number of incumbent runs or the
degrees of freedom, so the guarantee needs no simulation at run time; the looks are strongly
correlated, so the real rate comes out below alpha (see bench/_decision_sim.py). Stopping early for
futility only removes chances to keep, so it can never raise the false-keep rate.

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
# candidates, 40 candidates a session, σ = 0.004 ... 0.021). What they buy at σ = 0.007:
# - alpha 0.01: null changes are kept ~0.5 % of the time (the goal is ≤ 2 %; today's rule keeps
#   ~4 %, autoresearch's "<" ~30 %), and a true gain of 0.03 bpb is still kept ~97 % of the time.
#   0.02 would buy a few points of power at 0.01-0.02 bpb for twice the false keeps.
# - max_runs 4: a candidate near the bar gets up to 4 runs; 5 adds almost no power at 0.03 and a
#   little at 0.01-0.02 for ~0.1 more runs per decision; 3 loses ~4 points of power at 0.03.
# - futility: after run 1 a candidate that is not ahead of the incumbent by 0.5 standard errors is
#   dropped (most null and harmful changes stop there: ~1.3 runs per null decision), after runs 2
#   and 3 one below 1.0 and 1.5. Lower boundaries cost more runs for little power; higher ones start
#   to drop true 0.02-0.03 gains after an unlucky first seed.
DEFAULT_ALPHA = 0.01
DEFAULT_FUTILITY = (0.5, 1.0, 1.5)


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

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not 1 <= self.min_runs <= self.max_runs:
            raise ValueError(f"need 1 <= min_runs <= max_runs, got {self.min_runs} and {self.max_runs}")
        if any(not math.isfinite(f) for f in self.futility):
            raise ValueError("futility boundaries must be finite")

    @property
    def keep_looks(self) -> int:
        """The looks at which a keep is possible: after min_runs, ..., max_runs candidate runs."""
        return self.max_runs - self.min_runs + 1

    @property
    def alpha_per_look(self) -> float:
        # Bonferroni: the overall false-keep rate is at most the sum over the looks that can keep.
        return self.alpha / self.keep_looks

    def bar(self, df: int) -> float:
        """The t a candidate must exceed to be kept, at any look from min_runs on."""
        return _t_quantile(1.0 - self.alpha_per_look, df)

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
    look, t = ev["runs"], ev["t"]
    bar = rule.bar(ev["df"])
    futility = rule.futility_at(look)
    ev.update({
        "bar": bar, "threshold": bar * ev["se"], "futility": futility, "look": look,
        "min_runs": rule.min_runs, "max_runs": rule.max_runs, "alpha": rule.alpha, "alpha_per_look": rule.alpha_per_look,
    })
    numbers = describe(ev)
    runs = f"{look} run{'s' if look != 1 else ''}"
    if t > bar and look >= rule.min_runs:
        return Verdict("keep", f"improvement beyond noise after {runs}: {numbers}", ev)
    if look >= rule.max_runs:  # never "more" at the cap
        if ev["improvement"] > 0:
            return Verdict("discard", f"did not clear the bar in {runs}: {numbers}", ev)
        return Verdict("discard", f"no improvement beyond noise in {runs}: {numbers}", ev)
    if futility is not None and t < futility:
        if ev["improvement"] > 0:
            return Verdict("discard", f"too small to clear the bar after {runs}: {numbers}", ev)
        return Verdict("discard", f"no improvement after {runs}: {numbers}", ev)
    if t > bar:
        return Verdict("more", f"cleared the bar once; confirming on another seed: {numbers}", ev)
    return Verdict("more", f"near the bar after {runs}; running it again: {numbers}", ev)


def worse_beyond_noise(
    incumbent: Sequence[float], candidate: Sequence[float], noise: Noise, direction: str, alpha: float,
) -> tuple[bool, dict[str, Any]]:
    """Did the candidate get worse than the incumbent beyond noise? One-sided pooled t test at ``alpha``.

    For a second metric such as the holdout split: pass the noise pooled from that metric's values.
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    ev = _compare(incumbent, candidate, noise, direction)
    # t measures the improvement; a worsening beyond noise is t below minus the one-sided bar.
    bar = _t_quantile(1.0 - alpha, ev["df"])
    ev.update({"bar": bar, "threshold": bar * ev["se"], "alpha": alpha, "test": "worse"})
    return ev["t"] < -bar, ev


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
        parts.append(f"bar {bar:.1f}")
    return f"{inc:.4f} → {cand:.4f} {unit} ({', '.join(parts)})"


# -- internals ---------------------------------------------------------------------------------------


def _compare(incumbent: Sequence[float], candidate: Sequence[float], noise: Noise, direction: str) -> dict[str, Any]:
    """The t statistic of the improvement and the numbers behind it (everything but the bar)."""
    sign = _sign(direction)
    inc, cand = _finite(incumbent, "the incumbent"), _finite(candidate, "the candidate")
    if not inc or not cand:
        raise ValueError("both the incumbent and the candidate need at least one run")
    if noise.df < 1 or not noise.sigma > 0.0:
        raise ValueError("the noise estimate needs a positive σ and at least one degree of freedom")
    inc_mean, cand_mean = statistics.fmean(inc), statistics.fmean(cand)
    # The candidate's own spread joins the pool (the pooled two-sample t): the pool already assumes
    # a change moves the mean, not the noise (every incumbent was once a candidate), its runs add
    # degrees of freedom, and a candidate that made training erratic pays for it with a wider σ.
    cand_ss = math.fsum((v - cand_mean) ** 2 for v in cand)
    df = noise.df + len(cand) - 1
    sigma = max(math.sqrt((noise.df * noise.sigma**2 + cand_ss) / df), noise.floor)
    se = sigma * math.sqrt(1 / len(inc) + 1 / len(cand))
    improvement = sign * (inc_mean - cand_mean)
    t = improvement / se
    return {
        "incumbent_runs": inc, "incumbent_mean": inc_mean, "candidate_runs": cand, "candidate_mean": cand_mean,
        "runs": len(cand), "incumbent_n": len(inc), "direction": direction,
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
