"""Protocol tests: plain data and in-process pygls, no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import overnight.protocol

FIXTURES = Path(overnight.protocol.__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def corpus_dir() -> None:
    """Overrides tests/conftest.py's autouse corpus build: nothing here trains, so nothing needs the corpus."""


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))
