"""The generated files are what spec.py produces, and the generator refuses a spec or example that is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from overnight.protocol import examples, generate, spec


def test_generated_files_match_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    code = generate.main(["--check"])
    assert code == 0, "generated files drifted from spec.py (run python -m overnight.protocol.generate):\n" + (
        capsys.readouterr().out
    )


def test_check_reports_a_drifted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "protocol.ts"
    stale.write_text("// hand-edited\n", encoding="utf-8")
    monkeypatch.setattr(generate, "TS_PATH", stale)
    assert generate.main(["--check"]) == 1
    assert "differs" in capsys.readouterr().out
    assert stale.read_text(encoding="utf-8") == "// hand-edited\n"  # --check writes nothing


def test_an_example_that_does_not_match_the_spec_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [*examples.EXAMPLES, {"method": "overnight/stop", "params": {"when": "later"}, "result": {}}]
    monkeypatch.setattr(examples, "EXAMPLES", bad)
    with pytest.raises(generate.SpecError, match="not a StopWhen"):
        generate.valid_fixtures(generate.Model())


def test_a_method_without_an_example_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(examples, "EXAMPLES", [e for e in examples.EXAMPLES if e["method"] != "overnight/resume"])
    with pytest.raises(generate.SpecError, match="overnight/resume"):
        generate.valid_fixtures(generate.Model())


def test_an_unknown_field_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = spec.Struct("Broken", "", (spec.Field("x", "Nowhere[]", ""),))
    monkeypatch.setattr(spec, "STRUCTS", (*spec.STRUCTS, broken))
    with pytest.raises(generate.SpecError, match="unknown type Nowhere"):
        generate.Model()


def test_type_expressions_parse() -> None:
    P, R, A, T = generate.Prim, generate.Ref, generate.Array, generate.Tuple
    assert generate.parse_type("[integer, number, number][]") == A(T((P("integer"), P("number"), P("number"))))
    assert generate.parse_type("Status[]") == A(R("Status"))
    with pytest.raises(generate.SpecError):
        generate.parse_type("[integer")


def test_generated_code_is_lint_clean() -> None:
    root = Path(generate.__file__).resolve().parent
    out = subprocess.run([sys.executable, "-m", "ruff", "check", str(root)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
