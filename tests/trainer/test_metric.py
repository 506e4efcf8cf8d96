"""The fixed metric and the checks evaluate runs on a model before it scores it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import prepare
import pytest
import torch
import torch.nn.functional as F
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


class Attention(torch.nn.Module):
    """One attention layer; causal=False is the classic mistake (or trick): every position sees the window."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.tok = torch.nn.Embedding(256, 32)
        self.pos = torch.nn.Embedding(64, 32)
        self.qkv = torch.nn.Linear(32, 96)
        self.head = torch.nn.Linear(32, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T))
        q, k, v = (t.view(B, T, 4, 8).transpose(1, 2) for t in self.qkv(x).split(32, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.head(x + y.transpose(1, 2).reshape(B, T, 32))


class PeekNext(Bigram):
    """Predicts from the NEXT byte, i.e. from the target itself (the last position wraps around)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(torch.cat([idx[:, 1:], idx[:, :1]], dim=1))


class BatchMixer(Bigram):
    """Causal within a window, but adds the batch mean: it sees the other windows, among them the next one."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.table(idx)
        return x + x.mean(dim=0, keepdim=True)


class NaNModel(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.full((idx.shape[0], idx.shape[1], 256), float("nan")) + 0.0 * idx[..., None].float()


def _hash(idx: torch.Tensor, order: int, buckets: int) -> torch.Tensor:
    h = torch.zeros_like(idx)
    for k in range(order):  # the previous `order` bytes (zeros before the window): causal
        h = (h * 257 + F.pad(idx, (k, 0))[..., :idx.shape[-1]]) % buckets
    return h


class Memoriser(torch.nn.Module):
    """A lookup table of the next byte after each 3-byte context, counted on the val split itself."""

    def __init__(self, text: torch.Tensor, order: int = 3, buckets: int = 4096) -> None:
        super().__init__()
        self.order, self.buckets = order, buckets
        data = text.long()
        h = _hash(data[None, :-1], order, buckets)[0]
        counts = torch.zeros(buckets * 256).index_add_(0, h * 256 + data[1:], torch.ones(len(h)))
        self.register_buffer("table", torch.log(counts.view(buckets, 256) + 0.05))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[_hash(idx, self.order, self.buckets)]


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
def test_scoring_order_is_fixed_and_keeps_neighbouring_windows_apart() -> None:
    windows = prepare.eval_windows(prepare.EVAL_BYTES + 1, 64, prepare.EVAL_BYTES)
    order = prepare.eval_order(windows)
    assert order == prepare.eval_order(windows) and sorted(order) == windows and order != windows
    row = {w: i for i, w in enumerate(order)}
    pairs = list(zip(windows, windows[1:], strict=False))
    adjacent = sum(abs(row[a] - row[b]) == 1 for a, b in pairs)
    same_batch = sum(row[a] // prepare.EVAL_BATCH == row[b] // prepare.EVAL_BATCH for a, b in pairs)
    assert adjacent <= 4 and same_batch / len(pairs) < 0.05, (adjacent, same_batch)


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
    for seq_len in (64, 48):  # same bytes scored regardless of context length and order
        assert prepare.bits_per_byte(model, data, seq_len) == pytest.approx(direct, rel=1e-6)


@pytest.mark.timeout(90)
def test_saved_uniform_model_evaluates_to_8_via_cli(env: dict[str, str], tmp_path: Path) -> None:
    path = prepare.save_model(Uniform(), 64, tmp_path / "u.ovm")
    r = run_py(["-I", str(TRAINER / "prepare.py"), "evaluate", "--model", str(path),
                "--splits", "val,holdout,ood"], env, timeout=90)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(out) == {"val_bpb", "holdout_bpb", "ood_bpb", "train_bpb", "val_bytes", "eval_seconds", "checks",
                        "flags", "timing"}
    for split in ("val", "holdout", "ood", "train"):
        assert out[f"{split}_bpb"] == pytest.approx(8.0)
    assert out["val_bytes"] == prepare.EVAL_BYTES and out["flags"] == []
    assert set(out["checks"]) == {"load", "batch", "causal", "finite", "normalized", "train_gap"}
    assert all(check["ok"] for check in out["checks"].values())
    assert out["checks"]["causal"]["probes"] == 96 and out["checks"]["batch"]["max_deviation"] == 0.0


def _evaluate(model: torch.nn.Module, data_dir: Path, tmp_path: Path) -> dict[str, object]:
    path = prepare.save_model(model, 64, tmp_path / "m.ovm")
    return prepare.evaluate(path, ("val",), directory=data_dir)


@pytest.mark.timeout(60)
def test_an_honest_attention_model_passes_the_checks(data_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = _evaluate(Attention(causal=True), data_dir, tmp_path)
    checks = out["checks"]
    assert isinstance(checks, dict) and checks["causal"]["ok"] and checks["batch"]["ok"]
    assert checks["causal"]["max_deviation"] <= prepare.CHECK_ATOL / 10
    assert checks["batch"]["max_deviation"] <= prepare.CHECK_ATOL / 10
    assert out["flags"] == [] and set(out) >= {"val_bpb", "train_bpb"} and "holdout_bpb" not in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model, check", [(Attention(causal=False), "causal"), (PeekNext(), "causal"),
                                          (BatchMixer(), "batch"), (NaNModel(), "finite")])
def test_a_model_built_to_fail_a_check_is_refused(data_dir: Path, tmp_path: Path, model: torch.nn.Module,
                                                  check: str) -> None:
    with pytest.raises(prepare.ModelRefused) as exc:
        _evaluate(model, data_dir, tmp_path)
    assert exc.value.check == check and exc.value.code == prepare.EXIT_REFUSED
    json.dumps(exc.value.evidence)  # the evidence goes into the refusal's JSON line
    if check == "causal":
        assert "future bytes" in str(exc.value)
        assert exc.value.evidence["position"] <= exc.value.evidence["cut"]
    if check == "batch":
        assert "other windows in its batch" in str(exc.value)


@pytest.mark.timeout(90)
def test_a_refused_model_prints_one_json_line_and_exits_4(env: dict[str, str], tmp_path: Path) -> None:
    path = prepare.save_model(PeekNext(), 64, tmp_path / "peek.ovm")
    r = run_py(["-I", str(TRAINER / "prepare.py"), "evaluate", "--model", str(path)], env, timeout=90)
    assert r.returncode == 4, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(out) == {"refused", "check", "evidence"} and out["check"] == "causal"
    assert out["refused"].startswith("the model looks at future bytes")
    assert "Traceback" not in r.stderr and "refused (causal)" in r.stderr


@pytest.mark.timeout(60)
def test_a_model_that_memorised_val_is_flagged_not_refused(data_dir: Path, tmp_path: Path) -> None:
    val = prepare.load_split("val", data_dir)
    out = _evaluate(Memoriser(val[:prepare.EVAL_BYTES + 1]), data_dir, tmp_path)
    checks = out["checks"]
    assert isinstance(checks, dict) and not checks["train_gap"]["ok"]
    assert checks["causal"]["ok"] and checks["batch"]["ok"]
    assert isinstance(out["val_bpb"], float) and isinstance(out["train_bpb"], float)
    assert out["val_bpb"] < out["train_bpb"] - prepare.TRAIN_GAP_FLAG_BPB
    assert len(out["flags"]) == 1 and str(out["flags"][0]).startswith("val far below train")  # type: ignore[index]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["missing", "wrong_shape"])
def test_a_missing_model_or_a_broken_contract_is_an_error(data_dir: Path, tmp_path: Path, kind: str) -> None:
    class WrongShape(Bigram):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.table(idx)[..., :255]

    path = tmp_path / "m.ovm" if kind == "missing" else prepare.save_model(WrongShape(), 64, tmp_path / "w.ovm")
    with pytest.raises(prepare.HarnessError) as exc:
        prepare.evaluate(path, ("val",), directory=data_dir)
    assert exc.value.code == 1 and not isinstance(exc.value, prepare.ModelRefused)
    assert ("does not exist" if kind == "missing" else "expected float logits of shape (64, 64, 256) on the CPU") in str(exc.value)


@pytest.mark.timeout(30)
def test_evaluate_refuses_unknown_splits(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(prepare.HarnessError, match="cannot evaluate on split 'test'"):
        prepare.evaluate(tmp_path / "m.ovm", ("val", "test"), directory=data_dir)
