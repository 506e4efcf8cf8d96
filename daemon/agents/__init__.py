"""Agents propose experiments. One interface (base.Agent), several implementations."""

from __future__ import annotations

from ..config import Config
from .base import Agent, AgentError, AgentPaused, Context, Proposal


def make_agent(cfg: Config) -> Agent:
    """The agent the config names, ready to propose."""
    if cfg.agent == "sweep":
        from .sweep import SweepAgent

        return SweepAgent(exclude=cfg.sweep.exclude, seed=cfg.sweep.seed)
    if cfg.agent == "replay":
        from .replay import ReplayAgent

        return ReplayAgent.from_file(cfg.root / cfg.replay_file)
    if cfg.agent == "claude":
        from .claude import ClaudeAgent
        from .pipeline import PipelinedAgent

        claude = ClaudeAgent.from_config(cfg)
        claude.check()
        return PipelinedAgent(claude) if cfg.claude.pipeline else claude
    raise AgentError(f"unknown agent {cfg.agent!r}")


__all__ = ["Agent", "AgentError", "AgentPaused", "Context", "Proposal", "make_agent"]
