"""The Claude agent through the real SDK against the fake Messages API: no loop, no training."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overnight.daemon.agents import AgentError, AgentPaused, make_agent
from overnight.daemon.agents.claude import ClaudeAgent
from overnight.daemon.agents.cost import Usage, price, usage_of
from overnight.daemon.agents.pipeline import PipelinedAgent
from overnight.daemon.agents.prompt import build
from overnight.daemon.agents.tools import SearchReplace, ToolCall, apply_edits, check_answer
from overnight.daemon.config import ClaudeConfig, Config

from ..fakes.anthropic_server import Error, FakeAnthropic, Hang, Reply, edit, propose
from ..fakes.context import SOURCE, TRAIN, context, exp


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def agent(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ClaudeAgent:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    cfg = Config(root=tmp_path, claude=ClaudeConfig(
        model="claude-sonnet-4-6", base_url=fake.url, timeout_s=1.0, max_retries=3, retry_base_s=0.01,
        retry_max_s=0.05, probe_interval_s=0.1))
    a = ClaudeAgent.from_config(cfg)
    a.thoughts = []  # type: ignore[attr-defined]
    a.on_thought = lambda text, done: a.thoughts.append((text, done))  # type: ignore[attr-defined]
    return a


GOOD = Reply(text="The LR looks low. I will double it.", tools=[edit(TRAIN, "LR = 3e-3", "LR = 6e-3"), propose("LR 3e-3 → 6e-3")])


# -- tools, prompt, cost: plain functions -------------------------------------------------------------


def test_search_replace_validation_speaks_to_the_model() -> None:
    files = {TRAIN: SOURCE}
    assert apply_edits(files, [SearchReplace(TRAIN, "LR = 3e-3", "LR = 1e-3")])[TRAIN].count("LR = 1e-3") == 1
    calls = [ToolCall("a", "edit", {"path": TRAIN, "old": "LR = 9", "new": "x"}), ToolCall("b", "propose", {"description": "d"})]
    rejected = check_answer(files, calls)
    assert not hasattr(rejected, "files") and "does not occur" in rejected.summary and "LR = 3e-3" in rejected.summary
    assert "not an editable file" in check_answer(files, [ToolCall("a", "edit", {"path": "trainer/prepare.py", "old": "x",
                                                         "new": "y"}), ToolCall("b", "propose", {"description": "d"})]).summary
    assert "does not parse" in check_answer(files, [ToolCall("a", "edit", {"path": TRAIN, "old": "LR = 3e-3", "new": "LR = ("}),
                                                   ToolCall("b", "propose", {"description": "d"})]).summary
    assert "no propose call" in check_answer(files, [ToolCall("a", "edit", {"path": TRAIN, "old": "LR", "new": "X"})]).summary
    assert "occurs 2 times" in check_answer({TRAIN: "a\na\n"}, [ToolCall("a", "edit", {"path": TRAIN, "old": "a", "new": "b"}),
                                                                 ToolCall("b", "propose", {"description": "d"})]).summary


def test_prompt_has_cached_prefix_history_noise_and_feedback() -> None:
    history = [exp(1, "keep", "baseline", "baseline", 2.5), exp(2, "keep", description="halve batch", val=2.4,
               evidence={"incumbent_mean": 2.5}),
               exp(3, "crash", description="flash attention", val=None, error="boom\nRuntimeError: x"),
               exp(4, "running", description="deeper model", val=None)]
    ctx = context(history=history, incumbent=history[1], feedback=[
        {"kind": "reject", "experiment_id": 2, "text": "batch size must stay 16"},
        {"kind": "redirect", "experiment_id": None, "text": "try rotary embeddings"}])
    req = build(ctx)
    assert req.system[-1]["cache_control"] == {"type": "ephemeral"} and "Lower val_bpb." in req.system[-1]["text"]
    files_block, dynamic = req.messages[0]["content"]
    assert "cache_control" in files_block and "LR = 3e-3" in files_block["text"] and "#2" in files_block["text"]
    text = dynamic["text"]
    for expected in ("σ = 0.0040", "about 0.0120 better than the incumbent", "#2 keep 2.4000 (-0.1000", "#3 crash",
                     "RuntimeError: x",
                     "#4 RUNNING NOW", "REJECTED #2 (halve batch): batch size must stay 16", "INSTRUCTION: try rotary"):
        assert expected in text, expected


def test_cost_per_model_and_usage_round_trip() -> None:
    class U:
        input_tokens, cache_read_input_tokens, cache_creation_input_tokens, output_tokens = 1000, 9000, 0, 500
    u = usage_of("claude-sonnet-4-5-20250929", U())
    assert u.cost_usd == pytest.approx((1000 * 3 + 9000 * 0.3 + 500 * 15) / 1e6)
    assert u.cache_hit_ratio == pytest.approx(0.9)
    assert Usage.from_dict(json.loads(json.dumps(u.as_dict()))) == u
    assert price("claude-opus-9-9").input >= price("claude-opus-4-5").input  # unknown: the family's dearest


# -- the agent against the fake API ---------------------------------------------------------------------


def test_a_streamed_tool_use_answer_becomes_a_proposal(fake: FakeAnthropic, agent: ClaudeAgent) -> None:
    fake.add(GOOD)
    p = agent.propose(context())
    assert p.description == "LR 3e-3 → 6e-3" and "LR = 6e-3" in dict(p.edit.files)[TRAIN]
    assert p.reasoning == "The LR looks low. I will double it." and not p.invalid
    assert "".join(t for t, _ in agent.thoughts) == p.reasoning and agent.thoughts[-1] == ("", True)  # type: ignore[attr-defined]
    body = fake.requests[0]
    assert body["stream"] is True and body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert [t["name"] for t in body["tools"]] == ["edit", "hypothesize", "propose"]
    usage = Usage.from_dict(p.meta["usage"])
    assert usage.requests == 1 and usage.output_tokens == 50 and usage.cost_usd > 0
    fake.add(GOOD)
    agent.propose(context())  # same prefix and files: read from the cache this time
    assert agent.total.cache_read_input_tokens > 0


def test_an_invalid_answer_gets_repair_turns_then_is_recorded_invalid(fake: FakeAnthropic, agent: ClaudeAgent) -> None:
    bad = Reply(text="oops", tools=[edit(TRAIN, "LR = 1", "LR = 2"), propose("x")])
    fake.add(bad, GOOD)
    p = agent.propose(context())
    assert not p.invalid and p.meta["repairs"] == 1
    repair = fake.requests[1]["messages"]
    assert repair[1]["role"] == "assistant" and repair[2]["content"][0]["type"] == "tool_result"
    assert repair[2]["content"][0]["is_error"] is True and "does not occur" in repair[2]["content"][0]["content"]
    fake.add(bad, bad, bad)
    p = agent.propose(context())
    assert p.invalid.startswith("the agent's answer failed validation after 2 repair turn(s)")
    assert Usage.from_dict(p.meta["usage"]).requests == 3


def test_transient_failures_are_retried_with_backoff(fake: FakeAnthropic, agent: ClaudeAgent) -> None:
    fake.add(Error(429, "rate_limit_error", retry_after=0), Error(529, "overloaded_error"), Hang(3.0), GOOD)
    t0 = time.monotonic()
    assert agent.propose(context()).description == "LR 3e-3 → 6e-3"
    assert time.monotonic() - t0 < 5
    fake.add(Reply(text="cut", drop_after=3), Error(500), Reply(text="x", tools=[("edit", {})], raw_tool_json='{"path": ]'), GOOD)
    p = agent.propose(context())
    assert p.description == "LR 3e-3 → 6e-3"
    assert len(fake.requests) == 8
    # The cut stream and the malformed answer had begun (message_start): billed, so counted; the 500 was not.
    assert Usage.from_dict(p.meta["usage"]).requests == 3


def test_an_outage_pauses_and_the_probe_sees_the_api_back(fake: FakeAnthropic, agent: ClaudeAgent) -> None:
    fake.add(*[Error(529, "overloaded_error", probe_failures=1)] * 4)
    with pytest.raises(AgentPaused) as info:
        agent.propose(context())
    assert info.value.retry_in == pytest.approx(0.1) and "unavailable" in str(info.value)
    assert agent.probe() is False and agent.probe() is True


def test_the_spending_cap_pauses_until_raised_in_the_config(fake: FakeAnthropic, agent: ClaudeAgent) -> None:
    toml = agent.cfg.root / "overnight.toml"
    toml.write_text("[claude]\nspending_cap_usd = 0.5\n")
    spent = exp(2, meta={"usage": Usage(cost_usd=0.6).as_dict()})
    with pytest.raises(AgentPaused) as info:
        agent.propose(context(history=[spent]))
    assert info.value.retry_in is None and "spending cap" in str(info.value) and "$0.60 of $0.50" in str(info.value)
    assert "resume" in str(info.value) and not fake.requests
    # A file that does not load keeps the cap in force.
    toml.write_text("[claude]\nspending_cap_usd = 'lots'\n")
    with pytest.raises(AgentPaused, match=r"\$0\.60 of \$0\.50"):
        agent.propose(context(history=[spent]))
    # The human raises it and resumes: the next proposal goes out, no restart.
    toml.write_text("[claude]\nspending_cap_usd = 1.0\n")
    fake.add(GOOD)
    assert agent.propose(context(history=[spent])).description == "LR 3e-3 → 6e-3"
    assert agent.c.spending_cap_usd == 1.0


def test_a_missing_or_refused_key_is_one_clear_message(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    cfg = Config(root=tmp_path, agent="claude", claude=ClaudeConfig(base_url=fake.url))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(AgentError, match="needs an Anthropic API key in ANTHROPIC_API_KEY"):
        make_agent(cfg)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-good")
    assert isinstance(make_agent(cfg), PipelinedAgent)
    original = fake._count_tokens
    fake._count_tokens = lambda h: fake._error(h, Error(401, "authentication_error", "invalid x-api-key"))  # type: ignore[method-assign]
    with pytest.raises(AgentError, match="refused the key"):
        make_agent(cfg)
    fake._count_tokens = original  # type: ignore[method-assign]
    # A key revoked mid-session: the loop stops with the same message (AgentError), no retries.
    agent = ClaudeAgent.from_config(cfg)
    fake.add(Error(401, "authentication_error"))
    with pytest.raises(AgentError, match="refused the key"):
        agent.propose(context())


def test_pipelining_uses_rebases_or_reasks(fake: FakeAnthropic, agent: ClaudeAgent) -> None:
    piped = PipelinedAgent(agent)
    fake.add(Reply(text="wd", tools=[edit(TRAIN, "WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.05"), propose("WD 0.1 → 0.05")]))
    piped.prefetch(context())
    p = piped.propose(context())
    assert p is not None and p.meta["pipelined"] == "prefetched" and len(fake.requests) == 1
    # The running experiment was kept (new files): the prepared edits are rebased onto them.
    fake.add(Reply(text="wd", tools=[edit(TRAIN, "WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.05"), propose("WD 0.1 → 0.05")]))
    piped.prefetch(context())
    kept = context(files={TRAIN: SOURCE.replace("LR = 3e-3", "LR = 6e-3")})
    p = piped.propose(kept)
    assert p is not None and p.meta["pipelined"] == "rebased"
    assert "LR = 6e-3" in dict(p.edit.files)[TRAIN] and "WEIGHT_DECAY = 0.05" in dict(p.edit.files)[TRAIN]
    # The prepared edit touches the line the kept experiment changed: asked afresh, both answers paid.
    fake.add(GOOD, Reply(text="wd", tools=[edit(TRAIN, "WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.2"), propose("WD up")]))
    piped.prefetch(context())
    p = piped.propose(kept)
    assert p is not None and p.description == "WD up" and p.meta["pipelined"] == "reasked"
    assert Usage.from_dict(p.meta["usage"]).requests == 2
    assert piped.stats == {"prefetched": 3, "used": 1, "rebased": 1, "reasked": 1}
