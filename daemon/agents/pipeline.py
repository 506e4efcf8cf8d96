"""Pipelining: the agent prepares proposal N+1 while experiment N trains, so the GPU does not wait.

The loop calls ``prefetch(ctx)`` once experiment N is committed, with a context on N's parent (the
incumbent, the likely state after N: most experiments are discarded) and a history that shows N as
running. The next ``propose(ctx)`` takes the prepared proposal when the files are still the ones it
was written for; when N was kept, the prepared edits are rebased onto the new incumbent (the inner
agent's ``rebase`` hook), and when they no longer apply, or the human spoke in the meantime, the model is
asked afresh (the discarded answer's cost is carried onto the fresh one).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace

from ..ideas import Draft
from .base import Agent, Context, Proposal, ThoughtHook
from .cost import Usage

log = logging.getLogger("overnight.agent")


@dataclass
class _Pending:
    ctx: Context
    done: threading.Event = field(default_factory=threading.Event)
    proposal: Proposal | None = None
    error: BaseException | None = None


class PipelinedAgent(Agent):
    """Another agent, prefetching: the loop's hooks are the inner agent's, passed through."""

    def __init__(self, inner: Agent) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self._pending: _Pending | None = None
        self.stats = {"prefetched": 0, "used": 0, "rebased": 0, "reasked": 0}

    # The inner agent's hooks, passed through (the loop sets them on this wrapper).
    @property
    def on_thought(self) -> ThoughtHook:
        return self.inner.on_thought

    @on_thought.setter
    def on_thought(self, hook: ThoughtHook) -> None:
        self.inner.on_thought = hook

    @property
    def stop_event(self) -> threading.Event:
        return self.inner.stop_event

    @stop_event.setter
    def stop_event(self, event: threading.Event) -> None:
        self.inner.stop_event = event

    def hypothesize(self, ctx: Context) -> list[Draft]:
        return self.inner.hypothesize(ctx)

    def probe(self) -> bool:
        return self.inner.probe()

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
        elif _queue(ctx) != _queue(pending.ctx):
            why = "the human changed the idea queue while it was prepared"
        elif ctx.files == pending.ctx.files:
            self.stats["used"] += 1
            return replace(prepared, meta={**prepared.meta, "pipelined": "prefetched"})
        else:
            rebased = self.inner.rebase(prepared, ctx)
            if rebased is not None:
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


def _queue(ctx: Context) -> tuple[object, ...]:
    """What of the idea queue a proposal was prepared against: the drawable ideas, the pins and the vetoes."""
    return (tuple((i.id, i.state) for i in ctx.ideas or []), ctx.pinned, tuple(i.id for i in ctx.vetoed))
