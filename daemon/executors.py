"""Which executor runs a loop's training runs: this machine, or a Ray cluster (``[executor]`` in overnight.toml)."""

from __future__ import annotations

from collections.abc import Callable

from .config import Config
from .executor import RunOutcome, execute
from .journal import Session

Executor = Callable[..., RunOutcome]


class ExecutorError(RuntimeError):
    """The configured executor cannot be used: the message says why and what to do."""


def make_executor(cfg: Config, session: Callable[[], Session | None]) -> Executor:
    """``execute`` for local runs; a RayExecutor for ``kind = "ray"`` (connected now: a missing cluster is said at
    start, not at the first run)."""
    if cfg.executor.kind == "local":
        return execute
    from .ray_executor import RayExecutor, RayUnavailable

    def frozen() -> dict[str, str]:
        current = session()
        if current is None:
            raise ExecutorError("no session is open")
        return dict(current.frozen_hashes)

    try:
        return RayExecutor(cfg.executor.address, frozen_hashes=frozen, prepare=cfg.prepare, sandbox=cfg.sandbox,
                           gpus_per_run=cfg.executor.gpus_per_run)
    except RayUnavailable as exc:
        raise ExecutorError(str(exc)) from None
