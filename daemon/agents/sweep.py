"""The no-LLM agent: a coordinate search over the constants in train.py's config block.

It reads the plain ``NAME = <number>`` assignments at the top of the editable script (before the
first function or class), and proposes one change at a time: multiplicative steps for rates and
sizes, neighbouring values for small integers, coarse steps first and finer ones once the coarse
ones are exhausted, then pairs. Directions that were kept before are tried first; a full setting
that was already tried (from any incumbent) is never tried again. It is an honest baseline for LLM
agents, and it is what runs out of the box without an API key.

Its hypotheses for the queue (ideas.py) are its coordinates: "raising LR", "lowering N_LAYER", grouped into
directions by the constant's name (optimizer, model size, batch and context, ...). It draws only coordinates the
queue allows — a vetoed one or a closed direction is never stepped — with pinned directions first and otherwise the
queue's order. A human's idea it can carry out is one that names a setting: ``LR = 0.002``.
"""

from __future__ import annotations

import ast
import itertools
import random
import re
from dataclasses import dataclass

from ..ideas import Draft, Idea
from ..workspace import Edit
from .base import Agent, Context, Proposal

Config = dict[str, int | float]

# Step factors per level: coarse first; finer levels only when the coarser are exhausted.
_FLOAT_FACTORS = ((2.0, 0.5), (1.5, 2 / 3), (1.25, 0.8))
_SIZE_FACTORS = ((2.0, 0.5), (1.5, 0.75), (1.25, 0.875))
# Integers below this are counts (layers, heads): neighbouring values, not factors.
_SMALL_INT = 8


@dataclass(frozen=True)
class Constant:
    name: str
    value: int | float
    line: int  # 1-based
    col: int
    end_col: int


@dataclass(frozen=True)
class Move:
    changes: tuple[tuple[str, int | float], ...]
    level: int
    score: float
    idea_id: int | None = None  # the queue entry it carries out (a human's setting)


# Directions of the queue, by what a constant's name says it is (the first that matches).
_DIRECTIONS = (
    ("optimizer", ("LR", "LEARNING_RATE", "BETA", "WEIGHT_DECAY", "MOMENTUM", "EPS", "GRAD_CLIP", "WARMUP")),
    ("model size", ("LAYER", "EMBD", "HEAD", "MLP", "DEPTH", "WIDTH", "DIM", "HIDDEN")),
    ("batch and context", ("BATCH", "SEQ", "CONTEXT", "BLOCK", "TOKENS")),
    ("regularization", ("DROPOUT",)),
)
# A human's idea the sweep can carry out: a constant and the value to set (``LR = 0.002``, ``LR -> 2e-3``).
_SETTING = re.compile(r"\b([A-Z][A-Z0-9_]*)\s*(?:=|->|→)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\b")


def direction_of(name: str) -> str:
    parts = set(name.split("_"))
    for direction, words in _DIRECTIONS:
        if any(w in parts or (len(w) > 3 and w in name) for w in words):
            return direction
    return "other constants"


def idea_key(name: str, up: bool) -> str:
    """The sweep's own name for a coordinate in the queue: one entry per constant and direction of change."""
    return f"sweep:{name}:{'up' if up else 'down'}"


def config_block(source: str) -> list[Constant]:
    """The tunable constants: top-level ``NAME = number`` before the first def or class."""
    tree = ast.parse(source)
    found: list[Constant] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            break
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        value = _literal(node.value)
        if name.isupper() and value is not None and node.value.end_lineno == node.value.lineno:
            assert node.value.end_col_offset is not None
            found.append(Constant(name, value, node.value.lineno, node.value.col_offset, node.value.end_col_offset))
    return found


def _literal(node: ast.expr) -> int | float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    return None


def format_value(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    text = f"{value:.3g}"
    return text if any(c in text for c in ".en") else text + ".0"


def rewrite(source: str, constants: list[Constant], changes: dict[str, int | float]) -> str:
    lines = source.splitlines(keepends=True)
    for const in constants:
        if const.name in changes:
            line = lines[const.line - 1]
            lines[const.line - 1] = line[: const.col] + format_value(changes[const.name]) + line[const.end_col :]
    return "".join(lines)


def _steps(value: int | float, level: int) -> list[int | float]:
    """Candidate new values for one constant at one level of coarseness, as they will be written."""
    return [v if isinstance(v, int) else float(format_value(v)) for v in _raw_steps(value, level)]


def _raw_steps(value: int | float, level: int) -> list[int | float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        if abs(value) < _SMALL_INT:
            return [v for v in (value + level, value - level) if v >= 1] if level <= 2 else []
        up, down = _SIZE_FACTORS[level - 1]
        step = 8 if value % 8 == 0 else 1
        out = {max(step, round(value * f / step) * step) for f in (up, down)}
        return sorted(v for v in out if v != value)
    if value == 0.0:
        return [(0.1, 0.01, 0.03)[level - 1]]
    up, down = _FLOAT_FACTORS[level - 1]
    if 0.5 <= value < 1.0:
        # Momentum-like constants live near 1: step the distance to 1 instead, so they stay below it.
        return [1 - (1 - value) * down, 1 - (1 - value) * up]
    return [value * up, value * down]


def _key(config: Config) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, round(float(v), 12)) for k, v in config.items()))


class SweepAgent(Agent):
    name = "sweep"

    def __init__(self, exclude: tuple[str, ...] = (), seed: int = 0) -> None:
        super().__init__()
        self.exclude = set(exclude)
        self.seed = seed

    def hypothesize(self, ctx: Context) -> list[Draft]:
        """Every coordinate it may step, as queue entries, in a seeded order (the human may reorder them)."""
        path = next(iter(ctx.files))
        constants = [c for c in config_block(ctx.files[path]) if c.name not in self.exclude]
        drafts = [Draft(direction=direction_of(c.name), key=idea_key(c.name, up),
                        text=f"{'raising' if up else 'lowering'} {c.name} (now {format_value(c.value)}) improves the "
                             "metric within the fixed budget")
                  for c in constants if not isinstance(c.value, bool) for up in (True, False)]
        random.Random(self.seed).shuffle(drafts)
        return drafts

    def propose(self, ctx: Context) -> Proposal | None:
        path = next(iter(ctx.files))
        source = ctx.files[path]
        constants = [c for c in config_block(source) if c.name not in self.exclude]
        if not constants:
            return None
        current: Config = {c.name: c.value for c in constants}
        tried = {_key(current)}
        for exp in ctx.history:
            if isinstance(exp.meta.get("config"), dict):
                tried.add(_key({k: v for k, v in exp.meta["config"].items() if k in current}))
        scores = self._direction_scores(ctx)
        if ctx.ideas is None:
            move = self._next_move(current, tried, scores, len(ctx.history))
        else:
            move = self._setting_move(current, tried, ctx.ideas) or self._queued_move(current, tried, scores, ctx)
        if move is None:
            return None
        changes = dict(move.changes)
        new_source = rewrite(source, constants, changes)
        parts = []
        for name, new in move.changes:
            old = current[name]
            scaled = old and not (isinstance(old, int) and abs(old) < _SMALL_INT) and not 0.5 <= old < 1.0
            ratio = f" (×{new / old:.3g})" if scaled else ""
            parts.append(f"{name} {format_value(old)} → {format_value(new)}{ratio}")
        directions = {name: (1 if new > current[name] else -1) for name, new in move.changes}
        first, first_up = move.changes[0][0], move.changes[0][1] > current[move.changes[0][0]]
        return Proposal(
            description="; ".join(parts),
            edit=Edit(files=((path, new_source),)),
            hypothesis=" and ".join(
                f"{'raising' if d > 0 else 'lowering'} {name}" for name, d in directions.items()
            ) + " improves the metric within the fixed budget",
            reasoning=(
                f"coordinate search, level {move.level} steps"
                + (f"; this direction scored {move.score:+.1f} from past decisions" if move.score else "")
            ),
            meta={"config": {**current, **changes}, "directions": directions, "level": move.level},
            idea_id=move.idea_id,
            # A coordinate step tests its queue entry (a pair: the first of its steps).
            idea_key=idea_key(first, first_up) if move.idea_id is None else None,
        )

    @staticmethod
    def _setting_move(current: Config, tried: set[tuple[tuple[str, float], ...]], drawable: list[Idea]) -> Move | None:
        """The first drawable human idea that names a setting of a constant, not tried yet: carried out as said."""
        for idea in drawable:
            found = _SETTING.search(idea.text) if idea.source == "human" else None
            if found is None or found.group(1) not in current:
                continue
            old = current[found.group(1)]
            value: int | float = float(found.group(2))
            if isinstance(old, int) and float(value).is_integer():
                value = int(value)
            if value != old and _key({**current, found.group(1): value}) not in tried:
                return Move(((found.group(1), value),), 0, 0.0, idea.id)
        return None

    def _queued_move(self, current: Config, tried: set[tuple[tuple[str, float], ...]],
                     scores: dict[tuple[str, int], float], ctx: Context) -> Move | None:
        """The next coordinate step the queue allows: coarse levels first; within a level pinned directions, then
        the directions past keeps favour, then the queue's order. Pairs only of allowed steps."""
        assert ctx.ideas is not None
        order = {i.key: n for n, i in enumerate(ctx.ideas) if i.key}
        pinned = {i.key for i in ctx.ideas if i.key and i.direction in ctx.pinned}

        def allowed(name: str, new: int | float) -> str | None:
            key = idea_key(name, new > current[name])
            return key if key in order else None

        for level in (1, 2, 3):
            moves = []
            for name, value in current.items():
                for new in _steps(value, level):
                    key = allowed(name, new)
                    if key is None or _key({**current, name: new}) in tried:
                        continue
                    score = scores.get((name, 1 if new > value else -1), 0.0)
                    moves.append(((key not in pinned, -score, order[key]), Move(((name, new),), level, score)))
            if moves:
                return min(moves, key=lambda m: m[0])[1]
        singles = [(name, new) for name, value in current.items() for new in _steps(value, 1) if allowed(name, new)]
        for pair in sorted(itertools.combinations(singles, 2), key=lambda p: order[allowed(*p[0]) or ""]):
            if pair[0][0] != pair[1][0] and _key({**current, **dict(pair)}) not in tried:
                return Move(tuple(pair), 4, 0.0)
        return None

    @staticmethod
    def _direction_scores(ctx: Context) -> dict[tuple[str, int], float]:
        """What past decisions say about moving a constant up or down."""
        weight = {"keep": 1.0, "discard": -0.25, "crash": -1.0, "timeout": -1.0}
        scores: dict[tuple[str, int], float] = {}
        for exp in ctx.history:
            directions = exp.meta.get("directions")
            if not isinstance(directions, dict) or exp.status not in weight:
                continue
            for name, d in directions.items():
                scores[(name, int(d))] = scores.get((name, int(d)), 0.0) + weight[exp.status]
        return scores

    def _next_move(
        self, current: Config, tried: set[tuple[tuple[str, float], ...]],
        scores: dict[tuple[str, int], float], salt: int,
    ) -> Move | None:
        rng = random.Random(self.seed * 1_000_003 + salt)
        for level in (1, 2, 3):
            moves = []
            for name, value in current.items():
                for new in _steps(value, level):
                    if _key({**current, name: new}) in tried:
                        continue
                    score = scores.get((name, 1 if new > value else -1), 0.0)
                    moves.append((-score, rng.random(), Move(((name, new),), level, score)))
            if moves:
                return min(moves, key=lambda m: (m[0], m[1]))[2]
        # Every single step is used up: combine two coarse steps.
        singles = [(name, new) for name, value in current.items() for new in _steps(value, 1)]
        pairs = [p for p in itertools.combinations(singles, 2) if p[0][0] != p[1][0]]
        rng.shuffle(pairs)
        for pair in pairs:
            if _key({**current, **dict(pair)}) not in tried:
                return Move(tuple(pair), 4, 0.0)
        return None
