"""Corpus building: deterministic splits, idempotence, manifest verification, fineweb input."""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import shutil
from pathlib import Path

import prepare
import pytest
from conftest import TRAINER, run_py


@pytest.mark.timeout(30)
def test_split_rule_is_deterministic_and_roughly_90_5_5(data_dir: Path) -> None:
    assert prepare.split_of(7, b"abc") == prepare.split_of(7, b"abc")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert manifest["format"] == prepare.MANIFEST_FORMAT == 2
    assert manifest["corpus"] == "sympy" and manifest["source_version"] == "1.14.0"
    sizes = {s: manifest["files"][f"{s}.bin"]["bytes"] for s in prepare.SPLITS}
    total = sum(sizes.values())
    assert 0.85 < sizes["train"] / total < 0.95
    assert 0.03 < sizes["val"] / total < 0.07 and 0.03 < sizes["holdout"] / total < 0.07
    assert sizes["val"] > prepare.EVAL_BYTES + 1 and sizes["holdout"] > prepare.EVAL_BYTES + 1
    # The SymPy splits are those of manifest format 1: the new format changed no byte of them.
    assert manifest["files"]["train.bin"]["sha256"].startswith("1bafb27df7589412")
    assert manifest["files"]["val.bin"]["sha256"].startswith("9fc2cd2cadc5bef9")


@pytest.mark.timeout(30)
def test_rebuild_gives_identical_bytes_and_manifest_and_build_is_idempotent(data_dir: Path,
                                                                            tmp_path: Path) -> None:
    again = prepare.build("sympy", directory=tmp_path / "again")
    first = json.loads((data_dir / "manifest.json").read_text())
    assert again["files"] == first["files"]
    # No timestamp, no path: the manifest (and the manifest_sha256 the daemon pins) is reproducible.
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (data_dir / "manifest.json").read_bytes()
    mtime = (tmp_path / "again" / "train.bin").stat().st_mtime_ns
    prepare.build("sympy", directory=tmp_path / "again")  # verifies, rebuilds nothing
    assert (tmp_path / "again" / "train.bin").stat().st_mtime_ns == mtime


@pytest.mark.timeout(30)
def test_ood_split_is_a_fixed_sample_of_the_standard_library(data_dir: Path) -> None:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    ood = (data_dir / "ood.bin").read_bytes()
    assert manifest["files"]["ood.bin"]["bytes"] == len(ood) == prepare.OOD_BYTES
    assert manifest["ood"]["licence"] == "PSF-2.0 (Python standard library)"
    assert manifest["ood"]["python_version"] == platform.python_version()
    assert ood == prepare.build_ood()[0]  # deterministic
    # Every chunk of ood.bin is a chunk of the stdlib stream, in stream order, and the kept ones
    # are those with the smallest keys.
    root = prepare.stdlib_root()
    files = prepare.stdlib_files(root)
    rels = [f.relative_to(root).as_posix() for f in files]
    assert rels == sorted(rels) and "os.py" in rels and "asyncio/tasks.py" in rels
    assert not any(part in prepare.STDLIB_SKIP_DIRS for rel in rels for part in rel.split("/")[:-1])
    stream = b"".join(f"\n# ===== stdlib/{rel} =====\n".encode() + f.read_bytes() for rel, f in zip(rels, files,
                                                                                                   strict=True))
    chunks = [stream[i:i + prepare.CHUNK_BYTES] for i in range(0, len(stream), prepare.CHUNK_BYTES)]
    keys = {i: prepare._bucket(i, c, b"ood") for i, c in enumerate(chunks) if len(c) == prepare.CHUNK_BYTES}
    kept = sorted(sorted(keys, key=keys.__getitem__)[:prepare.OOD_BYTES // prepare.CHUNK_BYTES])
    assert ood == b"".join(chunks[i] for i in kept)
    assert kept[-1] - kept[0] > len(chunks) // 2  # spread over the library, not its first files


@pytest.mark.timeout(30)
def test_build_refuses_a_source_without_py_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a training run sees: the package as bytecode only. It must not build an empty corpus.
    pkg = tmp_path / "sympy"
    pkg.mkdir()
    (pkg / "__init__.cpython-311.pyc").write_bytes(b"\x00" * 16)
    monkeypatch.setattr(prepare, "sympy_root", lambda: pkg)
    with pytest.raises(prepare.HarnessError, match="holds no .py files, so the SymPy corpus cannot be built"):
        prepare.build("sympy", directory=tmp_path / "out")
    with pytest.raises(prepare.HarnessError, match="out-of-distribution split"):
        prepare.build_ood(tmp_path / "empty")
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(60)
def test_json_line_names_the_training_files_and_the_sources_to_hide(env: dict[str, str], data_dir: Path) -> None:
    r = run_py([str(TRAINER / "prepare.py"), "--json"], env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == {"data_dir", "manifest_sha256", "training_files", "hidden_sources"}
    assert out["data_dir"] == str(data_dir)
    assert out["manifest_sha256"] == hashlib.sha256((data_dir / "manifest.json").read_bytes()).hexdigest()
    assert out["training_files"] == ["manifest.json", "train.bin"]
    (sympy_dir,) = out["hidden_sources"]
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert Path(sympy_dir).is_absolute() and len(list(Path(sympy_dir).rglob("*.py"))) == manifest["n_source_files"]


def _copy(data_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(data_dir, d)
    return d


@pytest.mark.timeout(30)
@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete", "no_manifest"])
def test_corrupt_or_missing_data_exits_2_with_clear_message(data_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            damage: str) -> None:
    d = _copy(data_dir, tmp_path)
    val = d / "val.bin"
    size = val.stat().st_size
    if damage == "flip_byte":
        raw = bytearray(val.read_bytes())
        raw[1000] ^= 0xFF
        val.write_bytes(bytes(raw))
    elif damage == "truncate":
        val.write_bytes(val.read_bytes()[:-1])
    elif damage == "delete":
        val.unlink()
    else:
        (d / "manifest.json").unlink()
    if damage != "no_manifest":
        assert len(prepare.load_split("train", d)) > 0  # split-aware: train does not depend on val
    with pytest.raises(SystemExit) as exc:
        prepare.load_split("val", d)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    expected = {"flip_byte": "sha256 mismatch", "truncate": "corrupt data file",
                "delete": "the val split is not available to training runs: it is the measurement",
                "no_manifest": "no corpus"}[damage]
    assert expected in err and "prepare.py" in err and len(err.strip().splitlines()) == 1
    if damage != "no_manifest":
        assert "--rebuild" in err
    if damage == "no_manifest":
        prepare.build("sympy", directory=d)  # nothing there: a plain build builds it
    else:
        with pytest.raises(prepare.HarnessError, match="--rebuild"):
            prepare.build("sympy", directory=d)  # damage is reported, never silently rebuilt
        prepare.build("sympy", directory=d, rebuild=True)
    assert len(prepare.load_split("val", d)) == size


@pytest.mark.timeout(30)
def test_a_training_view_loads_train_and_refuses_the_measurement(data_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    view = tmp_path / "view"  # what a sealed training run sees: the manifest and train.bin only
    view.mkdir()
    for name in prepare.TRAINING_FILES:
        shutil.copy(data_dir / name, view / name)
    assert len(prepare.load_split("train", view)) == (view / "train.bin").stat().st_size
    prepare.verify(view, splits=("train",))
    for split in prepare.MEASUREMENT_SPLITS:
        with pytest.raises(SystemExit) as exc:
            prepare.load_split(split, view)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: the {split} split is not available to training runs: it is the measurement")
        assert len(err.splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(prepare.HarnessError, match="missing data file"):
        prepare.verify(view)  # the evaluation's view: everything


@pytest.mark.timeout(30)
def test_an_old_format_data_dir_says_to_rebuild(data_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy(data_dir, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["format"] = 1
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SystemExit) as exc:
        prepare.load_split("train", d)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "has format 1 but this harness needs format 2 (it adds the out-of-distribution split ood.bin)" in err
    assert "python trainer/prepare.py --rebuild" in err
    with pytest.raises(prepare.HarnessError, match="needs format 2"):
        prepare.build("sympy", directory=d)


@pytest.mark.timeout(60)
def test_train_py_on_corrupt_data_exits_2_without_traceback(data_dir: Path, tmp_path: Path,
                                                            env: dict[str, str]) -> None:
    d = _copy(data_dir, tmp_path)
    raw = bytearray((d / "train.bin").read_bytes())
    raw[12345] ^= 0x01
    (d / "train.bin").write_bytes(bytes(raw))
    env["OVERNIGHT_DATA_DIR"] = str(d)
    r = run_py([str(TRAINER / "train.py")], env, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "sha256 mismatch" in r.stderr
    assert "--rebuild" in r.stderr


@pytest.mark.timeout(30)
def test_sympy_version_mismatch_is_refused(data_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy(data_dir, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["source_version"] = "0.0.1"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SystemExit) as exc:
        prepare.load_split("train", d)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "SymPy 0.0.1" in err and "--rebuild" in err


@pytest.mark.timeout(30)
def test_fineweb_from_local_jsonl_gz_and_txt(tmp_path: Path) -> None:
    src = tmp_path / "shards"
    (src / "sub").mkdir(parents=True)
    docs_a = [{"text": f"document {i} " + "lorem ipsum " * 50, "id": i} for i in range(40)]
    (src / "a.jsonl").write_text("\n".join(json.dumps(d) for d in docs_a) + "\n\n")
    with gzip.open(src / "sub" / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"text": f"gzipped ünïcode {i} " * 40}) + "\n")
    (src / "c.txt").write_text("plain text file\n" * 200)
    (src / "ignored.csv").write_text("not,a,shard\n")
    out = tmp_path / "fw"
    m = prepare.build("fineweb", source=str(src), directory=out)
    assert m["corpus"] == "fineweb" and m["n_source_files"] == 3
    expected = b"".join(d["text"].encode() + b"\n\n" for d in docs_a)
    expected += b"plain text file\n" * 200 + b"\n\n"  # a.jsonl, c.txt, sub/b.jsonl.gz (sorted)
    expected += b"".join((f"gzipped ünïcode {i} " * 40).encode() + b"\n\n" for i in range(30))
    total = sum(m["files"][f"{s}.bin"]["bytes"] for s in prepare.SPLITS)
    assert total == len(expected)
    # chunks are re-assembled in corpus order by interleaving the splits by the rule
    parts = {s: (out / f"{s}.bin").read_bytes() for s in prepare.SPLITS}
    pos = {s: 0 for s in prepare.SPLITS}
    rebuilt = b""
    for i, start in enumerate(range(0, len(expected), prepare.CHUNK_BYTES)):
        chunk = expected[start:start + prepare.CHUNK_BYTES]
        s = prepare.split_of(i, chunk)
        assert parts[s][pos[s]:pos[s] + len(chunk)] == chunk
        pos[s] += len(chunk)
        rebuilt += chunk
    assert rebuilt == expected
    prepare.verify(out)
    # max_bytes truncation
    small = prepare.build("fineweb", source=str(src / "c.txt"), directory=tmp_path / "s",
                          max_bytes=1000)
    assert sum(small["files"][f"{s}.bin"]["bytes"] for s in prepare.SPLITS) == 1000
    assert small["files"]["ood.bin"]["bytes"] == prepare.OOD_BYTES  # the same stdlib sample for every corpus
    assert prepare.hidden_sources(m) == [str(src)]


@pytest.mark.timeout(30)
def test_fineweb_parquet(tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.mkdir()
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (src / "x.parquet").write_bytes(b"PAR1")
        with pytest.raises(prepare.HarnessError, match="pyarrow"):
            prepare.build("fineweb", source=str(src), directory=tmp_path / "out")
        pytest.skip("pyarrow not installed: checked the clear error only")
    pq.write_table(pa.table({"text": ["hello parquet"] * 100}), src / "x.parquet")
    m = prepare.build("fineweb", source=str(src), directory=tmp_path / "out")
    assert sum(m["files"][f"{s}.bin"]["bytes"] for s in prepare.SPLITS) == len(b"hello parquet\n\n") * 100


@pytest.mark.timeout(30)
def test_fineweb_bad_source_errors(tmp_path: Path) -> None:
    with pytest.raises(prepare.HarnessError, match="no such file"):
        prepare.build("fineweb", source=str(tmp_path / "nope"), directory=tmp_path / "o")
    with pytest.raises(prepare.HarnessError, match="needs --source"):
        prepare.build("fineweb", directory=tmp_path / "o")
    (tmp_path / "bad.jsonl").write_text('{"nottext": 1}\n')
    with pytest.raises(prepare.HarnessError, match="'text' field"):
        prepare.build("fineweb", source=str(tmp_path / "bad.jsonl"), directory=tmp_path / "o2")
