"""What a model call costs: token usage per request, summed per experiment, priced in dollars.

Prices are USD per million tokens, from https://platform.claude.com/docs/en/about-claude/pricing
(5-minute cache writes: the cache_control the agent sets). A model missing from the table is priced
at its family's most expensive listed rate, so the spending cap errs on the safe side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float


PRICES: dict[str, Price] = {
    "claude-opus-5-5": Price(4.0, 20.0, 5.0, 0.20),
    "claude-opus-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-8": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-7": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": Price(15.0, 75.0, 18.75, 1.50),
    "claude-opus-4-0": Price(15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.50, 0.10),
    "claude-sonnet-5": Price(2.0, 10.0, 2.50, 0.20),
    "claude-sonnet-4-6": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-5": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-0": Price(3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": Price(1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.0, 1.0, 0.08),
}
_FAMILY_FALLBACK = {
    "opus": Price(15.0, 75.0, 18.75, 1.50),
    "sonnet": Price(3.0, 15.0, 3.75, 0.30),
    "haiku": Price(1.0, 5.0, 1.25, 0.10),
}
_UNKNOWN = Price(15.0, 75.0, 18.75, 1.50)


def price(model: str) -> Price:
    """The price of a model; dated snapshots (claude-sonnet-4-5-20250929) share their alias's price."""
    for name in sorted(PRICES, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return PRICES[name]
    return next((p for family, p in _FAMILY_FALLBACK.items() if family in model), _UNKNOWN)


@dataclass(frozen=True)
class Usage:
    """Tokens of one or more requests. ``input_tokens`` excludes the cached parts, as the API reports it."""

    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.output_tokens + other.output_tokens,
            self.requests + other.requests,
            self.cost_usd + other.cost_usd,
        )

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @property
    def cache_hit_ratio(self) -> float:
        """The share of prompt tokens read from the cache."""
        return self.cache_read_input_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> Usage:
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls(*(type(getattr(cls(), k))(raw.get(k, 0) or 0) for k in cls.__dataclass_fields__))
        except (TypeError, ValueError):
            return cls()


def usage_of(model: str, api_usage: Any) -> Usage:
    """One response's usage (the SDK's ``Usage`` object, or anything with the same attributes), priced."""
    def count(name: str) -> int:
        value = getattr(api_usage, name, 0)
        return int(value) if isinstance(value, int) else 0

    fresh, read, write, out = (count("input_tokens"), count("cache_read_input_tokens"),
                               count("cache_creation_input_tokens"), count("output_tokens"))
    p = price(model)
    dollars = (fresh * p.input + read * p.cache_read + write * p.cache_write + out * p.output) / 1e6
    return Usage(fresh, read, write, out, 1, dollars)


def session_cost(history: list[Any]) -> Usage:
    """The agent usage recorded in a session's experiments (their meta["usage"])."""
    total = Usage()
    for exp in history:
        meta = getattr(exp, "meta", None)
        if isinstance(meta, dict) and "usage" in meta:
            total = total + Usage.from_dict(meta["usage"])
    return total
