"""Per-line history on a real repository: kept and discarded experiments, mapped onto an edited buffer."""

import time
from pathlib import Path

import git
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overnight.daemon.annotate import History, align, onto_buffer
from overnight.daemon.journal import Experiment, Journal, Ledger

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


def _session(tmp_path: Path, steps: list[tuple[str, int, str]]) -> tuple[git.Repo, list[Experiment], list[str]]:
    """A session branch built from (status, line, kind) steps: each experiment changes one line of the incumbent
    in place ("edit") or inserts one above it ("insert"); kept ones advance the branch, others are reset away.
    Returns the repo, the decided experiments and the branch head after each step."""
    repo = git.Repo.init(tmp_path)
    text = "".join(f"X{i} = {i}\n" for i in range(12))
    (tmp_path / "train.py").write_text(text)
    commit_all(tmp_path)
    exps: list[Experiment] = []
    heads: list[str] = []
    for i, (status, line, kind) in enumerate(steps, start=2):
        parent = repo.head.commit.hexsha
        lines = (tmp_path / "train.py").read_text().splitlines(keepends=True)
        at = line % len(lines)
        if kind == "edit":
            lines[at] = f"{lines[at].split(' = ')[0]} = {i * 100}\n"
        else:
            lines.insert(at, f"# note {i}\n")
        (tmp_path / "train.py").write_text("".join(lines))
        commit_all(tmp_path, f"#{i}")
        commit = repo.head.commit.hexsha
        if status != "keep":
            repo.git.reset("--hard", parent)
        exps.append(_exp(i, status, parent, commit, f"#{i} {kind} line {at}", 2.3))
        heads.append(repo.head.commit.hexsha)
    return repo, exps, heads


def test_the_persisted_ledger_advanced_decision_by_decision_is_the_history_computed_from_scratch(tmp_path: Path) -> None:
    steps = [("keep", 2, "edit"), ("discard", 5, "edit"), ("keep", 0, "insert"), ("crash", 7, "edit"),
             ("keep", 9, "edit"), ("discard", 3, "insert"), ("keep", 4, "insert"), ("discard", 2, "edit")]
    repo, exps, heads = _session(tmp_path, steps)
    with Journal(tmp_path / "journal.db") as journal:
        recorder = History(repo)
        for k, head in enumerate(heads):
            # What the loop does after each decision: the journal holds experiments up to this one.
            journal_exps = exps[:k + 1]
            ledger = recorder.advance(journal.line_history("t", "train.py"), head, "train.py", journal_exps)
            journal.set_line_history("t", "train.py", ledger)
        persisted = journal.line_history("t", "train.py")
    assert persisted is not None and persisted.head == heads[-1] and persisted.covered == {e.id for e in exps}
    scratch = History(repo).lines(heads[-1], "train.py", exps)
    assert History.touches(persisted, exps) == scratch
    assert sum(len(v) for v in scratch.values()) >= len(steps) - 1  # not vacuous: nearly every change left a mark


def _advanced_decision_by_decision(repo: git.Repo, exps: list[Experiment], heads: list[str]) -> Ledger:
    history = History(repo)
    ledger = None
    for k, head in enumerate(heads):
        ledger = history.advance(ledger, head, "train.py", exps[:k + 1])
    assert ledger is not None
    return ledger


# A fixed sample (derandomize) so CI is not a lottery; a random search of thousands of sessions ran clean
# before the sample was fixed (and found the case below, once).
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["keep", "discard", "crash"]), st.integers(0, 40),
                          st.sampled_from(["edit", "edit", "insert"])), min_size=1, max_size=8))
def test_advancing_after_every_decision_agrees_with_recomputing_for_any_session(
        tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, str]]) -> None:
    repo, exps, heads = _session(tmp_path_factory.mktemp("s"), steps)
    ledger = _advanced_decision_by_decision(repo, exps, heads)
    assert History.touches(ledger, exps) == History(repo).lines(heads[-1], "train.py", exps)


def test_a_line_edited_by_two_keeps_then_moved_by_a_third_carries_both_edits(tmp_path: Path) -> None:
    # #2 and #3 rewrite X0 in turn, #4 inserts a line above it. Aligning #2's version straight onto the head
    # loses X0 (its value and its position both changed); following the branch keep by keep does not.
    repo, exps, heads = _session(tmp_path, [("keep", 0, "edit"), ("keep", 0, "edit"), ("keep", 0, "insert")])
    scratch = History(repo).lines(heads[-1], "train.py", exps)
    assert [t.experiment_id for t in scratch[1]] == [3, 2]  # "X0 = 300": newest first
    assert [t.experiment_id for t in scratch[0]] == [4]  # the inserted note
    assert History.touches(_advanced_decision_by_decision(repo, exps, heads), exps) == scratch


def _reads(history: History) -> list[str]:
    """Every revision ``history`` asks git for from now on."""
    read: list[str] = []
    original = history.prefetch
    history.prefetch = lambda revs, rel: (read.extend(revs), original(revs, rel))[1]  # type: ignore[method-assign]
    return read


def test_a_daemon_starting_on_a_persisted_ledger_reads_only_what_it_does_not_cover(tmp_path: Path) -> None:
    repo, exps, heads = _session(tmp_path, [("keep", 1, "edit"), ("discard", 4, "edit"), ("keep", 6, "edit"),
                                            ("discard", 8, "edit")])
    # The loop persisted its ledger after the third decision; the fourth is in the journal, not in the ledger yet.
    persisted = History(repo).advance(None, heads[2], "train.py", exps[:3])
    fresh = History(repo)
    read = _reads(fresh)
    lines = fresh.cached_lines(heads[3], "train.py", lambda: exps, "stamp", lambda: persisted)
    assert lines == History(repo).lines(heads[3], "train.py", exps)
    assert set(read) <= {heads[3], exps[3].parent_commit, exps[3].commit_sha}
    # Up to date: nothing but the head.
    current = fresh.advance(persisted, heads[3], "train.py", exps)
    again = History(repo)
    read = _reads(again)
    assert again.cached_lines(heads[3], "train.py", lambda: exps, "stamp", lambda: current) == lines
    assert read == []


def test_a_ledger_on_a_head_git_no_longer_has_is_rebuilt_and_a_corrupt_row_is_ignored(tmp_path: Path) -> None:
    repo, exps, heads = _session(tmp_path, [("keep", 1, "edit"), ("discard", 4, "edit")])
    stale = Ledger("0" * 40, {0: [99]}, {99})
    rebuilt = History(repo).advance(stale, heads[-1], "train.py", exps)
    assert rebuilt.covered == {e.id for e in exps} and 99 not in {i for ids in rebuilt.lines.values() for i in ids}
    with Journal(tmp_path / "journal.db") as journal:
        journal.set_line_history("t", "train.py", rebuilt)
        assert journal.line_history("t", "train.py") == rebuilt
        with journal._tx() as db:
            db.execute("UPDATE line_history SET lines=? WHERE tag='t'", (b"\xc1not msgpack",))
        assert journal.line_history("t", "train.py") is None
        assert journal.line_history("t", "other.py") is None


def test_an_experiment_whose_versions_git_failed_to_read_is_not_covered_and_is_tried_again(tmp_path: Path) -> None:
    repo, exps, heads = _session(tmp_path, [("keep", 1, "edit"), ("discard", 4, "edit")])
    history = History(repo)
    history.version(heads[-1], "train.py")  # the head reads fine
    real = history.prefetch
    history.prefetch = lambda revs, rel: None  # type: ignore[method-assign]  # git fails: nothing is cached
    failed = history.advance(None, heads[-1], "train.py", exps)
    assert failed.covered == set() and failed.lines == {}
    history.prefetch = real  # type: ignore[method-assign]
    assert History.touches(history.advance(failed, heads[-1], "train.py", exps), exps) == \
        History(repo).lines(heads[-1], "train.py", exps) != {}
