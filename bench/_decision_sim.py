"""Simulated sessions of keep rules: how often each keeps a change of a given true gain, at what compute.

    python bench/_decision_sim.py [--sessions 2000] [--candidates 40] [--seed 20261128] [--variants SIGMA]

A session measures the baseline ``baseline_runs`` times, then judges ``candidates`` candidates one
after another; the sequential rule also re-runs the incumbent once every ``rerun_every`` candidates
(its runs grow after a keep). A kept candidate becomes the incumbent, runs and all. Each candidate's
true gain over the current incumbent is drawn from ``gains``, so the keep rate per gain is measured
inside a realistic session (a small σ pool early on, incumbents resting on a few runs after a keep).

Rules compared:
- ``sequential``: daemon/decide.py's judge() with σ pooled over every unchanged-code group.
- ``today``: the previous rule: σ from the latest baseline's runs taken as exact, keep_sigma 2,
  one screening run plus one confirmation run, the incumbent's runs never grow.
- ``strict <``: autoresearch's: one run, kept when strictly better than the incumbent's last value.

Run values come from an ``Arm``: ``Normal(mean, sigma)``, or ``Resample(values)`` which draws from real
measured values (with replacement) so a replay keeps the real noise's shape; a candidate's arm is
the incumbent's shifted by its true gain. bench/decisions.py replays the rules on real runs with
``simulate``/``replay_decision``; the ``__main__`` table is seeded and deterministic.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from overnight.daemon.decide import Rule, judge, pooled_noise

# -- run values ---------------------------------------------------------------------------------------


class Arm(Protocol):
    """The runs of one code version: each draw is one training run's metric."""

    @property
    def mean(self) -> float: ...

    def draw(self, rng: random.Random) -> float: ...

    def shifted(self, delta: float) -> Arm: ...


@dataclass(frozen=True)
class Normal:
    mean: float
    sigma: float

    def draw(self, rng: random.Random) -> float:
        return rng.gauss(self.mean, self.sigma)

    def shifted(self, delta: float) -> Normal:
        return Normal(self.mean + delta, self.sigma)


@dataclass(frozen=True)
class Resample:
    """Real measured values of one code version, drawn with replacement (plus a shift for a simulated gain)."""

    values: Sequence[float]  # a list is fine: kept as a tuple
    shift: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if len(self.values) < 2:
            raise ValueError("resampling needs at least two measured values")

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) + self.shift

    def draw(self, rng: random.Random) -> float:
        return rng.choice(self.values) + self.shift

    def shifted(self, delta: float) -> Resample:
        return Resample(self.values, self.shift + delta)


# A candidate for the current incumbent: (its true gain, its arm).
CandidateMaker = Callable[[Arm, random.Random], tuple[float, Arm]]


def gains_from(gains: Sequence[float], direction: str = "minimize") -> CandidateMaker:
    """Candidates whose true gain is drawn uniformly from ``gains`` (positive = better)."""
    sign = 1.0 if direction == "minimize" else -1.0
    choices = tuple(gains)

    def make(incumbent: Arm, rng: random.Random) -> tuple[float, Arm]:
        gain = rng.choice(choices)
        return gain, incumbent.shifted(-sign * gain)

    return make


# -- rules --------------------------------------------------------------------------------------------


@dataclass
class SessionState:
    """What a rule may look at: the incumbent's runs, every group of unchanged code (the incumbent's
    included, the same list), the latest baseline's runs."""

    incumbent: list[float]
    groups: list[list[float]]
    baseline: list[float]
    direction: str = "minimize"


class Policy(Protocol):
    name: str
    baseline_runs: int
    rerun_every: int  # re-run the incumbent before every rerun_every-th candidate; 0: never

    @property
    def max_runs(self) -> int: ...

    def decide(self, state: SessionState, candidate: Sequence[float]) -> str: ...


@dataclass
class Sequential:
    """daemon/decide.py's rule: pooled σ over every unchanged-code group, sequential t test."""

    rule: Rule = field(default_factory=Rule)
    min_sigma: float = 0.002
    baseline_runs: int = 3
    rerun_every: int = 4
    name: str = "sequential"

    @property
    def max_runs(self) -> int:
        return int(self.rule.max_runs)

    def decide(self, state: SessionState, candidate: Sequence[float]) -> str:
        noise = pooled_noise(state.groups, self.min_sigma)
        return str(judge(state.incumbent, candidate, noise, self.rule, state.direction).decision)


@dataclass
class Today:
    """The previous rule: σ from the latest baseline's runs (exact), keep_sigma·SE, screen + confirm."""

    keep_sigma: float = 2.0
    confirm_runs: int = 1
    min_sigma: float = 0.002
    baseline_runs: int = 3
    rerun_every: int = 0
    name: str = "today (3-run σ, 2σ, +1 confirm)"

    @property
    def max_runs(self) -> int:
        return 1 + self.confirm_runs

    def decide(self, state: SessionState, candidate: Sequence[float]) -> str:
        sigma = max(statistics.stdev(state.baseline), self.min_sigma)
        sign = 1.0 if state.direction == "minimize" else -1.0
        improvement = sign * (statistics.fmean(state.incumbent) - statistics.fmean(candidate))
        stderr = sigma * math.sqrt(1 / len(state.incumbent) + 1 / len(candidate))
        if improvement <= self.keep_sigma * stderr:
            return "discard"
        return "keep" if len(candidate) >= self.max_runs else "more"


@dataclass
class StrictLess:
    """autoresearch's: one run, kept when strictly better than the incumbent's last value."""

    baseline_runs: int = 1
    rerun_every: int = 0
    max_runs: int = 1
    name: str = "strict < (autoresearch)"

    def decide(self, state: SessionState, candidate: Sequence[float]) -> str:
        sign = 1.0 if state.direction == "minimize" else -1.0
        return "keep" if sign * (state.incumbent[-1] - candidate[-1]) > 0 else "discard"


# -- sessions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    index: int  # the candidate's position in its session (0-based)
    gain: float  # its true gain over the incumbent it was judged against (positive = better)
    kept: bool
    runs: int  # candidate runs it took


@dataclass
class Tally:
    decisions: int = 0
    keeps: int = 0
    runs: int = 0

    @property
    def keep_rate(self) -> float:
        return self.keeps / self.decisions if self.decisions else math.nan

    @property
    def runs_per_decision(self) -> float:
        return self.runs / self.decisions if self.decisions else math.nan

    def add(self, d: Decision) -> None:
        self.decisions += 1
        self.keeps += d.kept
        self.runs += d.runs


@dataclass
class Summary:
    policy: str
    by_gain: dict[float, Tally]  # every decision, by true gain
    early: dict[float, Tally]  # the first ``early_candidates`` decisions of each session, by true gain
    decisions: int
    candidate_runs: int
    overhead_runs: int  # baseline runs and incumbent re-runs

    @property
    def candidate_runs_per_decision(self) -> float:
        return self.candidate_runs / self.decisions

    @property
    def runs_per_decision(self) -> float:
        """All the session's runs (baseline and re-runs too) per decision: its compute per decision."""
        return (self.candidate_runs + self.overhead_runs) / self.decisions

    def keep_rate(self, gain: float) -> float:
        return self.by_gain[gain].keep_rate if gain in self.by_gain else math.nan


def run_session(
    policy: Policy, base: Arm, make_candidate: CandidateMaker, candidates: int, rng: random.Random,
    direction: str = "minimize",
) -> tuple[list[Decision], int]:
    """One session: its decisions and its overhead runs (baseline + incumbent re-runs)."""
    arm = base
    baseline = [arm.draw(rng) for _ in range(policy.baseline_runs)]
    state = SessionState(incumbent=baseline, groups=[baseline], baseline=baseline, direction=direction)
    overhead = len(baseline)
    out = []
    for i in range(candidates):
        if policy.rerun_every and i and i % policy.rerun_every == 0:
            state.incumbent.append(arm.draw(rng))  # the same list as its group: the pool grows too
            overhead += 1
        gain, cand_arm = make_candidate(arm, rng)
        runs: list[float] = []
        while True:
            runs.append(cand_arm.draw(rng))
            decision = policy.decide(state, runs)
            if decision != "more":
                break
            if len(runs) >= policy.max_runs:
                raise AssertionError(f"{policy.name} asked for more than {policy.max_runs} runs")
        kept = decision == "keep"
        out.append(Decision(i, gain, kept, len(runs)))
        if kept:
            arm = cand_arm
            state.incumbent = runs
            state.groups.append(runs)
    return out, overhead


def simulate(
    policy: Policy, base: Arm, make_candidate: CandidateMaker, *, sessions: int, candidates: int, seed: int | str,
    direction: str = "minimize", early_candidates: int = 8,
) -> Summary:
    """Keep rates by true gain and compute per decision over ``sessions`` seeded sessions."""
    rng = random.Random(seed)
    by_gain: dict[float, Tally] = {}
    early: dict[float, Tally] = {}
    decisions = cand_runs = overhead = 0
    for _ in range(sessions):
        ds, extra = run_session(policy, base, make_candidate, candidates, rng, direction)
        overhead += extra
        for d in ds:
            by_gain.setdefault(d.gain, Tally()).add(d)
            if d.index < early_candidates:
                early.setdefault(d.gain, Tally()).add(d)
            decisions += 1
            cand_runs += d.runs
    return Summary(policy.name, dict(sorted(by_gain.items())), dict(sorted(early.items())), decisions, cand_runs, overhead)


def replay_decision(
    policy: Policy, incumbent: Arm, candidate: Arm, *, trials: int, seed: int | str, incumbent_runs: int = 3,
    extra_groups: Sequence[Arm] = (), extra_group_runs: int = 2, direction: str = "minimize",
) -> Tally:
    """One decision replayed ``trials`` times: the incumbent measured ``incumbent_runs`` times (also the
    baseline the rule sees) and, for the pool, each of ``extra_groups`` measured ``extra_group_runs`` times."""
    rng = random.Random(seed)
    tally = Tally()
    for _ in range(trials):
        inc = [incumbent.draw(rng) for _ in range(incumbent_runs)]
        groups = [inc, *([g.draw(rng) for _ in range(extra_group_runs)] for g in extra_groups)]
        state = SessionState(incumbent=inc, groups=groups, baseline=inc, direction=direction)
        runs: list[float] = []
        while True:
            runs.append(candidate.draw(rng))
            decision = policy.decide(state, runs)
            if decision != "more":
                break
            if len(runs) >= policy.max_runs:
                raise AssertionError(f"{policy.name} asked for more than {policy.max_runs} runs")
        tally.add(Decision(0, incumbent.mean - candidate.mean, decision == "keep", len(runs)))
    return tally


# -- the table ----------------------------------------------------------------------------------------

SIGMAS = (0.004, 0.007, 0.015, 0.021)
# The gains reported, plus a harmful change (its compute counts: a clear loss should stop early).
GAINS = (-0.02, 0.0, 0.005, 0.01, 0.02, 0.03, 0.05)


def policies() -> list[Policy]:
    return [Sequential(), Today(), StrictLess()]


def table(sessions: int, candidates: int, seed: int) -> str:
    gains = [g for g in GAINS if g >= 0]
    head = ("| σ | rule | " + " | ".join(f"keep@{g:g}" for g in gains) + " | keep@−0.02 | first 8: keep@0 · keep@0.03 "
            "| cand runs/dec: null · 0.03 · all | all runs/dec |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    make = gains_from(GAINS)
    for sigma in SIGMAS:
        for policy in policies():
            s = simulate(policy, Normal(2.4, sigma), make, sessions=sessions, candidates=candidates,
                         seed=f"{seed}:{sigma}:{policy.name}")
            rates = " | ".join(f"{100 * s.keep_rate(g):.1f}%" for g in gains)
            early = " · ".join(f"{100 * s.early[g].keep_rate:.1f}%" if g in s.early else "-" for g in (0.0, 0.03))
            runs = (f"{s.by_gain[0.0].runs_per_decision:.2f} · {s.by_gain[0.03].runs_per_decision:.2f} · "
                    f"{s.candidate_runs_per_decision:.2f}")
            lines.append(f"| {sigma:g} | {policy.name} | {rates} | {100 * s.keep_rate(-0.02):.1f}% | {early} "
                         f"| {runs} | {s.runs_per_decision:.2f} |")
    return "\n".join(lines)


# The rules the defaults were chosen against (daemon/decide.py says what each one costs or buys).
VARIANTS: dict[str, Rule] = {
    "defaults": Rule(),
    "alpha 0.01": Rule(alpha=0.01),
    "max_runs 3": Rule(max_runs=3),
    "max_runs 5": Rule(max_runs=5),
    "alpha split evenly": Rule(spending=()),
    "futility (0.5, 1.0, 1.5)": Rule(futility=(0.5, 1.0, 1.5)),
    "futility (1.5, 2.0, 2.5)": Rule(futility=(1.5, 2.0, 2.5)),
    "no futility stop": Rule(futility=()),
    "min_runs 1": Rule(min_runs=1),
}


def variants_table(sessions: int, candidates: int, seed: int, sigma: float) -> str:
    gains = [g for g in GAINS if g >= 0]
    head = "| rule (σ = " + f"{sigma:g}) | " + " | ".join(f"keep@{g:g}" for g in gains) + " | cand runs/dec: null · all |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, rule in VARIANTS.items():
        s = simulate(Sequential(rule=rule), Normal(2.4, sigma), gains_from(GAINS), sessions=sessions, candidates=candidates,
                     seed=f"{seed}:{sigma}:variants")
        rates = " | ".join(f"{100 * s.keep_rate(g):.1f}%" for g in gains)
        lines.append(f"| {name} | {rates} | {s.by_gain[0.0].runs_per_decision:.2f} · {s.candidate_runs_per_decision:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=2000, help="sessions per σ and rule")
    ap.add_argument("--candidates", type=int, default=40, help="candidates per session")
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--variants", type=float, metavar="SIGMA", help="instead: the rules the defaults were chosen against")
    args = ap.parse_args()
    if args.variants:
        print(variants_table(args.sessions, args.candidates, args.seed, args.variants))
        return 0
    per_gain = args.sessions * args.candidates // len(GAINS)
    print(f"{args.sessions} sessions × {args.candidates} candidates per σ and rule (~{per_gain} decisions per gain; "
          f"binomial SE at 1 %: ±{100 * math.sqrt(0.01 * 0.99 / per_gain):.2f} points), true gains drawn uniformly "
          f"from {', '.join(f'{g:g}' for g in GAINS)}; seed {args.seed}. Rule defaults: {Rule()}.")
    print(table(args.sessions, args.candidates, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
