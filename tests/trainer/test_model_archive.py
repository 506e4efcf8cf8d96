"""The model hand-off: an archive that evaluation loads without ever running code from it.

Every crafted file below is one that an adversarial train.py could write. Where a payload would
run code, it writes a marker file; the test asserts the marker was not created.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prepare
import pytest
import torch


class Bigram(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(256, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], Bigram]:
    """The members of an honest archive (saved once for the module) and the model it came from."""
    torch.manual_seed(0)
    model = Bigram()
    path = prepare.save_model(model, 32, tmp_path_factory.mktemp("honest") / "b.ovm")
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}, model


def write_archive(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def with_program(members: dict[str, bytes], edit: Callable[[dict[str, Any]], None]) -> dict[str, bytes]:
    doc = json.loads(members["program.json"])
    edit(doc)
    return {**members, "program.json": json.dumps(doc).encode()}


def nodes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["graph_module"]["graph"]["nodes"]  # type: ignore[no-any-return]


def refused(path: Path) -> prepare.ModelRefused:
    with pytest.raises(prepare.ModelRefused) as exc:
        prepare.load_model(path)
    print("refused:", exc.value)
    assert exc.value.check == "load" and exc.value.code == prepare.EXIT_REFUSED
    assert "\n" not in str(exc.value)  # one line
    return exc.value


@pytest.mark.timeout(60)
def test_honest_archive_loads_with_a_dynamic_batch_and_needs_no_model_code(
        honest: tuple[dict[str, bytes], Bigram], tmp_path: Path) -> None:
    members, model = honest
    assert sorted(members) == sorted(prepare.MODEL_MEMBERS)
    assert json.loads(members["meta.json"]) == {"format": "overnight-model/1", "seq_len": 32, "vocab_size": 256,
                                                "n_params": 65536}
    path = write_archive(tmp_path / "b.ovm", members)
    saved_forward = Bigram.forward
    del Bigram.forward  # the loaded model must not need this class's code
    try:
        loaded, meta = prepare.load_model(path)
    finally:
        Bigram.forward = saved_forward  # type: ignore[method-assign]
    assert meta["seq_len"] == 32 and meta["ops"] == ["aten.embedding.default"]
    for batch in (1, 3, 64):
        x = torch.randint(0, 256, (batch, 32))
        assert torch.equal(loaded(x), model.table(x))


@pytest.mark.timeout(60)
def test_a_pickle_payload_in_the_weights_never_runs(honest: tuple[dict[str, bytes], Bigram], tmp_path: Path) -> None:
    members, _ = honest

    class Payload:
        def __init__(self, marker: Path) -> None:
            self.marker = marker

        def __reduce__(self) -> tuple[Any, ...]:
            return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)

    def weights(marker: Path) -> bytes:
        buf = io.BytesIO()
        torch.save({"table.weight": torch.zeros(256, 256), "x": Payload(marker)}, buf)
        return buf.getvalue()

    # The payload is live: unpickled the way torch.export.load falls back to, it runs.
    probe = tmp_path / "probe"
    torch.load(io.BytesIO(weights(probe)), weights_only=False)
    assert probe.read_text() == "ran"
    marker = tmp_path / "marker"
    reason = refused(write_archive(tmp_path / "evil.ovm", {**members, "state_dict.pt": weights(marker)}))
    assert "state_dict.pt" in str(reason) and "weights-only loader refused it: Unsupported global" in str(reason)
    assert not marker.exists()
    # The same payload as a raw pickle (not a torch zip) in another member.
    raw = pickle.dumps(Payload(marker))
    refused(write_archive(tmp_path / "evil2.ovm", {**members, "constants.pt": raw}))
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_a_node_target_outside_aten_is_refused_before_torch_resolves_it(
        honest: tuple[dict[str, bytes], Bigram], tmp_path: Path) -> None:
    from torch._export.serde.serialize import GraphModuleDeserializer
    # What torch's own deserialiser would make of the target: a callable that runs a shell command.
    assert GraphModuleDeserializer().deserialize_operator("torch.os.system") is os.system
    members, _ = honest
    marker = tmp_path / "marker"

    def to_system(doc: dict[str, Any]) -> None:
        nodes(doc)[0]["target"] = "torch.os.system"
        nodes(doc)[0]["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]
    reason = refused(write_archive(tmp_path / "evil.ovm", with_program(members, to_system)))
    assert "torch.os.system" in str(reason) and "not an aten operator" in str(reason)
    assert not marker.exists()
    for target, expected in (("#custom_ns:my_op", "not an aten operator"),
                             ("torch.ops.higher_order.cond", "not an aten operator"),
                             ("torch.ops.aten.__class__.__init__", "not an aten operator"),
                             ("_operator.attrgetter", "not an aten operator"),
                             ("torch.ops.aten.no_such_op.default", "not an aten operator")):
        path = write_archive(tmp_path / "t.ovm", with_program(members, lambda d, t=target: nodes(d)[0].update(target=t)))
        assert expected in str(refused(path))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target, why", [
    ("torch.ops.aten.from_file.default", "reads or writes files"),
    ("torch.ops.aten.empty.memory_format", "uninitialised memory"),
    ("torch.ops.aten.rand.default", "random"),
    ("torch.ops.aten.bernoulli.p", "random"),
    ("torch.ops.aten._assert_async.msg", "device-side assert"),
    ("torch.ops.aten.add_.Tensor", "writes to its inputs"),
    ("torch.ops.aten.embedding.out", "writes to its inputs"),
])
def test_denied_aten_operators_are_refused(honest: tuple[dict[str, bytes], Bigram], tmp_path: Path,
                                           target: str, why: str) -> None:
    members, _ = honest
    path = write_archive(tmp_path / "m.ovm", with_program(members, lambda d: nodes(d)[0].update(target=target)))
    reason = str(refused(path))
    assert target.removeprefix("torch.ops.") in reason and why in reason


@pytest.mark.timeout(60)
def test_attention_is_allowed_only_without_dropout() -> None:
    def node(dropout: dict[str, Any] | None) -> dict[str, Any]:
        inputs = [{"name": n, "arg": {"as_tensor": {"name": n}}, "kind": 1} for n in ("query", "key", "value")]
        if dropout is not None:
            inputs.append({"name": "dropout_p", "arg": dropout, "kind": 1})
        return {"target": "torch.ops.aten.scaled_dot_product_attention.default", "inputs": inputs}
    assert prepare._node_problem(node(None)) is None  # the default, dropout_p=0.0
    assert prepare._node_problem(node({"as_float": 0.0})) is None
    assert "random unless dropout_p=0.0" in str(prepare._node_problem(node({"as_float": 0.1})))
    assert "computed in the graph" in str(prepare._node_problem(node({"as_sym_float": {"as_name": "s"}})))


@pytest.mark.timeout(60)
def test_guard_code_and_symbolic_shapes_that_would_run_code_are_refused(
        honest: tuple[dict[str, bytes], Bigram], tmp_path: Path) -> None:
    members, _ = honest
    marker = tmp_path / "marker"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def guards(doc: dict[str, Any]) -> None:  # torch turns guards_code into Python source and exec()s it
        doc["guards_code"] = [f"{code} or True"]
    assert "guard code" in str(refused(write_archive(tmp_path / "g.ovm", with_program(members, guards))))

    def sympy_eval(doc: dict[str, Any]) -> None:  # torch parses symbolic shapes with sympify, i.e. eval
        meta = doc["graph_module"]["graph"]["tensor_values"]["idx"]
        meta["sizes"][0] = {"as_expr": {"expr_str": code, "hint": {"as_int": 64}}}
    assert "symbolic shape" in str(refused(write_archive(tmp_path / "s.ovm", with_program(members, sympy_eval))))

    def sympy_string(doc: dict[str, Any]) -> None:  # Max() sympifies a string argument: strings only as names
        meta = doc["graph_module"]["graph"]["tensor_values"]["idx"]
        meta["sizes"][0] = {"as_expr": {"expr_str": f"Max({code!r}, Integer(1))", "hint": {"as_int": 64}}}
    assert "symbolic shape" in str(refused(write_archive(tmp_path / "s2.ovm", with_program(members, sympy_string))))
    assert not marker.exists()
    honest_expr = "Mul(Integer(64), Symbol('s95', positive=True, integer=True))"
    assert prepare._sympy_problem(honest_expr) is None


@pytest.mark.timeout(60)
def test_structural_tricks_in_the_program_are_refused(honest: tuple[dict[str, bytes], Bigram], tmp_path: Path) -> None:
    members, _ = honest
    edits: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
        "state update": (lambda d: d["graph_module"]["signature"]["output_specs"].append(
            {"buffer_mutation": {"arg": {"name": "embedding"}, "buffer_name": "table.weight"}}), "update no state"),
        "subgraph": (lambda d: nodes(d)[0]["inputs"].append(
            {"name": "g", "arg": {"as_graph": {"name": "g", "graph": {}}}, "kind": 1}), "subgraph"),
        "custom object": (lambda d: d["graph_module"]["signature"]["input_specs"].insert(
            0, {"custom_obj": {"arg": {"name": "obj", "class_fqn": "x"}, "custom_obj_name": "obj"}}), "inputs must be"),
        "integer input": (lambda d: d["graph_module"]["signature"]["input_specs"][1]["user_input"].update(
            arg={"as_int": 3}), "input and output must be tensors"),
        "name injection": (lambda d: nodes(d)[0]["outputs"][0]["as_tensor"].update(name="x; import os"), "malformed name"),
        "attribute path": (lambda d: d["graph_module"]["signature"]["input_specs"][0]["parameter"].update(
            parameter_name="table.__class__"), "malformed attribute path"),
        "tree spec type": (lambda d: d["graph_module"]["module_call_graph"][0]["signature"].update(
            out_spec='[1, {"type": "os.system", "context": "null", "children_spec": []}]'), "os.system"),
        "device": (lambda d: d["graph_module"]["graph"]["tensor_values"]["idx"]["device"].update(type="cuda"), "cuda"),
        "device argument": (lambda d: nodes(d)[0]["inputs"].append(
            {"name": "device", "arg": {"as_device": {"type": "meta", "index": None}}, "kind": 2}), "'meta'"),
    }
    for label, (edit, expected) in edits.items():
        reason = str(refused(write_archive(tmp_path / "m.ovm", with_program(members, edit))))
        assert expected in reason, (label, reason)


@pytest.mark.timeout(60)
def test_wrong_members_garbage_and_bad_meta_are_refused(honest: tuple[dict[str, bytes], Bigram], tmp_path: Path) -> None:
    members, _ = honest
    for variant in ({**members, "evil.py": b"print('hi')"},
                    {k: v for k, v in members.items() if k != "constants.pt"},
                    {("../" + k if k == "meta.json" else k): v for k, v in members.items()}):
        assert "members" in str(refused(write_archive(tmp_path / "m.ovm", variant)))
    (tmp_path / "garbage.ovm").write_bytes(b"not a model")
    assert "not a readable" in str(refused(tmp_path / "garbage.ovm"))
    for meta in (b"{}", b"[", json.dumps({"format": "overnight-model/1", "seq_len": 0, "vocab_size": 256,
                                           "n_params": 1}).encode()):
        assert "meta.json" in str(refused(write_archive(tmp_path / "m.ovm", {**members, "meta.json": meta})))
    with pytest.raises(prepare.HarnessError, match="does not exist") as exc:
        prepare.load_model(tmp_path / "nothing.ovm")
    assert exc.value.code == 1 and not isinstance(exc.value, prepare.ModelRefused)


@pytest.mark.timeout(60)
def test_zip_bombs_and_oversized_members_are_refused_before_they_are_read(
        honest: tuple[dict[str, bytes], Bigram], tmp_path: Path) -> None:
    members, _ = honest
    # 64 MiB of spaces deflate to ~64 KiB: the declared size is refused before anything is inflated.
    bomb = write_archive(tmp_path / "bomb.ovm", {**members, "program.json": b" " * (65 << 20)}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    assert "more than the" in str(refused(bomb))
    big_meta = write_archive(tmp_path / "meta.ovm", {**members, "meta.json": b" " * (1 << 17)})
    assert "meta.json is 131,072 bytes" in str(refused(big_meta))
    # A header that under-declares the size: reading stops at the declared size and the CRC fails.
    path = write_archive(tmp_path / "liar.ovm", {**members, "meta.json": b" " * (1 << 17)}, zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    declared = (1 << 17).to_bytes(4, "little")
    assert raw.count(declared) == 2  # local header and central directory
    raw = raw.replace(declared, (100).to_bytes(4, "little"))
    path.write_bytes(bytes(raw))
    refused(path)
    # A file bigger than all members together is refused from its size alone (a sparse file).
    huge = tmp_path / "huge.ovm"
    with open(huge, "wb") as f:
        f.truncate(prepare.MODEL_MAX_BYTES + 1)
    assert "more than the" in str(refused(huge))


@pytest.mark.timeout(60)
def test_models_that_cannot_be_exported_or_would_be_refused_fail_at_save_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class DataDependent(Bigram):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.table(idx) if int(idx.sum()) >= 0 else -self.table(idx)

    class Noisy(Bigram):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.table(idx) + torch.rand(idx.shape[0], idx.shape[1], 256)

    for model, expected in ((DataDependent(), "cannot export the model"), (Noisy(), "draws random numbers")):
        with pytest.raises(SystemExit) as exc:
            prepare.save_model(model, 16, tmp_path / "m.ovm")
        assert exc.value.code == prepare.EXIT_TRAIN_ERROR
        last = capsys.readouterr().err.strip().splitlines()[-1]  # torch may log the graph before it
        assert last.startswith("error: ") and expected in last
        assert not (tmp_path / "m.ovm").exists()


@pytest.mark.timeout(60)
def test_in_place_ops_and_eval_dropout_are_saved_as_a_functional_graph(tmp_path: Path) -> None:
    class InPlace(Bigram):
        def __init__(self) -> None:
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.drop(self.table(idx)).clone()
            x.add_(1.0)
            return x.masked_fill_(x > 100, 0.0)

    torch.manual_seed(0)
    model = InPlace()
    loaded, meta = prepare.load_model(prepare.save_model(model, 16, tmp_path / "m.ovm"))
    assert not any("dropout" in op or op.split(".")[1].endswith("_") for op in meta["ops"]), meta["ops"]
    x = torch.randint(0, 256, (2, 16))
    assert torch.equal(loaded(x), model.eval()(x))


def test_a_graph_that_is_already_functional_is_saved_as_exported(honest: tuple[dict[str, bytes], Bigram]) -> None:
    """Decomposing costs every run ~0.5 s: only a graph the evaluation would refuse as exported is decomposed."""
    members, _ = honest
    doc = json.loads(members["program.json"])
    assert doc["verifiers"] == ["TRAINING"]  # as torch.export gave it; the loader checks it like any other
