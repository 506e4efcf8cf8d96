"""Three-way text merge: the loop's kept changes, as hunks against the user's current version of a file.

Three versions of a file meet here: the *base* (the user's version the session last synced with:
its start, or the last time the user's own change was rebased onto), the *user's* text now (an
editor's live buffer, or the file on disk), and the *incumbent* (the session branch, carrying every
kept experiment). A three-way merge (merge3) of the three says, region by region:

- the loop changed it and the user did not → a pending hunk, anchored in the user's text;
- both made the same change → already accepted (by the user or an earlier accept);
- both changed it differently → the user's change wins: the hunk no longer applies;
- only the user changed it → not the loop's business.

A hunk's identity (its ``key``) is its content: the base text it replaces and the text it brings. It
survives the user typing elsewhere in the file, so decisions (reject, accept) stick to it.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import merge3


@dataclass(frozen=True)
class Region:
    """One region of the three-way comparison, with its line range in each version ([start, end))."""

    kind: str  # unchanged | user | loop | same | conflict
    base: tuple[int, int]
    user: tuple[int, int]
    loop: tuple[int, int]
    apart: bool = False  # split out of a merge3 conflict by _apart (checked by its callers, see changes())


@dataclass(frozen=True)
class Change:
    """A change the loop made that the user's text does not have (yet), placed in the user's text."""

    key: str
    user: tuple[int, int]  # the user's lines it replaces (empty: an insertion before ``user[0]``)
    loop: tuple[int, int]  # the incumbent's lines it brings
    old_text: str  # the user's text in that range now
    new_text: str
    applies: bool  # False when the user changed the same lines differently (a conflict)


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def regions(base: list[str], user: list[str], loop: list[str], apart: bool = True) -> Iterator[Region]:
    """merge3's sync regions, with the coordinates of all three versions (merge_regions drops some)."""
    iz = ia = ib = 0
    for zmatch, zend, amatch, aend, bmatch, bend in merge3.Merge3(base, user, loop).find_sync_regions():
        z, a, b = (iz, zmatch), (ia, amatch), (ib, bmatch)
        if zmatch > iz or amatch > ia or bmatch > ib:
            user_same = user[ia:amatch] == base[iz:zmatch]
            loop_same = loop[ib:bmatch] == base[iz:zmatch]
            if user_same and not loop_same:
                kind = "loop"
            elif loop_same and not user_same:
                kind = "user"
            elif user[ia:amatch] == loop[ib:bmatch]:
                kind = "same"
            else:
                kind = "conflict"
            refined = _apart(base, user, loop, z, a, b) if kind == "conflict" and apart else None
            if kind == "conflict" and zmatch - iz == amatch - ia == bmatch - ib:
                # Same-length blocks (merge3 lumps adjacent changes together): decide line by line, so the
                # user's edit of one line does not swallow the loop's change of the next.
                yield from _line_by_line(base, user, loop, iz, ia, ib, zmatch - iz)
            elif refined is not None:
                yield from refined
            else:
                yield Region(kind, z, a, b)
        if zend > zmatch:
            yield Region("unchanged", (zmatch, zend), (amatch, aend), (bmatch, bend))
        iz, ia, ib = zend, aend, bend


def _classify(base: list[str], user: list[str], loop: list[str]) -> str:
    if user == base:
        return "unchanged" if loop == base else "loop"
    if loop == base:
        return "user"
    return "same" if user == loop else "conflict"


def _line_by_line(base: list[str], user: list[str], loop: list[str], iz: int, ia: int, ib: int, n: int) -> Iterator[Region]:
    pending: Region | None = None
    for k in range(n):
        kind = _classify(base[iz + k:iz + k + 1], user[ia + k:ia + k + 1], loop[ib + k:ib + k + 1])
        if pending is not None and pending.kind == kind:
            pending = Region(kind, (pending.base[0], iz + k + 1), (pending.user[0], ia + k + 1), (pending.loop[0], ib + k + 1))
            continue
        if pending is not None:
            yield pending
        pending = Region(kind, (iz + k, iz + k + 1), (ia + k, ia + k + 1), (ib + k, ib + k + 1))
    if pending is not None:
        yield pending


def _apart(base: list[str], user: list[str], loop: list[str], z: tuple[int, int], a: tuple[int, int],
           b: tuple[int, int]) -> list[Region] | None:
    """A region merge3 calls a conflict, split into the user's and the loop's own changes when they touch different
    base lines: a line typed directly above (or below) a line the loop changed is not a conflict, and withdrawing
    the loop's change for it would make suggestions vanish as the user types. None when the changes really overlap
    (the same lines, or insertions at the same place)."""
    part = base[z[0]:z[1]]
    # Only where every line of the region is unique in its version: with repeated lines (blank lines, separators)
    # the two alignments can pair different copies, and a split would make changes that reappear after an accept.
    if any(len(set(text)) != len(text) for text in (part, user[a[0]:a[1]], loop[b[0]:b[1]])):
        return None

    def edits(other: list[str]) -> list[tuple[int, int, int, int]]:
        return [(i1, i2, j1, j2) for op, i1, i2, j1, j2
                in difflib.SequenceMatcher(a=part, b=other, autojunk=False).get_opcodes() if op != "equal"]

    ours, theirs = edits(user[a[0]:a[1]]), edits(loop[b[0]:b[1]])
    # Only lines the user added (typing next to the loop's change): an edit or a deletion of the user's own next to
    # it stays a conflict, where the user's text wins.
    if any(i1 != i2 for i1, i2, _, _ in ours):
        return None
    for at, _, _, _ in ours:
        for k1, k2, _, _ in theirs:
            # Both insert at one place (no order between them is right), or the user's lines land inside the change.
            if k1 == k2 == at or k1 < at < k2:
                return None
    # In base order; at one base line an insertion comes before a change that starts there.
    changes = sorted([("user", *e) for e in ours] + [("loop", *e) for e in theirs], key=lambda c: (c[1], c[2] > c[1]))
    out: list[Region] = []
    pz = pa = pb = 0  # positions within the region, in base, user and loop

    def unchanged(upto: int) -> None:
        nonlocal pz, pa, pb
        n = upto - pz
        if n > 0:
            out.append(Region("unchanged", (z[0] + pz, z[0] + upto), (a[0] + pa, a[0] + pa + n), (b[0] + pb, b[0] + pb + n),
                              apart=True))
            pz, pa, pb = upto, pa + n, pb + n

    for who, i1, i2, j1, j2 in changes:
        unchanged(i1)
        n = i2 - i1
        if who == "user":  # an insertion: no base line, none of the loop's
            if j1 != pa:
                return None  # not a consistent walk: leave it a conflict
            out.append(Region("user", (z[0] + i1, z[0] + i1), (a[0] + j1, a[0] + j2), (b[0] + pb, b[0] + pb), apart=True))
            pa = j2
        else:
            if j1 != pb:
                return None
            out.append(Region("loop", (z[0] + i1, z[0] + i2), (a[0] + pa, a[0] + pa + n), (b[0] + j1, b[0] + j2), apart=True))
            pa, pb = pa + n, j2
        pz = i2
    unchanged(z[1] - z[0])
    if (a[0] + pa, b[0] + pb) != (a[1], b[1]):
        return None
    return out


def hunk_key(base_text: str, new_text: str) -> str:
    return hashlib.sha1(f"{base_text}\0{new_text}".encode()).hexdigest()[:12]


def changes(base_text: str, user_text: str, loop_text: str) -> list[Change]:
    """The loop's changes the user's text lacks, in document order; conflicting ones marked.

    Where the user typed next to a change the loop made, merge3 sees one conflict; `_apart` splits it so the loop's
    change stays pending. With repeated lines the two alignments behind a split can disagree about which line is
    which, so a split is kept only when taking every pending change leaves none of the loop's changes pending
    under a new name; otherwise the file is compared as merge3 alone sees it (the user's text wins the region)."""
    split, was_split = _changes(base_text, user_text, loop_text, apart=True)
    if was_split:
        taken = apply(user_text, [c for c in split if c.applies])
        known = {c.key for c in split}
        # Whichever way the next look compares the files (split or not), nothing new may be pending.
        again = [*_changes(base_text, taken, loop_text, apart=True)[0], *_changes(base_text, taken, loop_text, apart=False)[0]]
        if any(c.applies and c.key not in known for c in again):
            return _changes(base_text, user_text, loop_text, apart=False)[0]
    return split


def _changes(base_text: str, user_text: str, loop_text: str, apart: bool) -> tuple[list[Change], bool]:
    """(the changes, whether a conflict was split apart to find them)."""
    base, user, loop = lines(base_text), lines(user_text), lines(loop_text)
    result: list[Change] = []
    seen: dict[str, int] = {}
    was_split = False
    for region in regions(base, user, loop, apart):
        was_split = was_split or region.apart
        if region.kind not in ("loop", "conflict"):
            continue
        base_part = "".join(base[region.base[0]:region.base[1]])
        new_text = "".join(loop[region.loop[0]:region.loop[1]])
        key = hunk_key(base_part, new_text)
        # The same edit twice in one file (rare) still needs two ids.
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}-{seen[key]}"
        result.append(Change(
            key=key, user=region.user, loop=region.loop,
            old_text="".join(user[region.user[0]:region.user[1]]), new_text=new_text,
            applies=region.kind == "loop",
        ))
    return result, was_split


def utf16_len(text: str) -> int:
    """LSP positions count UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _position(user_lines: list[str], line: int) -> tuple[int, int]:
    """The LSP position of the start of ``line``; past the last line, the end of the text."""
    if line < len(user_lines):
        return line, 0
    if not user_lines:
        return 0, 0
    last = user_lines[-1]
    if last.endswith(("\n", "\r")):
        return len(user_lines), 0
    return len(user_lines) - 1, utf16_len(last)


def text_edit(user_lines: list[str], change: Change) -> tuple[tuple[int, int], tuple[int, int], str]:
    """The LSP edit (start, end, new text) that applies ``change`` to the user's lines.

    Whole lines are replaced; an insertion after a last line that has no newline brings one."""
    start, end = change.user
    new_text = change.new_text
    if start >= len(user_lines) and user_lines and not user_lines[-1].endswith(("\n", "\r")):
        new_text = "\n" + new_text.removesuffix("\n")
    return _position(user_lines, start), _position(user_lines, end), new_text


def apply(text: str, chosen: list[Change]) -> str:
    """The user's text with the given changes applied (non-overlapping): exactly what the LSP edits do."""
    user = lines(text)
    offsets = [0]
    for line in user:
        offsets.append(offsets[-1] + len(line))
    result = text
    for change in sorted(chosen, key=lambda c: c.user[0], reverse=True):
        _, _, new_text = text_edit(user, change)
        start, end = change.user
        result = result[:offsets[min(start, len(user))]] + new_text + result[offsets[min(end, len(user))]:]
    return result


def merge(base_text: str, user_text: str, loop_text: str) -> str:
    """The user's text with every loop change that does not contradict it: the user wins conflicts.

    What the loop rebases onto when the user changed a file themselves: their change is authoritative,
    the loop's kept changes elsewhere in the file stay."""
    out = _merge(base_text, user_text, loop_text, apart=True)
    # As in changes(): a split that leaves loop changes pending in its own result is not trusted.
    if any(c.applies for c in changes(base_text, out, loop_text)):
        return _merge(base_text, user_text, loop_text, apart=False)
    return out


def _merge(base_text: str, user_text: str, loop_text: str, apart: bool) -> str:
    base, user, loop = lines(base_text), lines(user_text), lines(loop_text)
    out: list[str] = []
    for region in regions(base, user, loop, apart):
        if region.kind == "loop":
            out += loop[region.loop[0]:region.loop[1]]
        elif region.kind == "unchanged":
            out += base[region.base[0]:region.base[1]]
        else:  # user, same, conflict: the user's lines
            out += user[region.user[0]:region.user[1]]
    return "".join(out)
