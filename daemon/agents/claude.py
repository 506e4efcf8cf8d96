"""The Claude agent: one focused, well-described change per proposal, through the Messages API.

Each proposal is one streamed request (the plan text goes to the editor as it arrives) whose answer
must come back as tool calls: ``edit`` search/replaces and one ``propose``. An answer that does not
validate is sent back with its errors for at most ``repair_turns`` more turns, then recorded as an
invalid experiment. Transient API failures are retried here with exponential back-off and jitter
(the SDK's own retries are off, so dropped streams and malformed tool input are retried the same
way); when they are exhausted the agent raises AgentPaused and the loop pauses and probes.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import replace
from typing import Any

import anthropic

from ..config import Config, ConfigError, load_config
from ..ideas import Draft
from ..workspace import Edit
from . import prompt
from .base import Agent, AgentError, AgentPaused, Context, Proposal
from .cost import Usage, session_cost, usage_of
from .tools import Checked, EditError, SearchReplace, ToolCall, apply_edits, check_answer, check_syntax

log = logging.getLogger("overnight.agent")

_KEY_HELP = "create one at https://console.anthropic.com/settings/keys, or use --agent sweep, which needs no key"


class StreamDropped(RuntimeError):
    """The response stream ended before its message_stop event."""


def _error_type(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return str(err["type"])
    return ""


def transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, overload, server errors, timeouts, connection and stream failures,
    malformed tool-input JSON (the next sample is usually fine)."""
    if isinstance(exc, (StreamDropped, anthropic.APIConnectionError)):
        return True
    if isinstance(exc, anthropic.APIStatusError):
        # An error event inside a 200 stream carries the status 200 and the error's type in its body.
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500 or _error_type(exc) in (
            "overloaded_error", "api_error", "rate_limit_error", "timeout_error")
    if isinstance(exc, ValueError) and "tool parameter JSON" in str(exc):
        return True
    # The HTTP client's own transport errors (a connection reset mid-stream) are not wrapped by the SDK
    # while a stream is read; match them by module so either httpx flavour the SDK ships with is covered.
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "h11")


def describe(exc: BaseException) -> str:
    if isinstance(exc, anthropic.APIStatusError):
        kind = _error_type(exc)
        return f"HTTP {exc.status_code}" + (f" {kind}" if kind else "")
    if isinstance(exc, anthropic.APITimeoutError):
        return "request timed out"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection failed"
    if isinstance(exc, StreamDropped):
        return "the response stream was cut off"
    if isinstance(exc, ValueError):
        return "malformed tool input"
    return type(exc).__name__


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after")
        return float(value) if isinstance(value, str) else None
    except (TypeError, ValueError):
        return None


class ClaudeAgent(Agent):
    name = "claude"

    def __init__(self, cfg: Config, client: anthropic.Anthropic) -> None:
        super().__init__()
        self.cfg = cfg
        self.c = cfg.claude
        self.client = client
        # Spent on answers that never became an experiment (an outage mid-proposal, a prefetch re-asked):
        # added to the next recorded proposal, so the journal's total is the bill.
        self.carry = Usage()
        self.total = Usage()
        self.last_prompt_chars = 0
        self.rng = random.Random()

    @classmethod
    def from_config(cls, cfg: Config) -> ClaudeAgent:
        key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
        if not key:
            raise AgentError(f"the claude agent needs an Anthropic API key in ANTHROPIC_API_KEY: {_KEY_HELP}")
        client = anthropic.Anthropic(
            api_key=key, base_url=cfg.claude.base_url or None, timeout=cfg.claude.timeout_s, max_retries=0)
        return cls(cfg, client)

    # -- the API's health -------------------------------------------------------------------------

    def check(self) -> None:
        """At start: a refused key or an unknown model is one clear message now, not an error hours later.
        An unreachable API is not an error here: the loop pauses and probes when it needs the model."""
        try:
            self._count_tokens()
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError) as exc:
            raise self._fatal(exc) from None
        except anthropic.APIError as exc:
            log.warning("the Anthropic API did not answer the start-up check: %s", describe(exc))

    def probe(self) -> bool:
        """Is the API answering again? A token count: free, and it checks the key and the model too."""
        try:
            self._count_tokens()
            return True
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError):
            return True  # it answers; the next proposal turns this into the fatal message
        except anthropic.APIError as exc:
            log.info("probe: the Anthropic API is still unavailable: %s", describe(exc))
            return False

    def _count_tokens(self) -> None:
        self.client.messages.count_tokens(
            model=self.c.model, messages=[{"role": "user", "content": "ping"}],
            timeout=min(self.c.timeout_s, 30.0))

    def _fatal(self, exc: anthropic.APIStatusError) -> AgentError:
        if isinstance(exc, anthropic.AuthenticationError):
            return AgentError(f"the Anthropic API refused the key in ANTHROPIC_API_KEY (401 invalid key): {_KEY_HELP}")
        if isinstance(exc, anthropic.PermissionDeniedError):
            return AgentError("the key in ANTHROPIC_API_KEY may not use the Messages API (403 permission denied)")
        return AgentError(f"the Anthropic API does not know the model {self.c.model!r} (404): "
                          "set [claude] model in overnight.toml to a current model")

    # -- proposing --------------------------------------------------------------------------------

    def _current_cap(self) -> float:
        """The cap as overnight.toml says now: raising it there and resuming lifts the pause, no restart.
        A file that does not load (half-saved, a typo) keeps the cap in force and says why in the log."""
        try:
            cap = load_config(self.cfg.root).claude.spending_cap_usd
        except (ConfigError, OSError) as exc:
            log.warning("the spending cap stays $%.2f: overnight.toml does not load: %s", self.c.spending_cap_usd, exc)
            return self.c.spending_cap_usd
        if cap != self.c.spending_cap_usd:
            log.info("spending cap: $%.2f → $%.2f (overnight.toml)", self.c.spending_cap_usd, cap)
            self.c = replace(self.c, spending_cap_usd=cap)
        return cap

    def propose(self, ctx: Context) -> Proposal:
        spent = session_cost(ctx.history) + self.carry
        cap = self._current_cap()
        if spent.cost_usd >= cap:
            raise AgentPaused(
                f"the Claude agent's spending cap is reached: ${spent.cost_usd:.2f} of ${cap:.2f} spent in this "
                "session. Raise [claude] spending_cap_usd in overnight.toml, then resume (or run again), or switch agent.")
        req = prompt.build(ctx, recent=self.c.recent)
        self.last_prompt_chars = req.chars()
        messages = list(req.messages)
        usage = Usage()
        plans: list[str] = []
        try:
            for turn in range(1 + self.c.repair_turns):
                msg, used = self._call(req, messages)
                usage = usage + used
                text = "".join(getattr(b, "text", "") for b in msg.content if b.type == "text").strip()
                calls = [ToolCall(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"]
                if text:
                    plans.append(text)
                result = check_answer(ctx.files, calls)
                if isinstance(result, Checked):
                    return self._proposal(result, "\n\n".join(plans), usage, turn)
                log.info("answer refused (turn %d): %s", turn + 1, result.summary)
                if turn == self.c.repair_turns:
                    return Proposal(
                        description=f"(invalid answer) {result.summary[:120]}", edit=Edit(), reasoning="\n\n".join(plans),
                        meta=self._meta(usage, turn, ()), invalid=f"the agent's answer failed validation after "
                        f"{self.c.repair_turns} repair turn(s): {result.summary}")
                messages.append({"role": "assistant", "content": _assistant_content(msg.content)})
                messages.append({"role": "user", "content": [
                    *({"type": "tool_result", "tool_use_id": call_id, "content": text_, "is_error": text_ != "ok"}
                      for call_id, text_ in result.results.items()),
                    {"type": "text", "text": f"Your answer was refused: {result.summary}. Nothing was applied; the files "
                     "are as shown before. Send a corrected, complete answer: `edit` calls, then `propose`."},
                ]})
            raise AssertionError("unreachable")
        except BaseException:
            self.carry = self.carry + usage
            raise

    def _meta(self, usage: Usage, repairs: int, edits: tuple[SearchReplace, ...]) -> dict[str, Any]:
        total = usage + self.carry
        self.carry = Usage()
        self.total = self.total + total
        return {"usage": total.as_dict(), "model": self.c.model, "repairs": repairs,
                "prompt_chars": self.last_prompt_chars, "edits": [e.as_dict() for e in edits]}

    def _proposal(self, checked: Checked, plan: str, usage: Usage, repairs: int) -> Proposal:
        return Proposal(
            description=checked.description, edit=Edit(files=tuple(sorted(checked.files.items()))),
            hypothesis=checked.hypothesis, reasoning=plan, meta=self._meta(usage, repairs, checked.edits),
            idea_id=checked.idea, ideas=tuple(Draft(direction=d, text=t) for d, t in checked.ideas))

    def rebase(self, proposal: Proposal, ctx: Context) -> Proposal | None:
        """The same edits on other files (a new incumbent), or None when they no longer apply or parse."""
        raw = proposal.meta.get("edits")
        if proposal.invalid or not isinstance(raw, list) or not raw:
            return None
        try:
            edits = [SearchReplace(str(e["path"]), str(e["old"]), str(e["new"])) for e in raw]
            files = apply_edits(ctx.files, edits)
            changed = {rel: text for rel, text in files.items() if text != ctx.files[rel]}
            check_syntax(changed)
        except (EditError, KeyError, TypeError):
            return None
        if not changed:
            return None
        return Proposal(proposal.description, Edit(files=tuple(sorted(changed.items()))), proposal.hypothesis,
                        proposal.reasoning, {**proposal.meta, "pipelined": "rebased"}, idea_id=proposal.idea_id,
                        ideas=proposal.ideas)

    # -- one request, retried ---------------------------------------------------------------------

    def _call(self, req: prompt.Request, messages: list[dict[str, Any]]) -> tuple[Any, Usage]:
        failures = 0
        while True:
            try:
                return self._stream(req, messages)
            except (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError) as exc:
                raise self._fatal(exc) from None
            except Exception as exc:
                if not transient(exc):
                    raise
                failures += 1
                reason = describe(exc)
                if failures > self.c.max_retries:
                    raise AgentPaused(
                        f"the Anthropic API is unavailable ({reason}, {failures} attempts): paused, checking again "
                        f"every {self.c.probe_interval_s:g} s", retry_in=self.c.probe_interval_s) from None
                delay = self._backoff(failures, exc)
                log.warning("Anthropic API: %s; retry %d/%d in %.1f s", reason, failures, self.c.max_retries, delay)
                self._thought(f"\n[API: {reason}; retrying in {delay:.1f} s]\n", True)
                if self.stop_event.wait(delay):
                    raise AgentPaused("stopping", retry_in=None) from None

    def _backoff(self, failures: int, exc: BaseException) -> float:
        """Exponential with full jitter over its upper half, at most retry_max_s; a server's retry-after
        is honoured (within the same ceiling) as the lower bound."""
        ceiling = min(self.c.retry_max_s, self.c.retry_base_s * 2.0 ** (failures - 1))
        delay = ceiling * (0.5 + 0.5 * self.rng.random())
        after = _retry_after(exc)
        if after is not None:
            delay = max(delay, min(after, self.c.retry_max_s))
        return delay

    def _stream(self, req: prompt.Request, messages: list[dict[str, Any]]) -> tuple[Any, Usage]:
        extra = {"temperature": self.c.temperature} if self.c.temperature is not None else None
        with self.client.messages.stream(
            model=self.c.model, max_tokens=self.c.max_tokens, extra_body=extra,
            system=req.system, tools=req.tools, messages=messages,  # type: ignore[arg-type]
        ) as stream:
            try:
                for event in stream:
                    if event.type == "text":
                        self._thought(event.text, False)
                msg = stream.get_final_message()
            except Exception:
                self._charge_partial(stream)
                raise
        self._thought("", True)
        if msg.stop_reason is None:
            self.carry = self.carry + usage_of(self.c.model, msg.usage)
            raise StreamDropped("the stream ended before message_stop")
        return msg, usage_of(self.c.model, msg.usage)

    def _charge_partial(self, stream: Any) -> None:
        """A request that failed after its message_start (a cut stream, malformed tool input) was billed:
        its tokens go onto the next recorded proposal (and count toward the spending cap now)."""
        try:
            snapshot = stream.current_message_snapshot
        except AssertionError:  # no message_start yet: nothing was billed
            return
        self.carry = self.carry + usage_of(self.c.model, snapshot.usage)

    def _thought(self, text: str, done: bool) -> None:
        try:
            self.on_thought(text, done)
        except Exception:  # a listener's failure must not cost a proposal
            log.exception("thought listener failed")


def _assistant_content(blocks: list[Any]) -> list[dict[str, Any]]:
    """The answer as it goes back in a repair turn: text and tool_use blocks only."""
    out: list[dict[str, Any]] = []
    for b in blocks:
        if b.type == "text" and b.text:
            out.append({"type": "text", "text": b.text})
        elif b.type == "tool_use":
            out.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input if isinstance(b.input, dict) else {}})
    return out or [{"type": "text", "text": "(no answer)"}]
