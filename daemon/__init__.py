"""Overnight's daemon: the experiment loop, its agents, the journal, and (later) the editor protocol server."""

__version__ = "0.1.0"
