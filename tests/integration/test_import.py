"""`overnight import results.tsv`: an autoresearch log, made here as autoresearch makes it, becomes a session that
`results`, `plot`, `show`, `doctor` and the editor's per-line history read like the loop's own.

The repository is real git: a baseline on `autoresearch/test`, kept commits advancing it, discarded and crashed ones
`git reset` away — one of them collected by `git gc` as well, so its short hash no longer resolves.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git as gitpython
import pytest

from overnight.daemon import importer
from overnight.daemon.annotate import History
from overnight.daemon.cli import main
from overnight.daemon.journal import Journal, Run
from overnight.daemon.report import is_reported, is_sealed

from ..conftest import commit_all, git

BRANCH = "autoresearch/test"
TAG = "imported-autoresearch-test"
HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"

TRAIN = '''"""An autoresearch-style training script (never run here: the log says what it printed)."""
LEARNING_RATE = 0.02
WIDTH = 256
ACTIVATION = "relu"

print("val_bpb:", 1.0)
'''


@dataclass
class Log:
    root: Path
    tsv: Path
    sha: dict[str, str | None]  # row name → the full commit (None: collected by git gc)
    short: dict[str, str]

    @property
    def journal_path(self) -> Path:
        return self.root / ".overnight" / "journal.db"

    def lines(self) -> list[str]:
        return self.tsv.read_text().splitlines(keepends=True)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tsv.with_name(name)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path


def _edit(root: Path, old: str, new: str) -> None:
    train = root / "train.py"
    text = train.read_text()
    assert old in text, old
    train.write_text(text.replace(old, new))


@pytest.fixture
def log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Log:
    root = tmp_path / "autoresearch"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "prepare.py").write_text("TIME_BUDGET = 300\n")
    git(root, "init", "-q", "-b", "master")
    commit_all(root, "autoresearch")
    assert main(["init", "--autoresearch", str(root)]) == 0  # the workspace a user of both would have
    capsys.readouterr()
    git(root, "checkout", "-q", "-b", BRANCH)
    sha: dict[str, str | None] = {"baseline": git(root, "rev-parse", "HEAD")}

    def experiment(name: str, old: str, new: str, kept: bool) -> None:
        _edit(root, old, new)
        commit_all(root, name)
        sha[name] = git(root, "rev-parse", "HEAD")
        if not kept:
            git(root, "reset", "-q", "--hard", "HEAD~1")  # what autoresearch does with a discard or a crash

    experiment("lr", "LEARNING_RATE = 0.02", "LEARNING_RATE = 0.04", kept=True)
    experiment("gelu", 'ACTIVATION = "relu"', 'ACTIVATION = "gelu"', kept=False)
    # The discarded commit is collected: its short hash no longer names anything.
    git(root, "reflog", "expire", "--expire=now", "--all")
    git(root, "gc", "-q", "--prune=now")
    with pytest.raises(subprocess.CalledProcessError):
        git(root, "cat-file", "-e", f"{sha['gelu']}^{{commit}}")
    experiment("wide", "WIDTH = 256", "WIDTH = 1024", kept=False)
    experiment("width", "WIDTH = 256", "WIDTH = 384", kept=True)
    experiment("lr5", "LEARNING_RATE = 0.04", "LEARNING_RATE = 0.05", kept=False)
    short = {name: str(full)[:7] for name, full in sha.items()}
    sha["gelu"] = None
    rows = [
        ("baseline", "0.997900", "44.0", "keep", "baseline"),
        ("lr", "0.993200", "44.2", "keep", "increase LR to 0.04"),
        ("gelu", "1.005000", "44.0", "discard", 'switch to GeLU activation (a "smooth" ReLU)'),
        ("wide", "0.000000", "0.0", "crash", "double model width (OOM)"),
        ("width", "0.990100", "45.1", "keep", "width 384"),
        ("lr5", "0.991000", "45.1", "discard", "LR 0.05"),
    ]
    tsv = tmp_path / "results.tsv"
    tsv.write_text(HEADER + "".join(f"{short[name]}\t{val}\t{mem}\t{status}\t{desc}\n"
                                    for name, val, mem, status, desc in rows))
    return Log(root, tsv, sha, short)


def _run(log: Log, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["-C", str(log.root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_autoresearch_log_imports_and_every_view_reads_it(log: Log, capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    code, out, err = _run(log, capsys, "import", str(log.tsv), "--branch", BRANCH)
    assert code == 0, err
    assert (f"imported the baseline and 5 experiments (2 kept, 2 discarded, 1 crashed) into session {TAG}; "
            "1 commit no longer in the repository was imported without its diff") in out
    assert f"overnight results --tag {TAG}" in out and f"overnight plot --tag {TAG}" in out
    assert git(log.root, "status", "--porcelain") == ""  # .overnight/ keeps itself out of git status

    # autoresearch's own file comes back as it went in: commits, values to 6 decimals, memory, statuses.
    code, out, err = _run(log, capsys, "results", "--format", "tsv", "--tag", TAG)
    assert code == 0, err
    assert out == log.tsv.read_text()

    code, out, _ = _run(log, capsys, "results", "--format", "json", "--tag", TAG)
    table = {row["description"]: row for row in json.loads(out)}
    assert table["increase LR to 0.04"]["delta"] == pytest.approx(0.9932 - 0.9979)  # vs the baseline
    assert table["LR 0.05"]["delta"] == pytest.approx(0.9910 - 0.9901)  # vs the incumbent then, #5
    assert table["baseline"]["delta"] is None and table["double model width (OOM)"]["delta"] is None
    assert {row["runs"] for row in table.values()} == {1} and not any(row["sealed"] for row in table.values())

    code, out, _ = _run(log, capsys, "results", "--tag", TAG)
    assert code == 0 and "REPORTED val_bpb" in out and "UNSEALED" in out

    png = tmp_path / "progress.png"
    code, out, err = _run(log, capsys, "plot", "--tag", TAG, "-o", str(png))
    assert code == 0, err
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    with Journal(log.journal_path) as journal:
        session = journal.session(TAG)
        assert session is not None
        exps = {e.description: e for e in journal.experiments(TAG)}
        runs = {e.description: journal.runs(e.id) for e in exps.values()}
    assert is_reported(session) and not is_sealed(session)
    assert (session.branch, session.base_commit) == (BRANCH, log.sha["baseline"])
    assert session.config["imported_from"] == str(log.tsv)
    base, lr, gelu, wide = exps["baseline"], exps["increase LR to 0.04"], exps[
        'switch to GeLU activation (a "smooth" ReLU)'], exps["double model width (OOM)"]
    width, lr5 = exps["width 384"], exps["LR 0.05"]
    assert [e.kind for e in exps.values()] == ["baseline"] + ["experiment"] * 5
    assert [e.status for e in exps.values()] == ["keep", "keep", "discard", "crash", "keep", "discard"]
    assert {e.decided_by for e in exps.values()} == {"imported"}
    assert lr.decision_reason == "imported from results.tsv (autoresearch's own decision)"
    # Each stands on the incumbent of its time; the baseline on itself, as the loop's own baselines do.
    assert base.parent_commit == base.commit_sha == log.sha["baseline"] and base.diff == ""
    assert [lr.parent_commit, gelu.parent_commit, wide.parent_commit, width.parent_commit, lr5.parent_commit] == [
        log.sha["baseline"], log.sha["lr"], log.sha["lr"], log.sha["lr"], log.sha["width"]]
    assert (gelu.commit_sha, gelu.ref, gelu.diff, gelu.meta["short_commit"]) == (None, None, "", log.short["gelu"])
    assert lr5.commit_sha == log.sha["lr5"] and "+LEARNING_RATE = 0.05" in lr5.diff  # reset away, still in git
    assert wide.val_bpb is None and wide.error and runs["double model width (OOM)"][0].status == "crash"
    assert runs["width 384"][0].peak_mem_mb == pytest.approx(45.1 * 1024) and runs["width 384"][0].val_bpb == 0.9901
    assert runs["double model width (OOM)"][0].peak_mem_mb is None

    # Every commit git still has is kept from gc under its experiment's ref; the session branch is on the incumbent.
    for exp in (base, lr, wide, width, lr5):
        assert git(log.root, "rev-parse", f"refs/overnight/{TAG}/{exp.id}") == exp.commit_sha
    assert git(log.root, "rev-parse", f"overnight/{TAG}") == log.sha["width"]
    code, out, _ = _run(log, capsys, "doctor")
    assert f"session {TAG}: branch, refs and journal agree" in out

    code, out, err = _run(log, capsys, "show", str(lr.id))
    assert code == 0, err
    assert "-LEARNING_RATE = 0.02" in out and "+LEARNING_RATE = 0.04" in out
    assert "imported from results.tsv (autoresearch's own decision)" in out and "0.9979 → 0.9932" in out
    code, out, err = _run(log, capsys, "show", str(gelu.id))
    assert code == 0, err
    assert "switch to GeLU" in out and "ACTIVATION" not in out  # no diff: git no longer has the commit

    # The editor's per-line history: the lines of the incumbent's train.py, with the experiments that touched them.
    head = str(log.sha["width"])
    with gitpython.Repo(log.root) as repo:
        with Journal(log.journal_path) as journal:
            history = History(repo).lines(head, "train.py", journal.experiments(TAG))
    text = git(log.root, "show", f"{head}:train.py").splitlines()
    touched = {text[line]: {t.experiment_id for t in touches} for line, touches in history.items()}
    assert touched["LEARNING_RATE = 0.04"] == {lr.id, lr5.id}
    assert touched["WIDTH = 384"] == {wide.id, width.id}


def _nothing_written(log: Log, sessions: list[str]) -> None:
    if not sessions:
        assert not log.journal_path.exists()
    else:
        with Journal(log.journal_path) as journal:
            assert [s.tag for s in journal.sessions()] == sessions
            assert {e.tag for e in journal.experiments()} == set(sessions)
    refs = git(log.root, "for-each-ref", "--format=%(refname)", "refs/overnight/", "refs/heads/overnight/").split()
    assert {ref.split("/")[2 if ref.startswith("refs/overnight/") else 3] for ref in refs} == set(sessions)


def _field(line: str, column: int, value: str) -> str:
    fields = line.rstrip("\n").split("\t")
    fields[column] = value
    return "\t".join(fields) + "\n"


# (name, how the good file becomes the bad one, what the error says)
BAD: list[tuple[str, Callable[[list[str]], str | bytes], list[str]]] = [
    ("renamed column", lambda ls: ls[0].replace("memory_gb", "mem_gb") + "".join(ls[1:]),
     ["line 1:", "missing memory_gb", "unknown 'mem_gb'"]),
    ("missing column", lambda ls: "commit\tval_bpb\tstatus\tdescription\n" + "".join(ls[1:]),
     ["line 1:", "missing memory_gb"]),
    ("bad number on line 3", lambda ls: "".join(ls[:2]) + _field(ls[2], 1, "0.99x") + "".join(ls[3:]),
     ["line 3:", "val_bpb '0.99x' is not a number"]),
    ("unknown status", lambda ls: "".join(ls[:3]) + _field(ls[3], 3, "kept") + "".join(ls[4:]),
     ["line 4:", "status 'kept' is not one of keep, discard, crash"]),
    ("not UTF-8", lambda ls: "".join(ls[:4]).encode() + _field(ls[4], 4, "x").encode().replace(b"x", b"caf\xe9") +
     "".join(ls[5:]).encode(), ["line 5:", "not UTF-8"]),
    ("a field too many", lambda ls: "".join(ls[:5]) + ls[5].rstrip("\n") + "\textra\n" + "".join(ls[6:]),
     ["line 6:", "6 fields, expected 5"]),
    ("a crash with a value", lambda ls: "".join(ls[:4]) + _field(ls[4], 1, "0.995000") + "".join(ls[5:]),
     ["line 5:", "autoresearch writes 0.000000 for a crash"]),
    ("no baseline keep", lambda ls: ls[0] + _field(ls[1], 3, "discard") + "".join(ls[2:]),
     ["line 2:", "the first row is the baseline"]),
    ("header only", lambda ls: ls[0], ["line 1:", "no rows after the header"]),
    ("empty", lambda ls: "", ["line 1:", "the file is empty"]),
]


@pytest.mark.parametrize(("name", "make", "said"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_file_is_refused_naming_its_line_and_nothing_is_written(
        log: Log, capsys: pytest.CaptureFixture[str], name: str, make: Callable[[list[str]], str | bytes],
        said: list[str]) -> None:
    bad = log.write("bad.tsv", make(log.lines()))
    code, out, err = _run(log, capsys, "import", str(bad), "--branch", BRANCH)
    assert code == 1, out
    assert str(bad) in err and all(s in err for s in said), err
    assert "Traceback" not in err
    _nothing_written(log, [])


def test_a_kept_commit_off_the_branch_is_refused(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(log, capsys, "import", str(log.tsv), "--branch", BRANCH, "--tag", "first")[0] == 0
    # A commit on another branch, logged as kept: not this branch's log.
    git(log.root, "checkout", "-q", "-b", "side", str(log.sha["baseline"]))
    _edit(log.root, "WIDTH = 256", "WIDTH = 512")
    commit_all(log.root, "elsewhere")
    side = git(log.root, "rev-parse", "--short=7", "HEAD")
    git(log.root, "checkout", "-q", BRANCH)
    lines = log.lines()
    bad = log.write("side.tsv", "".join(lines[:5]) + lines[5].replace(log.short["width"], side) + "".join(lines[6:]))
    code, _, err = _run(log, capsys, "import", str(bad), "--branch", BRANCH)
    assert code == 1 and "line 6:" in err and f"the kept commit {side} is not on {BRANCH}" in err, err
    # A kept commit git no longer has cannot be on the branch either.
    gone = log.write("gone.tsv", "".join(lines[:2]) + _field(lines[2], 0, log.short["gelu"]) + "".join(lines[3:]))
    code, _, err = _run(log, capsys, "import", str(gone), "--branch", BRANCH)
    assert code == 1 and "line 3:" in err and f"the kept commit {log.short['gelu']} is not in" in err, err
    code, _, err = _run(log, capsys, "import", str(log.tsv), "--branch", "autoresearch/nope")
    assert code == 1 and "--branch autoresearch/nope: no such branch" in err, err
    _nothing_written(log, ["first"])


def test_an_existing_tag_is_refused(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    # Without --branch: the current branch names the session, and its tag.
    code, out, err = _run(log, capsys, "import", str(log.tsv))
    assert code == 0 and f"into session {TAG}" in out, err
    code, _, err = _run(log, capsys, "import", str(log.tsv))
    assert code == 1 and f"a session {TAG!r} exists already" in err and "--tag" in err, err
    code, _, err = _run(log, capsys, "import", str(log.tsv), "--tag", "no spaces please")
    assert code == 1 and "not a usable session tag" in err, err
    _nothing_written(log, [TAG])
    code, out, err = _run(log, capsys, "import", str(log.tsv), "--tag", "again")
    assert code == 0 and "into session again" in out, err
    with Journal(log.journal_path) as journal:
        assert [s.tag for s in journal.sessions()] == [TAG, "again"]
        assert len(journal.experiments("again")) == len(journal.experiments(TAG)) == 6


def test_a_write_that_fails_part_way_leaves_no_half_session(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = Journal.add_run

    def failing(self: Journal, run: Run) -> int:
        calls.append(run)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, run)

    monkeypatch.setattr(Journal, "add_run", failing)
    with Journal(log.journal_path) as journal:
        with pytest.raises(OSError):
            importer.import_tsv(journal, log.root, log.tsv, branch=None, tag=None)
        assert journal.sessions() == [] and journal.experiments() == []
    monkeypatch.undo()
    with Journal(log.journal_path) as journal:
        assert importer.import_tsv(journal, log.root, log.tsv, branch=None, tag=None).tag == "imported-autoresearch-test"
