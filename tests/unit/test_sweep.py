import time
from pathlib import Path

from overnight.daemon.agents.base import Context
from overnight.daemon.agents.sweep import SweepAgent, config_block, format_value, rewrite
from overnight.daemon.journal import Experiment

SOURCE = '''"""doc"""
N_LAYER = 2            # blocks
N_EMBD = 96            # width
LR = 3e-3              # rate
BETA2 = 0.99           # momentum-like
DROPOUT = 0.0          # off
COMPILE = 0            # flag
NAME = "gpt"           # not a number: ignored

import torch

def f():
    AFTER = 5
'''


def _exp(i: int, status: str, meta: dict) -> Experiment:
    return Experiment(
        id=i, tag="t", kind="experiment", status=status, parent_commit="p", commit_sha="c", ref=None,
        description="", hypothesis="", reasoning="", diff="", agent="sweep", meta=meta, val_bpb=None,
        holdout_bpb=None, decided_by=None, decision_reason=None, evidence=None, error=None, attempts=1,
        created=time.time(), finished=None,
    )


def _ctx(source: str, history: list[Experiment]) -> Context:
    base = _exp(0, "keep", {})
    return Context(program="", files={"trainer/train.py": source}, incumbent=base, history=history, feedback=[], sigma=0.01)


def test_config_block_is_the_numeric_constants_before_the_first_def() -> None:
    names = [c.name for c in config_block(SOURCE)]
    assert names == ["N_LAYER", "N_EMBD", "LR", "BETA2", "DROPOUT", "COMPILE"]


def test_rewrite_keeps_comments_and_layout() -> None:
    out = rewrite(SOURCE, config_block(SOURCE), {"LR": 0.006, "N_EMBD": 192})
    assert "LR = 0.006              # rate\n" in out
    assert "N_EMBD = 192            # width\n" in out
    assert out.count("\n") == SOURCE.count("\n")


def test_format_value_round_trips_as_the_same_type() -> None:
    assert format_value(2.0) == "2.0" and isinstance(eval(format_value(2.0)), float)
    assert format_value(6e-05) == "6e-05"
    assert format_value(7) == "7"


def test_proposals_are_real_diffs_with_descriptions() -> None:
    agent = SweepAgent(exclude=("COMPILE",), seed=1)
    p = agent.propose(_ctx(SOURCE, []))
    assert p is not None
    (path, new), = p.edit.files
    assert path == "trainer/train.py" and new != SOURCE
    changed = {c.name: c.value for c in config_block(new)}
    before = {c.name: c.value for c in config_block(SOURCE)}
    moved = [k for k in before if before[k] != changed[k]]
    assert len(moved) == 1 and moved[0] != "COMPILE"
    assert moved[0] in p.description and "→" in p.description
    assert p.meta["config"][moved[0]] == changed[moved[0]]


def test_momentum_like_constants_stay_below_one_and_flags_stay_put() -> None:
    agent = SweepAgent(exclude=("COMPILE",))
    history: list[Experiment] = []
    for i in range(40):
        p = agent.propose(_ctx(SOURCE, history))
        assert p is not None
        cfg = p.meta["config"]
        assert 0 < cfg["BETA2"] < 1
        assert "COMPILE" not in cfg and "COMPILE = 0 " in p.edit.files[0][1]
        assert cfg["N_LAYER"] >= 1 and cfg["N_EMBD"] >= 8
        history.append(_exp(i + 1, "discard", p.meta))


def test_never_repeats_a_tried_setting_and_eventually_runs_out() -> None:
    source = "A = 2  # small int\nB = 0.5  # float\n"
    agent = SweepAgent()
    history: list[Experiment] = []
    seen = set()
    while (p := agent.propose(_ctx(source, history))) is not None:
        key = tuple(sorted(p.meta["config"].items()))
        assert key not in seen
        seen.add(key)
        history.append(_exp(len(history) + 1, "discard", p.meta))
        assert len(history) < 100
    assert len(seen) >= 8  # singles at three levels, then pairs


def test_a_direction_that_was_kept_is_tried_first() -> None:
    agent = SweepAgent()
    history = [_exp(1, "keep", {"config": {}, "directions": {"LR": 1}})]
    p = agent.propose(_ctx(SOURCE, history))
    assert p is not None and p.meta["directions"] == {"LR": 1}


def test_no_tunable_constants_means_nothing_to_propose(tmp_path: Path) -> None:
    assert SweepAgent().propose(_ctx("import torch\nx = torch.zeros(1)\n", [])) is None
