"""Pipelining: the agent prepares proposal N+1 while experiment N trains, so the GPU does not wait.

The loop calls ``prefetch(ctx)`` once experiment N is committed, with a context on N's parent (the
incumbent, the likely state after N: most experiments are discarded) and a history that shows N as
running. The next ``propose(ctx)`` takes the prepared proposal when the files are still the ones it
was written for; when N was kept, the prepared edits are rebased onto the new incumbent (the inner
agent's ``rebase``), and when they no longer apply, or the human spoke in the meantime, the model is
asked afresh (the discarded answer's cost is carried onto the fresh one).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from .base import Agent, Context, Proposal
from .cost import Usage

log = logging.getLogger("overnight.agent")


@dataclass
class _Pending:
    ctx: Context
    done: threading.Event = field(default_factory=threading.Event)
    proposal: Proposal | None = None
    error: BaseException | None = None


class PipelinedAgent:
    def __init__(self, inner: Agent) -> None:
        self.inner = inner
        self.name = inner.name
        self._pending: _Pending | None = None
        self.stats = {"prefetched": 0, "used": 0, "rebased": 0, "reasked": 0}

    # The inner agent's optional hooks, passed through (the loop sets them on this wrapper).
    @property
    def on_thought(self) -> Any:
        return getattr(self.inner, "on_thought", None)

    @on_thought.setter
    def on_thought(self, fn: Any) -> None:
        self._forward("on_thought", fn)

    @property
    def stop_event(self) -> Any:
        return getattr(self.inner, "stop_event", None)

    @stop_event.setter
    def stop_event(self, event: Any) -> None:
        self._forward("stop_event", event)

    def _forward(self, hook: str, value: Any) -> None:
        if hasattr(self.inner, hook):
            setattr(self.inner, hook, value)

    def probe(self) -> bool:
        probe = getattr(self.inner, "probe", None)
        return bool(probe()) if probe is not None else True

    def prefetch(self, ctx: Context) -> None:
        if self._pending is not None:
            return  # one in flight already; never two requests at once
        pending = _Pending(ctx)

        def work() -> None:
            try:
                pending.proposal = self.inner.propose(ctx)
            except BaseException as exc:  # kept for propose(), which asks afresh and meets the error itself
                pending.error = exc
                log.info("prefetch failed: %r", exc)
            finally:
                pending.done.set()

        self._pending = pending
        self.stats["prefetched"] += 1
        threading.Thread(target=work, name="overnight-prefetch", daemon=True).start()

    def propose(self, ctx: Context) -> Proposal | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return self.inner.propose(ctx)
        pending.done.wait()
        prepared = pending.proposal
        if prepared is None:
            return self.inner.propose(ctx)
        if len(ctx.feedback) != len(pending.ctx.feedback):
            why = "the human's feedback changed while it was prepared"
        elif ctx.files == pending.ctx.files:
            self.stats["used"] += 1
            return replace(prepared, meta={**prepared.meta, "pipelined": "prefetched"})
        else:
            rebase = getattr(self.inner, "rebase", None)
            rebased = rebase(prepared, ctx) if rebase is not None else None
            if isinstance(rebased, Proposal):
                self.stats["rebased"] += 1
                return rebased
            why = "its edits no longer apply to the new incumbent"
        log.info("prepared proposal %r dropped: %s; asking afresh", prepared.description, why)
        self.stats["reasked"] += 1
        fresh = self.inner.propose(ctx)
        if fresh is None or "usage" not in prepared.meta:
            return fresh
        spent = Usage.from_dict(fresh.meta.get("usage")) + Usage.from_dict(prepared.meta["usage"])
        return replace(fresh, meta={**fresh.meta, "usage": spent.as_dict(), "pipelined": "reasked"})
