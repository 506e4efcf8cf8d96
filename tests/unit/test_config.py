from pathlib import Path

import pytest

from overnight.daemon.config import ConfigError, load_config


def test_defaults_point_at_the_repository_itself(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.editable == ("trainer/train.py",)
    assert cfg.frozen == ("trainer/prepare.py",)
    assert cfg.program == "program.md"
    assert cfg.agent == "sweep"
    assert cfg.journal_path == tmp_path.resolve() / ".overnight" / "journal.db"


def test_the_repositorys_own_config_loads() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2])
    assert cfg.budget == 60.0 and cfg.baseline_runs == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("budget = -1", "budget must be positive"),
        ("budget = 'soon'", "budget must be float"),
        ("agent = 'gpt'", "agent must be one of"),
        ("baseline_runs = 1", "at least 2"),
        ("bogus = 3", "unknown key"),
        ("editable = ['trainer/train.py']\nfrozen = ['trainer/train.py']", "both editable and frozen"),
        ("editable = ['../outside.py']", "inside the workspace"),
        ("budget = ", "overnight.toml"),
        ("[sweep]\nwhat = 1", "unknown key(s) in [sweep]"),
    ],
)
def test_bad_config_gets_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "overnight.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        load_config(tmp_path)


def test_overrides_are_validated(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.with_overrides(budget=5.0, agent=None).budget == 5.0
    with pytest.raises(ConfigError):
        cfg.with_overrides(budget=0.0)
