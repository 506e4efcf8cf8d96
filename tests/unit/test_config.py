import re
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
        ("budget = -1", "budget must be a number from 0.1 to"),
        ("budget = 'soon'", "budget must be a number, got 'soon'"),
        ("budget = nan", "budget must be a number from"),
        ("budget = inf", "budget must be a number from"),
        ("budget = 1e9", "budget must be a number from"),
        ("grace = -100", "grace must be a number from"),
        ("memory_limit_gb = -1", "memory_limit_gb must be a number from"),
        ("workdir = '../../..'", "inside the workspace"),
        ("sandbox = 'docker'", 'sandbox must be "bwrap" (sealed runs) or "none" (unsealed)'),
        ("sandbox = false", "sandbox must be a string, got False"),
        ("network = 'yes'", "network must be true or false, got 'yes'"),
        ("network = 1", "network must be true or false, got 1"),
        ("alpha = 0.5", "alpha must be a number from"),
        ("max_runs = 1", "max_runs must be at least 2"),
        ("keep_sigma = 2.0", "keep_sigma is no longer a setting: the keep rule is a sequential t-test"),
        ("confirm_runs = 1", "confirm_runs is no longer a setting"),
        ("agent = 'gpt'", "agent must be one of"),
        ("baseline_runs = 1", "at least 2"),
        ("bogus = 3", "unknown key"),
        ("editable = ['trainer/train.py']\nfrozen = ['trainer/train.py']", "both editable and frozen"),
        ("editable = ['../outside.py']", "inside the workspace"),
        ("budget = ", "overnight.toml"),
        ("[sweep]\nwhat = 1", "unknown key(s) in [sweep]"),
        ("[claude]\nspending_cap_usd = '20'", "[claude] spending_cap_usd must be float"),
        ("[claude]\npipeline = 1", "[claude] pipeline must be bool"),
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


def test_the_templates_commented_claude_section_shows_the_defaults() -> None:
    import tomllib
    from dataclasses import fields

    from overnight.daemon.config import ClaudeConfig

    text = (Path(__file__).resolve().parents[2] / "overnight.toml").read_text()
    lines = text.split("# [claude]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    shown = tomllib.loads("\n".join(line[2:].split("  #")[0] for line in lines if line.startswith("# ")))
    defaults = ClaudeConfig()
    assert set(shown) == {f.name for f in fields(ClaudeConfig)}
    for key, value in shown.items():
        if key != "temperature":  # unset by default: the template shows a value one may set
            assert value == getattr(defaults, key), key


def test_the_rendered_file_documents_every_key_and_loads_as_the_defaults(tmp_path: Path) -> None:
    from dataclasses import fields

    from overnight.daemon import config_file
    from overnight.daemon.config import ClaudeConfig, Config, ExecutorConfig, SweepConfig

    documented = config_file.documented()
    assert documented[""] == {f.name for f in fields(Config)} - {"root", "sweep", "claude", "executor"}
    assert documented["sweep"] == {f.name for f in fields(SweepConfig)}
    assert documented["claude"] == {f.name for f in fields(ClaudeConfig)}
    assert documented["executor"] == {f.name for f in fields(ExecutorConfig)}
    (tmp_path / "overnight.toml").write_text(config_file.render())
    assert load_config(tmp_path) == Config(root=tmp_path.resolve())


def test_the_repositorys_config_is_the_rendered_defaults() -> None:
    """The checkout's own overnight.toml is what `overnight init` writes: regenerate it after changing a default
    (python -c "from overnight.daemon.config_file import render; print(render(), end='')" > overnight.toml)."""
    from overnight.daemon import config_file

    assert (Path(__file__).resolve().parents[2] / "overnight.toml").read_text() == config_file.render()


def test_the_autoresearch_preset_is_a_valid_reported_config(tmp_path: Path) -> None:
    from overnight.daemon import config_file

    (tmp_path / "prepare.py").write_text("")
    (tmp_path / "overnight.toml").write_text(config_file.render(**config_file.autoresearch(tmp_path)))
    cfg = load_config(tmp_path)
    assert (cfg.measure, cfg.metric, cfg.frozen, cfg.transfer_every) == ("reported", "val_bpb", ("prepare.py",), 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("measure = 'trust-me'", 'measure must be "harness"'),
        ("metric = 'accuracy'", "metric 'accuracy' needs measure = \"reported\""),
        ("measure = 'reported'\nmetric = 'val bpb'", "metric must be a name like val_bpb"),
        ("prepare = []", "prepare may be empty only with measure"),
        ("readable = ['/data']", "readable is for measure"),
        ("measure = 'reported'\nreadable = ['data']", "absolute path or one under ~/"),
        ("measure = 'reported'\nreadable = ['/a/../b']", "absolute path or one under ~/"),
        ("tensorboard = 1", "tensorboard must be true or false"),
    ],
)
def test_reported_mode_keys_get_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "overnight.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path)
