import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overnight.daemon.decide import judge, noise_sigma


def test_noise_sigma_is_the_sample_stdev_with_a_floor() -> None:
    assert noise_sigma([1.0, 1.2], 0.0) == pytest.approx(math.sqrt(0.02))
    assert noise_sigma([1.0, 1.0, 1.0], 0.01) == 0.01
    with pytest.raises(ValueError):
        noise_sigma([1.0], 0.0)


def test_a_clear_improvement_is_confirmed_then_kept() -> None:
    first = judge([2.30, 2.31, 2.29], [2.20], sigma=0.01, keep_sigma=2.0, direction="minimize", confirm_runs=1)
    assert not first.keep and first.confirm
    second = judge([2.30, 2.31, 2.29], [2.20, 2.21], sigma=0.01, keep_sigma=2.0, direction="minimize", confirm_runs=1)
    assert second.keep and not second.confirm
    assert second.evidence["candidate_mean"] == pytest.approx(2.205)
    assert second.evidence["z"] > 2


def test_a_change_within_noise_is_discarded() -> None:
    v = judge([2.30, 2.31], [2.295], sigma=0.01, keep_sigma=2.0, direction="minimize", confirm_runs=1)
    assert not v.keep and not v.confirm
    assert "no improvement beyond noise" in v.reason


def test_a_lucky_first_run_that_does_not_confirm_is_discarded() -> None:
    v = judge([2.30, 2.30], [2.25, 2.31], sigma=0.01, keep_sigma=2.0, direction="minimize", confirm_runs=1)
    assert not v.keep and "another seed" in v.reason


def test_maximize_flips_the_sign() -> None:
    v = judge([0.5, 0.5], [0.9], sigma=0.01, keep_sigma=2.0, direction="maximize", confirm_runs=0)
    assert v.keep


@given(
    inc=st.lists(st.floats(0.5, 8.0), min_size=1, max_size=5),
    cand=st.lists(st.floats(0.5, 8.0), min_size=1, max_size=3),
    sigma=st.floats(0.001, 1.0),
    k=st.floats(0.5, 4.0),
)
def test_keep_exactly_when_the_improvement_clears_the_bar(inc: list[float], cand: list[float], sigma: float, k: float) -> None:
    v = judge(inc, cand, sigma=sigma, keep_sigma=k, direction="minimize", confirm_runs=len(cand) - 1)
    improvement = statistics.fmean(inc) - statistics.fmean(cand)
    bar = k * sigma * math.sqrt(1 / len(inc) + 1 / len(cand))
    assert v.keep == (improvement > bar)
    assert not (v.keep and v.confirm)
