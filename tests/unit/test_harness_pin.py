"""The session's pinned copy of its frozen files (harness.pin): whole or absent, checked against the recorded hashes."""

import hashlib
from pathlib import Path

import pytest

from overnight.daemon import harness


def _hashes(sources: dict[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(content).hexdigest() for rel, content in sources.items()}


def test_pinned_files_are_read_only_copies_and_a_second_pin_reuses_them(tmp_path: Path) -> None:
    sources = {"trainer/prepare.py": b"print('harness')\n", "program.md": b"# rules\n"}
    target = harness.pin(tmp_path, "t", sources, _hashes(sources))
    assert (target / "trainer" / "prepare.py").read_bytes() == sources["trainer/prepare.py"]
    assert (target / "program.md").stat().st_mode & 0o222 == 0
    assert harness.pin(tmp_path, "t", sources, _hashes(sources)) == target
    assert not (tmp_path / "harness" / ".t.tmp").exists()


def test_a_source_that_differs_from_the_sessions_hash_is_refused(tmp_path: Path) -> None:
    sources = {"trainer/prepare.py": b"print('harness')\n"}
    with pytest.raises(harness.HarnessError, match="hash differs"):
        harness.pin(tmp_path, "t", {"trainer/prepare.py": b"print('changed')\n"}, _hashes(sources))
    assert not (tmp_path / "harness" / "t").exists()


def test_a_session_without_frozen_files_pins_an_empty_copy(tmp_path: Path) -> None:
    assert list(harness.pin(tmp_path, "t", {}, {}).iterdir()) == []

