"""LSP work-done progress for the experiments in flight: the editor's own progress bars.

One bar per experiment and client, begun when it starts, reported on each training frame (budget fraction over
the runs planned, current loss), ended when it is decided. Runs overlap (a model is scored while the next run
trains) or run in several slots, so several bars may be open at once; each follows its own experiment. Only for
clients that declare ``window.workDoneProgress``; a client that refuses the token simply gets none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from overnight.protocol import types as t

log = logging.getLogger("overnight.daemon")

# Bars open at most per client: a loop runs a few experiments at once; a bar whose end never came (its experiment
# was cut short by a stop, which ends them all anyway) is ended once this many newer ones began.
MAX_BARS = 16


def supported(ls: LanguageServer) -> bool:
    window = ls.client_capabilities.window if ls.client_capabilities else None
    return bool(window and window.work_done_progress)


@dataclass(slots=True)
class _Bar:
    token: str
    runs: int
    percent: int = 0
    phase: t.Phase | None = None


class ExperimentProgress:
    def __init__(self, ls: LanguageServer) -> None:
        self.ls = ls
        self._bars: dict[int, _Bar] = {}  # experiment id → its bar, in the order they began
        self._creating: set[int] = set()  # asked the client for a token, not answered yet
        self._ended_early: set[int] = set()  # of those, decided (or the loop stopped) before the client answered

    async def started(self, params: t.ExperimentStartedParams) -> None:
        if not supported(self.ls):
            return
        exp = params.experiment
        if exp.id in self._bars or exp.id in self._creating:
            return  # announced again (attached mid-run, or measured again): its bar goes on
        token = f"overnight-experiment-{exp.id}"
        self._creating.add(exp.id)
        try:
            await self.ls.work_done_progress.create_async(token)
        except Exception as exc:  # the client said no: no bar, nothing else changes
            log.debug("work-done progress refused: %r", exc)
            return
        finally:
            self._creating.discard(exp.id)
        if exp.id in self._ended_early:  # its decision came while the client was answering: no bar to begin
            self._ended_early.discard(exp.id)
            return
        while len(self._bars) >= MAX_BARS:
            self._end(next(iter(self._bars)), None)
        self._bars[exp.id] = _Bar(token, max(1, params.runs_planned))
        title = "Overnight: baseline" if exp.kind == t.ExperimentKind.BASELINE else f"Overnight #{exp.id}"
        self.ls.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(
            title=title, message=exp.description, percentage=0, cancellable=False))

    def report(self, frame: t.RunProgress) -> None:
        bar = self._bars.get(frame.experiment_id)
        if bar is None:
            return
        fraction = min(1.0, frame.elapsed / frame.budget) if frame.budget > 0 else 0.0
        percent = int(100 * min(1.0, (frame.run + fraction) / max(bar.runs, frame.run + 1)))
        bar.percent = max(percent, bar.percent)  # a confirmation run never moves the bar back
        message = (f"run {frame.run + 1}/{max(bar.runs, frame.run + 1)} · {frame.elapsed:.0f}/{frame.budget:.0f} s · "
                   f"loss {frame.train_loss:.3f}")
        self.ls.work_done_progress.report(bar.token, lsp.WorkDoneProgressReport(message=message, percentage=bar.percent))

    def phase(self, experiment_id: int, phase: t.Phase | None) -> None:
        """After training come export and evaluation (seconds to tens of seconds): say so, the bar stays put."""
        bar = self._bars.get(experiment_id)
        if bar is None or phase == bar.phase:
            return  # every state change passes every experiment's phase: only a change is said
        bar.phase = phase
        if phase is None or phase == t.Phase.TRAINING:
            return
        self.ls.work_done_progress.report(bar.token, lsp.WorkDoneProgressReport(
            message=f"{phase.value}…", percentage=bar.percent))

    def finished(self, params: t.ExperimentFinishedParams) -> None:
        exp = params.experiment
        self._end(exp.id, f"#{exp.id} {exp.status.value}" + (f": {exp.val_bpb:.4f} bpb" if exp.val_bpb is not None else ""))

    def end_all(self) -> None:
        """The loop stopped: nothing is in flight any more."""
        for exp_id in [*self._bars, *self._creating]:
            self._end(exp_id, None)

    def _end(self, exp_id: int, message: str | None) -> None:
        if exp_id in self._creating:
            self._ended_early.add(exp_id)
        bar = self._bars.pop(exp_id, None)
        if bar is not None:
            self.ls.work_done_progress.end(bar.token, lsp.WorkDoneProgressEnd(message=message))
