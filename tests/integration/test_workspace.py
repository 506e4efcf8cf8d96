"""The loop's git side on real repositories: proposals are validated, the user's copy is never written."""

from collections.abc import Callable
from pathlib import Path

import pytest

from overnight.daemon.config import load_config
from overnight.daemon.workspace import Edit, InvalidProposal, Workspace, WorkspaceError, experiment_ref

from ..conftest import commit_all, git


def _patch(root: Path, old: str, new: str) -> str:
    """A real unified diff of train.py, made by git in a throwaway copy."""
    train = root / "trainer" / "train.py"
    original = train.read_text()
    train.write_text(original.replace(old, new, 1))
    diff = git(root, "diff", "--", "trainer/train.py") + "\n"
    train.write_text(original)
    return diff


@pytest.fixture
def ws(make_workspace: Callable[..., Path]) -> Workspace:
    root = make_workspace()
    w = Workspace(load_config(root))
    w.open("t1")
    return w


def test_open_makes_a_branch_and_worktree_and_leaves_the_user_copy_alone(ws: Workspace) -> None:
    root = ws.cfg.root
    before = git(root, "status", "--porcelain")
    assert (ws.wt_path / "trainer" / "train.py").is_file()
    assert git(root, "branch", "--list", "overnight/t1")
    assert git(root, "rev-parse", "HEAD") == ws.head()
    assert before == ""  # .overnight/ ignores itself


def test_a_new_session_adopts_uncommitted_edits_of_the_declared_files(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace()
    train = root / "trainer" / "train.py"
    train.write_text(train.read_text() + "\n# the user's own, uncommitted edit\n")
    w = Workspace(load_config(root))
    w.open("t2")
    assert "uncommitted edit" in (w.wt_path / "trainer" / "train.py").read_text()
    assert git(root, "status", "--porcelain") == " M trainer/train.py"  # still the user's, not committed by us


def test_a_patch_applies_and_commits_under_its_own_ref(ws: Workspace) -> None:
    parent = ws.head()
    changed = ws.apply(Edit(patch=_patch(ws.wt_path, "LR = 3e-3", "LR = 4e-3")))
    assert changed == ["trainer/train.py"]
    sha = ws.commit("#1: LR", changed)
    ws.set_ref(experiment_ref("t1", 1), sha)
    ws.reset_to(parent)
    assert ws.head() == parent
    assert git(ws.cfg.root, "rev-parse", "refs/overnight/t1/1") == sha
    assert "+LR = 4e-3" in ws.diff(parent, sha)


@pytest.mark.parametrize(
    ("make_edit", "message"),
    [
        (lambda root: Edit(patch="this is not a patch"), "malformed patch|changes nothing"),
        (lambda root: Edit(patch=_patch(root, "LR = 3e-3", "LR = 4e-3").replace("LR = 3e-3", "LR = 9e-9")), "does not apply"),
        (lambda root: Edit(files=(("trainer/prepare.py", "x = 1\n"),)), "frozen harness file"),
        (lambda root: Edit(files=(("setup.py", "x = 1\n"),)), "not an editable file"),
        (lambda root: Edit(patch=_patch(root, "LR = 3e-3", "LR = = 3e-3")), "syntax error"),
        (lambda root: Edit(files=(("trainer/train.py", (root / "trainer" / "train.py").read_text()),)), "changes nothing"),
    ],
)
def test_bad_proposals_are_refused_and_the_worktree_stays_clean(
    ws: Workspace, make_edit: Callable[[Path], Edit], message: str
) -> None:
    head = ws.head()
    with pytest.raises(InvalidProposal, match=message):
        ws.apply(make_edit(ws.wt_path))
    assert ws.head() == head
    assert git(ws.wt_path, "status", "--porcelain") == ""


def test_a_patch_touching_the_harness_is_refused(ws: Workspace) -> None:
    prep = ws.wt_path / "trainer" / "prepare.py"
    original = prep.read_text()
    prep.write_text(original + "\n# cheat\n")
    patch = git(ws.wt_path, "diff") + "\n"
    prep.write_text(original)
    with pytest.raises(InvalidProposal, match="frozen"):
        ws.apply(Edit(patch=patch))
    assert ws.changed_frozen(ws.frozen_hashes()) == []


def test_not_a_git_repository(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not a git repository"):
        Workspace(load_config(tmp_path))


def test_a_repository_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(WorkspaceError, match="no commits"):
        Workspace(load_config(tmp_path))


def test_missing_declared_files(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "README").write_text("x")
    commit_all(tmp_path)
    with pytest.raises(WorkspaceError, match="trainer/train.py is declared"):
        Workspace(load_config(tmp_path))


def test_the_adoption_is_in_the_branch_from_its_first_moment(make_workspace: Callable[..., Path]) -> None:
    # The branch is created already holding the user's edit: a kill between `worktree add` and a commit made
    # there could otherwise leave a session that measures the edit but records HEAD.
    root = make_workspace()
    train = root / "trainer" / "train.py"
    train.write_text(train.read_text() + "\n# edit before the session\n")
    (root / "trainer" / "train.py").chmod(0o755)
    w = Workspace(load_config(root))
    w.open("t3")
    assert "edit before the session" in git(root, "show", "overnight/t3:trainer/train.py")
    assert git(root, "log", "-1", "--format=%s", "overnight/t3") == "overnight: start from the working copy"
    assert git(root, "rev-parse", "overnight/t3~1") == git(root, "rev-parse", "HEAD")
    assert "100755" in git(root, "ls-tree", "overnight/t3", "trainer/train.py")
    assert w.dirty() == []


def test_git_locks_left_by_a_killed_loop_are_cleared_on_the_next_start(ws: Workspace) -> None:
    root = ws.cfg.root
    admin = Path(git(ws.wt_path, "rev-parse", "--absolute-git-dir"))
    common = root / ".git"
    left = [admin / "index.lock", admin / "HEAD.lock", common / "refs" / "heads" / "overnight" / "t1.lock"]
    (common / "refs" / "overnight" / "t1").mkdir(parents=True, exist_ok=True)
    left.append(common / "refs" / "overnight" / "t1" / "3.lock")
    user_lock = common / "index.lock"  # the user's own index: never ours to remove
    for lock in [*left, user_lock]:
        lock.write_text("")
    again = Workspace(load_config(root))
    again.open("t1")
    again.reset_to(again.head())  # would fail with "index.lock: File exists"
    again.set_ref(experiment_ref("t1", 3), again.head())
    assert not any(lock.exists() for lock in left)
    assert user_lock.exists()
    user_lock.unlink()


def test_a_worktree_add_killed_midway_is_redone(ws: Workspace) -> None:
    root = ws.cfg.root
    admin = Path(git(ws.wt_path, "rev-parse", "--absolute-git-dir"))
    # What a kill inside `git worktree add` leaves: the admin folder locked "initializing", no checkout.
    (admin / "locked").write_text("initializing")
    import shutil
    shutil.rmtree(ws.wt_path)
    again = Workspace(load_config(root))
    again.open("t1")
    assert (again.wt_path / "trainer" / "train.py").is_file()
    assert again.dirty() == []


def test_a_moved_workspace_keeps_its_session(ws: Workspace, tmp_path: Path) -> None:
    import shutil

    root = ws.cfg.root
    head = ws.head()
    moved = tmp_path / "elsewhere"
    shutil.move(str(root), str(moved))
    again = Workspace(load_config(moved))
    assert again.open("t1") == head  # the same branch, its worktree repaired in place
    again.reset_to(head)
    assert again.dirty() == []
