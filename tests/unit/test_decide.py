import importlib.util
import json
import math
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overnight.daemon.decide import Noise, Rule, describe, judge, noise_sigma, pooled_noise, worse_beyond_noise

ORDER = {"discard": 0, "more": 1, "keep": 2}
INC = [2.400, 2.410, 2.395]
NOISE = Noise(sigma=0.007, df=12, runs=16, groups=4, floor=0.002)


def _sim() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "_decision_sim.py"
    spec = importlib.util.spec_from_file_location("_decision_sim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# -- pooled noise -------------------------------------------------------------------------------------


def test_pooled_noise_by_hand() -> None:
    # Group 1: mean 1.1, SS 0.02 (1 df). Group 2: mean 2.1333…, SS 0.046667 (2 df). A single run carries no spread.
    noise = pooled_noise([[1.0, 1.2], [2.0, 2.1, 2.3], [5.0]], 0.0)
    ss = 0.02 + ((2.0 - 6.4 / 3) ** 2 + (2.1 - 6.4 / 3) ** 2 + (2.3 - 6.4 / 3) ** 2)
    assert noise.df == 3 and noise.runs == 5 and noise.groups == 2
    assert noise.sigma == pytest.approx(math.sqrt(ss / 3))
    # The group means differ by a whole unit: pooling within groups ignores that, as it must.
    assert noise.sigma < 0.2


def test_pooled_noise_floor_and_errors() -> None:
    assert pooled_noise([[1.0, 1.0, 1.0]], 0.01).sigma == 0.01
    assert pooled_noise([[1.0, 1.0, 1.0]], 0.01).floor == 0.01
    with pytest.raises(ValueError):
        pooled_noise([[1.0], [2.0]], 0.0)
    with pytest.raises(ValueError):
        pooled_noise([], 0.0)
    with pytest.raises(ValueError):
        pooled_noise([[1.0, float("nan")]], 0.0)


def test_legacy_noise_sigma_is_the_sample_stdev_with_a_floor() -> None:
    assert noise_sigma([1.0, 1.2], 0.0) == pytest.approx(math.sqrt(0.02))
    assert noise_sigma([1.0, 1.0, 1.0], 0.01) == 0.01
    with pytest.raises(ValueError):
        noise_sigma([1.0], 0.0)


# -- the rule -----------------------------------------------------------------------------------------


def test_rule_spends_exactly_alpha_over_the_keep_looks() -> None:
    for rule in (Rule(), Rule(alpha=0.05, spending=()), Rule(min_runs=1, max_runs=6, spending=(1, 3))):
        shares = [rule.alpha_at(k) for k in range(0, rule.max_runs + 2)]
        assert math.fsum(shares) == pytest.approx(rule.alpha)
        assert all(s == 0.0 for s in shares[: rule.min_runs])
        assert shares[rule.max_runs + 1] == 0.0
    assert Rule(spending=()).alpha_at(2) == pytest.approx(Rule(spending=()).alpha / 3)
    # A bar falls with the degrees of freedom: a σ resting on more runs is trusted more.
    assert Rule().bar(3, 4) > Rule().bar(30, 4) > Rule().bar(3000, 4) > 2.0


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 0.6}, {"min_runs": 0}, {"min_runs": 5, "max_runs": 4},
                                    {"futility": (float("inf"),)}, {"spending": (1.0, 0.0)}])
def test_rule_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Rule(**kwargs)


def test_a_clear_improvement_runs_twice_then_is_kept() -> None:
    first = judge(INC, [2.360], NOISE, Rule(), "minimize")
    assert first.decision == "more" and not first.keep and first.more
    second = judge(INC, [2.360, 2.362], NOISE, Rule(), "minimize")
    assert second.decision == "keep" and second.keep
    ev = second.evidence
    assert ev["candidate_mean"] == pytest.approx(2.361) and ev["t"] > ev["bar"] and ev["df"] == NOISE.df + 1
    assert "improvement beyond noise after 2 runs" in second.reason
    json.dumps(ev, allow_nan=False)  # stored in the journal as it is


def test_the_t_statistic_by_hand() -> None:
    v = judge(INC, [2.36, 2.37], NOISE, Rule(), "minimize")
    # The candidate's spread joins the pool: (12·0.007² + 0.00005) / 13.
    sigma = math.sqrt((12 * 0.007**2 + 0.00005) / 13)
    se = sigma * math.sqrt(1 / 3 + 1 / 2)
    assert v.evidence["sigma"] == pytest.approx(sigma)
    assert v.evidence["se"] == pytest.approx(se)
    assert v.evidence["t"] == pytest.approx((sum(INC) / 3 - 2.365) / se)
    assert v.evidence["threshold"] == pytest.approx(v.evidence["bar"] * se)


def test_a_clear_loss_stops_after_one_run() -> None:
    v = judge(INC, [2.45], NOISE, Rule(), "minimize")
    assert v.decision == "discard" and v.evidence["candidate_n"] == 1
    assert "no improvement after 1 run" in v.reason


def test_a_change_within_noise_is_discarded_early() -> None:
    v = judge(INC, [2.400], NOISE, Rule(), "minimize")
    assert v.decision == "discard" and "no improvement beyond noise" in v.reason


def test_a_candidate_near_the_bar_runs_again_then_is_decided_at_the_cap() -> None:
    rule = Rule()
    cand = [2.388, 2.388, 2.388]
    verdicts = [judge(INC, cand[: k + 1], NOISE, rule, "minimize") for k in range(3)]
    assert [v.decision for v in verdicts] == ["more", "more", "more"]
    last = judge(INC, [*cand, 2.389], NOISE, rule, "minimize")
    assert last.decision in ("keep", "discard")


def test_a_lucky_first_run_that_does_not_hold_up_is_discarded() -> None:
    assert judge(INC, [2.36], NOISE, Rule(), "minimize").decision == "more"
    v = judge(INC, [2.36, 2.43], NOISE, Rule(), "minimize")
    assert v.decision == "discard"


def test_maximize_flips_the_sign() -> None:
    inc = [0.50, 0.51, 0.49]
    assert judge(inc, [0.60, 0.61], NOISE, Rule(), "maximize").decision == "keep"
    assert judge(inc, [0.60, 0.61], NOISE, Rule(), "minimize").decision == "discard"
    assert judge(inc, [0.40], NOISE, Rule(), "maximize").decision == "discard"
    with pytest.raises(ValueError):
        judge(inc, [0.4], NOISE, Rule(), "sideways")


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        judge([], [2.3], NOISE, Rule(), "minimize")
    with pytest.raises(ValueError):
        judge(INC, [], NOISE, Rule(), "minimize")
    with pytest.raises(ValueError):
        judge(INC, [2.3], Noise(sigma=0.01, df=0, runs=1, groups=1), Rule(), "minimize")


def test_deterministic_runs_without_a_floor_still_decide() -> None:
    noise = pooled_noise([[2.4, 2.4, 2.4]], 0.0)
    assert judge([2.4] * 3, [2.4, 2.4], noise, Rule(), "minimize").decision == "discard"
    kept = judge([2.4] * 3, [2.39, 2.39], noise, Rule(), "minimize")
    assert kept.decision == "keep" and math.isfinite(kept.evidence["t"])
    json.dumps(kept.evidence, allow_nan=False)


values = st.floats(2.0, 3.0, allow_nan=False)
rules = st.builds(Rule, alpha=st.floats(0.001, 0.2), min_runs=st.integers(1, 3), max_runs=st.integers(3, 6),
                  futility=st.lists(st.floats(-2.0, 3.0), max_size=4).map(tuple),
                  spending=st.lists(st.floats(0.1, 5.0), max_size=4).map(tuple))
noises = st.builds(Noise, sigma=st.floats(0.001, 0.1), df=st.integers(1, 60), runs=st.just(10), groups=st.just(3),
                   floor=st.floats(0.0, 0.001))


@given(inc=st.lists(values, min_size=1, max_size=8), cand=st.lists(values, min_size=1, max_size=6), noise=noises,
       rule=rules, direction=st.sampled_from(["minimize", "maximize"]))
def test_never_a_keep_before_min_runs_and_never_more_at_max_runs(
    inc: list[float], cand: list[float], noise: Noise, rule: Rule, direction: str,
) -> None:
    v = judge(inc, cand, noise, rule, direction)
    if len(cand) < rule.min_runs:
        assert v.decision != "keep"
    if len(cand) >= rule.max_runs:
        assert v.decision != "more"
    if v.decision == "keep":
        assert v.evidence["t"] > v.evidence["bar"] and v.evidence["improvement"] > 0
    assert describe(v.evidence) in v.reason
    json.dumps(v.evidence, allow_nan=False)


@given(inc=st.lists(values, min_size=1, max_size=8), cand=st.lists(values, min_size=1, max_size=6),
       better=st.floats(0.0, 0.5), noise=noises, rule=rules, direction=st.sampled_from(["minimize", "maximize"]))
def test_a_better_candidate_is_never_judged_worse(
    inc: list[float], cand: list[float], better: float, noise: Noise, rule: Rule, direction: str,
) -> None:
    """Monotonicity: moving every candidate run in the good direction never turns a keep into a discard (or lower)."""
    sign = 1.0 if direction == "minimize" else -1.0
    shifted = [v - sign * better for v in cand]
    before = judge(inc, cand, noise, rule, direction)
    after = judge(inc, shifted, noise, rule, direction)
    # The spread is unchanged by a shift, up to rounding; the bar depends only on df and the look.
    assert after.evidence["bar"] == before.evidence["bar"]
    if after.evidence["t"] >= before.evidence["t"]:
        assert ORDER[after.decision] >= ORDER[before.decision]


def test_worse_beyond_noise() -> None:
    worse, ev = worse_beyond_noise(INC, [2.45, 2.44], NOISE, "minimize", 0.02)
    assert worse and ev["t"] < ev["bar"] < 0
    assert "bar −" in describe(ev)
    assert not worse_beyond_noise(INC, [2.405], NOISE, "minimize", 0.02)[0]
    assert not worse_beyond_noise(INC, [2.30], NOISE, "minimize", 0.02)[0]
    assert worse_beyond_noise([0.50, 0.51], [0.40], NOISE, "maximize", 0.02)[0]
    with pytest.raises(ValueError):
        worse_beyond_noise(INC, [2.4], NOISE, "minimize", 0.0)


# -- describe -----------------------------------------------------------------------------------------


def test_describe_new_evidence() -> None:
    ev = {"incumbent_mean": 2.4120, "candidate_mean": 2.3801, "t": 4.06, "df": 9, "bar": 2.94}
    assert describe(ev) == "2.4120 → 2.3801 bpb (Δ −0.0319, t = 4.1 on 9 df, bar 2.9)"
    v = judge(INC, [2.45], NOISE, Rule(), "minimize")
    assert describe(v.evidence).startswith("2.4017 → 2.4500 bpb (Δ +0.0483, t = −")


def test_describe_old_evidence() -> None:
    old = {"incumbent_runs": [2.41, 2.414], "incumbent_mean": 2.412, "candidate_runs": [2.38, 2.3802],
           "candidate_mean": 2.3801, "improvement": 0.0319, "sigma": 0.01, "stderr": 0.01, "threshold": 0.02,
           "z": 3.19, "keep_sigma": 2.0}
    assert describe(old) == "2.4120 → 2.3801 bpb (Δ −0.0319, z = 3.2, bar 2.0)"


def test_describe_baselines_and_odd_evidence() -> None:
    assert describe({"runs": [2.40, 2.41, 2.42], "mean": 2.41, "sigma": 0.01}) == "2.4100 ± 0.0100 bpb over 3 runs"
    assert describe({}) == ""
    assert describe({"incumbent_mean": "x", "candidate_mean": 2.0}) == ""
    assert describe({"incumbent_mean": 2.0, "candidate_mean": 2.1, "t": None, "z": "?"}) == "2.0000 → 2.1000 bpb (Δ +0.1000)"


# -- simulation ---------------------------------------------------------------------------------------


def test_simulator_policies_respect_their_caps() -> None:
    sim = _sim()
    rng = random.Random(7)
    for policy in (sim.Sequential(), sim.Today(), sim.StrictLess()):
        decisions, overhead = sim.run_session(policy, sim.Normal(2.4, 0.007), sim.gains_from(sim.GAINS), 12, rng)
        assert len(decisions) == 12 and all(1 <= d.runs <= policy.max_runs for d in decisions)
        assert overhead >= policy.baseline_runs


def test_the_null_false_keep_rate_stays_below_alpha() -> None:
    """Seeded: null changes against a fresh 3-run incumbent (the worst case: df 2 at the start) and in whole sessions."""
    sim = _sim()
    rule = Rule()
    margin = lambda n: 3 * math.sqrt(rule.alpha * (1 - rule.alpha) / n)  # noqa: E731
    fresh = sim.replay_decision(sim.Sequential(rule=rule), sim.Normal(2.4, 0.007), sim.Normal(2.4, 0.007),
                                trials=6000, seed=11)
    assert fresh.keep_rate <= rule.alpha + margin(fresh.decisions)
    s = sim.simulate(sim.Sequential(rule=rule), sim.Normal(2.4, 0.007), sim.gains_from([0.0]), sessions=150,
                     candidates=30, seed=12)
    assert s.keep_rate(0.0) <= rule.alpha + margin(s.decisions)
    # Resampling real-looking, skewed values (a few slow runs) must not break it either.
    skewed = sim.Resample((2.400, 2.402, 2.398, 2.401, 2.399, 2.403, 2.397, 2.420))
    r = sim.replay_decision(sim.Sequential(rule=rule), skewed, skewed, trials=4000, seed=13)
    assert r.keep_rate <= rule.alpha + margin(r.decisions)


def test_a_single_look_is_an_exact_t_test() -> None:
    """With one look the false-keep rate is alpha itself, even on a 3-run σ (2 df): the t bar, not a z bar."""
    sim = _sim()
    rule = Rule(alpha=0.05, min_runs=1, max_runs=1, futility=())
    tally = sim.replay_decision(sim.Sequential(rule=rule, min_sigma=0.0), sim.Normal(2.4, 0.007), sim.Normal(2.4, 0.007),
                                trials=12000, seed=21)
    assert abs(tally.keep_rate - 0.05) < 4 * math.sqrt(0.05 * 0.95 / tally.decisions)


def test_true_gains_of_three_hundredths_are_kept() -> None:
    sim = _sim()
    s = sim.simulate(sim.Sequential(), sim.Normal(2.4, 0.007), sim.gains_from([0.03]), sessions=25, candidates=20,
                     seed=31)
    assert s.keep_rate(0.03) >= 0.9
