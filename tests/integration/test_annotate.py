"""Per-line history on a real repository: kept and discarded experiments, mapped onto an edited buffer."""

import time
from pathlib import Path

import git

from overnight.daemon.annotate import History, align, onto_buffer
from overnight.daemon.journal import Experiment

from ..conftest import commit_all

BASE = "N_LAYER = 2\nN_EMBD = 96\nLR = 3e-3\n\ndef train():\n    pass\n"


def _exp(i: int, status: str, parent: str, commit: str, desc: str, val: float) -> Experiment:
    return Experiment(id=i, tag="t", kind="experiment", status=status, parent_commit=parent, commit_sha=commit,
                      ref=None, description=desc, hypothesis="", reasoning="", diff="diff --git a/train.py b/train.py",
                      agent="replay", meta={}, val_bpb=val, holdout_bpb=None, decided_by="keep rule",
                      decision_reason="", evidence={"incumbent_mean": 2.30}, error=None, attempts=1,
                      created=time.time(), finished=time.time())


def test_kept_and_discarded_experiments_land_on_the_lines_they_touched(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path)
    (tmp_path / "train.py").write_text(BASE)
    commit_all(tmp_path)
    base = repo.head.commit.hexsha
    # #2 kept: LR 3e-3 → 4e-3 (the branch advances).
    (tmp_path / "train.py").write_text(BASE.replace("LR = 3e-3", "LR = 4e-3"))
    commit_all(tmp_path, "#2")
    kept = repo.head.commit.hexsha
    # #3 discarded: N_LAYER 2 → 4, made on top of #2 and then reset away.
    (tmp_path / "train.py").write_text(BASE.replace("LR = 3e-3", "LR = 4e-3").replace("N_LAYER = 2", "N_LAYER = 4"))
    commit_all(tmp_path, "#3")
    discarded = repo.head.commit.hexsha
    repo.git.reset("--hard", kept)
    exps = [_exp(2, "keep", base, kept, "LR 3e-3 → 4e-3", 2.25), _exp(3, "discard", kept, discarded, "N_LAYER 2 → 4", 2.40)]

    lines = History(repo).lines(kept, "train.py", exps)
    assert [t.label for t in lines[2]] == ["#2 −0.050 keep"]
    assert [t.label for t in lines[0]] == ["#3 +0.100 discard"]
    assert 1 not in lines and 4 not in lines

    # The user has typed a comment at the top and changed LR again: the history follows the lines.
    buffer = ("# my notes\n" + BASE.replace("LR = 3e-3", "LR = 5e-3")).splitlines()
    moved = onto_buffer(lines, BASE.replace("LR = 3e-3", "LR = 4e-3").splitlines(), buffer)
    assert moved[3][0].experiment_id == 2 and moved[1][0].experiment_id == 3


def test_align_maps_survivors_and_in_place_edits_only() -> None:
    assert align(["a", "b", "c"], ["x", "a", "B", "c"]) == {0: 1, 1: 2, 2: 3}  # b edited in place
    assert align(["a", "b", "c"], ["a", "x", "y", "c"]) == {0: 0, 2: 3}  # b replaced by two lines: no line of its own


def test_versions_read_in_one_batch_are_the_files_lines(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path)
    (tmp_path / "other.txt").write_text("x\n")
    commit_all(tmp_path)
    before = repo.head.commit.hexsha  # train.py does not exist yet
    texts = ["a = 1\nb = 2\n", "a = 1\n# é ünïcode → ok\nb = 3", "", "\n\nblank lines\n\n"]
    revs = []
    for i, text in enumerate(texts):
        (tmp_path / "train.py").write_text(text)
        commit_all(tmp_path, f"v{i}")
        revs.append(repo.head.commit.hexsha)
    history = History(repo)
    history.prefetch([before, *revs, revs[0], "0" * 40], "train.py")
    assert history.version(before, "train.py") is None
    assert history.version("0" * 40, "train.py") is None
    for rev, text in zip(revs, texts, strict=True):
        # As an editor's buffer splits them: trailing blank lines included (gitpython's show strips one).
        assert history.version(rev, "train.py") == text.splitlines()
    assert history.version(revs[0], "other.txt") == ["x"]  # another file: read on demand
