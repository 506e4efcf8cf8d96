"""Runs on a Ray cluster: each training run a Ray task, measured on the worker exactly as it is locally.

The daemon stays the single writer: a task gets everything it needs by value — the experiment's files exported from
its commit, the session's pinned harness files with their hashes, the data manifest's hash, the limits — and sends
back only frames (through a Ray queue, for the live view) and the run's outcome. On the worker the run is sealed in
the same sandbox, supervised by the same executor, and scored by the same pinned harness; the worker builds or
verifies the data with that harness and refuses to run on data whose manifest is not the session's.

Ray is an optional extra (``pip install 'overnight[ray]'``); workers need Overnight installed (and bubblewrap, unless
the session is unsealed).
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .executor import DataPin, Frame, Harness, Limits, RunOutcome, RunRequest, execute
from .supervise import StopSignal

_POLL_S = 0.2


class RayUnavailable(RuntimeError):
    """Ray is not installed, or no cluster answers at the address: the message says which and what to do."""


def _tar(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buffer.getvalue()


def payload(req: RunRequest, frozen_hashes: dict[str, str], prepare: tuple[str, ...], sandbox: str) -> dict[str, Any]:
    """What a Ray task needs, by value: no path on the daemon's machine is used by the worker."""
    return {
        "tree": _tar(req.tree), "workdir": req.workdir, "command": list(req.command), "budget": req.budget,
        "clock": req.clock, "memory_limit_gb": req.memory_limit_gb, "seed": req.seed, "threads": req.threads,
        "scale": req.scale, "anchor": list(req.anchor) if req.anchor else None, "network": req.network,
        "gpu": req.gpu, "limits": asdict(req.limits), "sandbox": sandbox, "prepare": list(prepare),
        "evaluate": list(req.harness.evaluate), "harness_workdir": req.harness.workdir,
        "harness": {rel: (req.harness.directory / rel).read_bytes() for rel in frozen_hashes},
        "frozen_hashes": frozen_hashes, "manifest_sha256": req.data.manifest_sha256,
        "reported_metric": req.reported_metric, "readable": list(req.readable),
    }


def run_payload(p: dict[str, Any], send: Callable[[tuple[str, Any]], None], stop: StopSignal | None = None) -> RunOutcome:
    """The worker's side: rebuild the run from the payload and execute it sealed, as the daemon would."""
    from . import harness
    from .sandbox import SandboxUnavailable, detect
    from .trees import digest

    with tempfile.TemporaryDirectory(prefix="overnight-ray-") as tmp:
        root = Path(tmp)
        tree = root / "tree"
        tree.mkdir()
        with tarfile.open(fileobj=io.BytesIO(p["tree"])) as tar:
            tar.extractall(tree, filter="data")
        before = digest(tree)
        pinned = root / "harness"
        for rel, content in p["harness"].items():
            (pinned / rel).parent.mkdir(parents=True, exist_ok=True)
            (pinned / rel).write_bytes(content)
        hashes = dict(p["frozen_hashes"])
        problem = harness.check(pinned, hashes)
        if problem:
            return RunOutcome(status="crash", error=f"on the Ray worker: {problem}")
        reported = p.get("reported_metric")
        try:
            sandbox = detect(p["sandbox"])
            if reported is None:
                data = harness.prepare_data(pinned, p["harness_workdir"], tuple(p["prepare"]))
            else:  # the script reads its own data (readable folders on the worker): nothing is pinned
                harness.prepare_reported(pinned, p["harness_workdir"], tuple(p["prepare"]))
                data = DataPin(directory=root, training_files=())
        except (harness.HarnessError, SandboxUnavailable) as exc:
            return RunOutcome(status="crash", error=f"on the Ray worker: {exc}")
        if data is None or data.manifest_sha256 != p["manifest_sha256"]:
            return RunOutcome(status="crash", error="on the Ray worker: its data is not the data the session is measured "
                                                    "on (the manifest differs); build it with the same harness there")

        def after_run() -> str | None:
            changed = sorted(k for k in set(before) | set(digest(tree)) if before.get(k) != digest(tree).get(k))
            return f"the run changed its copy of the experiment's files: {', '.join(changed[:5])}" if changed else None

        req = RunRequest(
            tree=tree, workdir=p["workdir"], command=tuple(p["command"]), budget=p["budget"], clock=p["clock"],
            memory_limit_gb=p["memory_limit_gb"], seed=p["seed"], threads=p["threads"], run_dir=root / "run",
            log_path=root / "run.log", data=data,
            harness=Harness(directory=pinned, workdir=p["harness_workdir"], evaluate=tuple(p["evaluate"]),
                            check=lambda: harness.check(pinned, hashes)),
            sandbox=sandbox, limits=Limits(**p["limits"]), network=p["network"], gpu=p["gpu"], scale=p["scale"],
            anchor=(int(p["anchor"][0]), float(p["anchor"][1])) if p["anchor"] else None, after_run=after_run,
            reported_metric=reported, readable=tuple(p.get("readable", ())),
        )
        return execute(req, on_frame=lambda f: send(("frame", f)), stop=stop, on_phase=lambda ph: send(("phase", ph)))


class RayExecutor:
    """``execute``'s shape, on a Ray cluster: ``RayExecutor(address)(request, on_frame, stop, on_phase)``."""

    def __init__(self, address: str, *, frozen_hashes: Callable[[], dict[str, str]], prepare: tuple[str, ...],
                 sandbox: str, gpus_per_run: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise RayUnavailable("Ray is not installed: pip install 'overnight[ray]' (on the daemon's machine and on "
                                 "every worker)") from None
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:  # ConnectionError, ray's own errors: say what to do in one line
            raise RayUnavailable(f"no Ray cluster answers at {address!r} ({type(exc).__name__}: {exc}); start one with "
                                 "`ray start --head` (and `ray start --address=HEAD:6379` on each worker)") from None
        self._ray = ray
        self._remote = ray.remote(max_retries=0)(_task)
        self.frozen_hashes = frozen_hashes
        self.prepare = prepare
        self.sandbox = sandbox
        self.gpus_per_run = gpus_per_run

    def __call__(self, req: RunRequest, on_frame: Callable[[Frame], None] = lambda f: None,
                 stop: StopSignal | None = None, on_phase: Callable[[str], None] = lambda p: None) -> RunOutcome:
        from ray.util.queue import Empty, Queue

        ray = self._ray
        queue = Queue(actor_options={"num_cpus": 0})
        started = time.monotonic()
        ref = self._remote.options(num_cpus=req.threads, num_gpus=self.gpus_per_run).remote(
            payload(req, self.frozen_hashes(), self.prepare, self.sandbox), queue)

        def drain() -> None:
            while True:
                try:
                    kind, value = queue.get_nowait()
                except Empty:
                    return
                (on_frame if kind == "frame" else on_phase)(value)

        try:
            while True:
                drain()
                if stop is not None and stop.is_set():
                    ray.cancel(ref, force=True)  # the worker process goes, and the sandbox with it (die-with-parent)
                    return RunOutcome(status="interrupted", error="stopped by the user",
                                      wall_seconds=time.monotonic() - started)
                ready, _ = ray.wait([ref], timeout=_POLL_S)
                if ready:
                    drain()
                    try:
                        outcome: RunOutcome = ray.get(ref)
                    except Exception as exc:  # the task died: the worker crashed, lost its node, ...
                        outcome = RunOutcome(status="crash", error=f"the Ray task failed: {type(exc).__name__}: {exc}"[:500],
                                             wall_seconds=time.monotonic() - started)
                    break
        finally:
            try:
                ray.kill(queue.actor)
            except Exception:  # already gone with the cluster
                pass
        req.log_path.parent.mkdir(parents=True, exist_ok=True)
        req.log_path.write_text(f"(ran on a Ray worker; the end of its log)\n{outcome.log_tail}", encoding="utf-8")
        return outcome


def _task(p: dict[str, Any], queue: Any) -> RunOutcome:
    """The Ray task: run the payload, sending frames and phases through the queue."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run_payload(p, lambda item: queue.put(item))
