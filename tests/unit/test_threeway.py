"""The three-way merge behind suggestions: anchoring the loop's changes in the user's text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overnight.daemon.threeway import apply, changes, lines, merge, text_edit

BASE = "import torch\nLR = 1e-3\nN_LAYER = 4\nN_HEAD = 4\n\ndef main():\n    pass\n"


def test_loop_change_is_anchored_after_the_user_typed_above_it() -> None:
    loop = BASE.replace("N_LAYER = 4", "N_LAYER = 6")
    user = "# my notes\n# more notes\n" + BASE
    [change] = changes(BASE, user, loop)
    assert change.applies and change.user == (4, 5) and change.old_text == "N_LAYER = 4\n"
    assert change.new_text == "N_LAYER = 6\n"
    assert apply(user, [change]) == "# my notes\n# more notes\n" + loop


def test_user_already_has_the_change_nothing_pending() -> None:
    loop = BASE.replace("LR = 1e-3", "LR = 3e-3")
    assert changes(BASE, loop, loop) == []


def test_user_changed_the_same_line_differently_is_a_conflict() -> None:
    loop = BASE.replace("LR = 1e-3", "LR = 3e-3")
    user = BASE.replace("LR = 1e-3", "LR = 5e-4")
    [change] = changes(BASE, user, loop)
    assert not change.applies and change.old_text == "LR = 5e-4\n"


def test_key_is_stable_while_the_user_edits_elsewhere() -> None:
    loop = BASE.replace("N_HEAD = 4", "N_HEAD = 8")
    before = changes(BASE, BASE, loop)[0].key
    after = changes(BASE, BASE.replace("def main():", "def main():  # entry"), loop)[0].key
    assert before == after


def test_insertion_after_a_last_line_without_newline() -> None:
    base = "a = 1\nb = 2"
    loop = "a = 1\nb = 2\nc = 3\n"
    [change] = changes(base, base, loop)
    start, end, new_text = text_edit(lines(base), change)
    assert apply(base, [change]).startswith("a = 1\nb = 2\nc = 3")
    assert start == end or new_text.endswith("c = 3\n")


_line = st.sampled_from(["a\n", "b\n", "c\n", "d\n", "LR = 1\n", "x = 2\n", "\n"])
_text = st.lists(_line, max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(base=_text, loop=_text, user=_text)
def test_accepting_everything_leaves_nothing_pending(base: str, loop: str, user: str) -> None:
    pending = [c for c in changes(base, user, loop) if c.applies]
    merged = apply(user, pending)
    # With repeated lines the alignment is ambiguous, so an inserted duplicate can show again; it has
    # the same content key, and the accept recorded under that key hides it (journal hunk_decisions).
    accepted = {c.key for c in pending}
    assert not [c for c in changes(base, merged, loop) if c.applies and c.key not in accepted]


@settings(max_examples=300, deadline=None)
@given(base=_text, loop=_text)
def test_an_untouched_user_copy_accepting_everything_gets_the_loops_version(base: str, loop: str) -> None:
    assert apply(base, changes(base, base, loop)) == loop


def test_merge_keeps_the_loops_changes_and_lets_the_user_win_conflicts() -> None:
    loop = BASE.replace("N_LAYER = 4", "N_LAYER = 6").replace("LR = 1e-3", "LR = 3e-3")
    user = BASE.replace("LR = 1e-3", "LR = 5e-4") + "# mine\n"
    assert merge(BASE, user, loop) == BASE.replace("LR = 1e-3", "LR = 5e-4").replace("N_LAYER = 4", "N_LAYER = 6") + "# mine\n"


@settings(max_examples=200, deadline=None)
@given(base=_text, loop=_text, user=_text)
def test_merge_with_an_unchanged_side_is_the_other_side(base: str, loop: str, user: str) -> None:
    assert merge(base, base, loop) == loop
    assert merge(base, user, base) == user
