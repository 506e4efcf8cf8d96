"""Corpus building: deterministic splits, idempotence, manifest verification, fineweb input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import prepare
import pytest
from conftest import TRAINER, run_py


@pytest.mark.timeout(30)
def test_split_rule_is_deterministic_and_roughly_90_5_5(data_dir: Path) -> None:
    assert prepare.split_of(7, b"abc") == prepare.split_of(7, b"abc")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert manifest["corpus"] == "sympy" and manifest["source_version"] == "1.14.0"
    sizes = {s: manifest["files"][f"{s}.bin"]["bytes"] for s in prepare.SPLITS}
    total = sum(sizes.values())
    assert 0.85 < sizes["train"] / total < 0.95
    assert 0.03 < sizes["val"] / total < 0.07 and 0.03 < sizes["holdout"] / total < 0.07
    assert sizes["val"] > prepare.EVAL_BYTES + 1 and sizes["holdout"] > prepare.EVAL_BYTES + 1


@pytest.mark.timeout(30)
def test_rebuild_gives_identical_bytes_and_build_is_idempotent(data_dir: Path,
                                                               tmp_path: Path) -> None:
    again = prepare.build("sympy", directory=tmp_path / "again")
    first = json.loads((data_dir / "manifest.json").read_text())
    assert again["files"] == first["files"]
    mtime = (tmp_path / "again" / "train.bin").stat().st_mtime_ns
    prepare.build("sympy", directory=tmp_path / "again")  # verifies, rebuilds nothing
    assert (tmp_path / "again" / "train.bin").stat().st_mtime_ns == mtime


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
    with pytest.raises(SystemExit) as exc:
        prepare.load_split("train", d)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    expected = {"flip_byte": "sha256 mismatch", "truncate": "corrupt data file",
                "delete": "missing data file", "no_manifest": "no corpus"}[damage]
    assert expected in err and "prepare.py" in err
    if damage != "no_manifest":
        assert "--rebuild" in err
    if damage == "no_manifest":
        prepare.build("sympy", directory=d)  # nothing there: a plain build builds it
    else:
        with pytest.raises(prepare.HarnessError, match="--rebuild"):
            prepare.build("sympy", directory=d)  # damage is reported, never silently rebuilt
        prepare.build("sympy", directory=d, rebuild=True)
    assert len(prepare.load_split("val", d)) == val.stat().st_size


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
    assert sum(f["bytes"] for f in small["files"].values()) == 1000


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
    assert sum(f["bytes"] for f in m["files"].values()) == len(b"hello parquet\n\n") * 100


@pytest.mark.timeout(30)
def test_fineweb_bad_source_errors(tmp_path: Path) -> None:
    with pytest.raises(prepare.HarnessError, match="no such file"):
        prepare.build("fineweb", source=str(tmp_path / "nope"), directory=tmp_path / "o")
    with pytest.raises(prepare.HarnessError, match="needs --source"):
        prepare.build("fineweb", directory=tmp_path / "o")
    (tmp_path / "bad.jsonl").write_text('{"nottext": 1}\n')
    with pytest.raises(prepare.HarnessError, match="'text' field"):
        prepare.build("fineweb", source=str(tmp_path / "bad.jsonl"), directory=tmp_path / "o2")
