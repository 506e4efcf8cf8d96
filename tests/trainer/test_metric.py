"""The fixed metric and the model hand-off."""

from __future__ import annotations

import json
import math
from pathlib import Path

import prepare
import pytest
import torch
from conftest import TRAINER, run_py


class Uniform(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(idx.shape[0], idx.shape[1], 256) + 0.0 * idx[..., None].float()


class Bigram(torch.nn.Module):
    """Depends only on the current byte, so its score cannot depend on windowing."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(256, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("seq_len", [64, 48, 100])
def test_windows_score_every_target_byte_exactly_once(seq_len: int) -> None:
    n = prepare.EVAL_BYTES
    counts = torch.zeros(n + 2, dtype=torch.long)
    for start, n_scored in prepare.eval_windows(n + 10, seq_len, n):
        targets = torch.arange(start + 1, start + seq_len + 1)[seq_len - n_scored:]
        counts[targets] += 1
    assert counts[0] == 0 and counts[n + 1] == 0
    assert bool((counts[1:n + 1] == 1).all())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("seq_len", [64, 48])
def test_uniform_logits_give_exactly_8_bpb(seq_len: int) -> None:
    data = torch.randint(0, 256, (prepare.EVAL_BYTES + 1,), dtype=torch.uint8)
    assert prepare.bits_per_byte(Uniform(), data, seq_len) == pytest.approx(8.0, abs=1e-9)


@pytest.mark.timeout(30)
def test_bpb_formula_matches_direct_cross_entropy() -> None:
    torch.manual_seed(0)
    model = Bigram()
    data = torch.randint(0, 256, (prepare.EVAL_BYTES + 1,), dtype=torch.uint8)
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(model(data[:-1].long()[None])[0],
                                                   data[1:].long()).item() / math.log(2)
    for seq_len in (64, 48):  # same bytes scored regardless of context length
        assert prepare.bits_per_byte(model, data, seq_len) == pytest.approx(direct, rel=1e-6)


@pytest.mark.timeout(60)
def test_saved_uniform_model_evaluates_to_8_via_cli(env: dict[str, str], tmp_path: Path) -> None:
    path = prepare.save_model(Uniform(), 64, tmp_path / "u.pt2")
    r = run_py([str(TRAINER / "prepare.py"), "evaluate", "--model", str(path),
                "--splits", "val,holdout"], env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(out) == {"val_bpb", "holdout_bpb", "val_bytes", "eval_seconds"}
    assert out["val_bpb"] == pytest.approx(8.0) and out["holdout_bpb"] == pytest.approx(8.0)
    assert out["val_bytes"] == prepare.EVAL_BYTES


@pytest.mark.timeout(30)
def test_artifact_is_self_contained_and_has_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Bigram()
    path = prepare.save_model(model, 32, tmp_path / "b.pt2")
    del Bigram.forward  # the loaded artifact must not need this class's code
    try:
        loaded, meta = prepare.load_model(path)
        assert meta["seq_len"] == 32 and meta["vocab_size"] == 256
        assert meta["format"] == "torch.export"
        x = torch.randint(0, 256, (3, 32))
        assert torch.allclose(loaded(x), model.table(x))
    finally:
        Bigram.forward = lambda self, idx: self.table(idx)  # type: ignore[method-assign]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["missing", "garbage", "nan"])
def test_bad_model_file_exits_nonzero_with_message(env: dict[str, str], tmp_path: Path,
                                                   kind: str) -> None:
    path = tmp_path / "m.pt2"
    if kind == "garbage":
        path.write_bytes(b"not a model")
    elif kind == "nan":
        class NaNModel(torch.nn.Module):
            def forward(self, idx: torch.Tensor) -> torch.Tensor:
                return torch.full((idx.shape[0], idx.shape[1], 256), float("nan"))
        prepare.save_model(NaNModel(), 64, path)
    r = run_py([str(TRAINER / "prepare.py"), "evaluate", "--model", str(path)], env)
    assert r.returncode != 0 and r.stdout == ""
    assert "error:" in r.stderr and "Traceback" not in r.stderr


class DataDependent(torch.nn.Module):
    """Data-dependent Python control flow: torch.export refuses it, so jit.trace is used."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(256, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if int(idx.sum()) >= 0:
            return self.table(idx)
        return -self.table(idx)


@pytest.mark.timeout(60)
def test_export_failure_falls_back_to_torchscript(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DataDependent()
    path = prepare.save_model(model, 64, tmp_path / "d.pt2")
    loaded, meta = prepare.load_model(path)
    assert meta["format"] in ("torchscript", "torch.export")
    data = torch.randint(0, 256, (prepare.EVAL_BYTES + 1,), dtype=torch.uint8)
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(model.table(data[:-1].long()),
                                                   data[1:].long()).item() / math.log(2)
    assert prepare.bits_per_byte(loaded, data, 64) == pytest.approx(direct, rel=1e-6)
