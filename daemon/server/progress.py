"""LSP work-done progress for the experiment in flight: the editor's own progress bar.

One progress per experiment and client, begun when it starts, reported on each training frame
(budget fraction over the runs planned, current loss), ended when it is decided. Only for clients
that declare ``window.workDoneProgress``; a client that refuses the token simply gets none.
"""

from __future__ import annotations

import logging

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from overnight.protocol import types as t

log = logging.getLogger("overnight.daemon")


def supported(ls: LanguageServer) -> bool:
    window = ls.client_capabilities.window if ls.client_capabilities else None
    return bool(window and window.work_done_progress)


class ExperimentProgress:
    def __init__(self, ls: LanguageServer) -> None:
        self.ls = ls
        self._token: str | None = None
        self._runs = 1
        self._last_percent = -1

    async def started(self, params: t.ExperimentStartedParams) -> None:
        if not supported(self.ls):
            return
        self.finished(None)
        exp = params.experiment
        token = f"overnight-experiment-{exp.id}"
        try:
            await self.ls.work_done_progress.create_async(token)
        except Exception as exc:  # the client said no: no bar, nothing else changes
            log.debug("work-done progress refused: %r", exc)
            return
        self._token, self._runs, self._last_percent = token, max(1, params.runs_planned), 0
        title = "Overnight: baseline" if exp.kind == t.ExperimentKind.BASELINE else f"Overnight #{exp.id}"
        self.ls.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(
            title=title, message=exp.description, percentage=0, cancellable=False))

    def report(self, frame: t.RunProgress) -> None:
        if self._token is None:
            return
        fraction = min(1.0, frame.elapsed / frame.budget) if frame.budget > 0 else 0.0
        percent = int(100 * min(1.0, (frame.run + fraction) / self._runs))
        percent = max(percent, self._last_percent)  # a confirmation run never moves the bar back
        self._last_percent = percent
        message = (f"run {frame.run + 1}/{self._runs} · {frame.elapsed:.0f}/{frame.budget:.0f} s · "
                   f"loss {frame.train_loss:.3f}")
        self.ls.work_done_progress.report(self._token, lsp.WorkDoneProgressReport(message=message, percentage=percent))

    def phase(self, phase: t.Phase | None) -> None:
        """After training come export and evaluation (seconds to tens of seconds): say so, the bar stays put."""
        if self._token is None or phase is None or phase == t.Phase.TRAINING:
            return
        self.ls.work_done_progress.report(self._token, lsp.WorkDoneProgressReport(
            message=f"{phase.value}…", percentage=max(0, self._last_percent)))

    def finished(self, params: t.ExperimentFinishedParams | None) -> None:
        if self._token is None:
            return
        message = None
        if params is not None:
            exp = params.experiment
            message = f"#{exp.id} {exp.status.value}" + (f": {exp.val_bpb:.4f} bpb" if exp.val_bpb is not None else "")
        self.ls.work_done_progress.end(self._token, lsp.WorkDoneProgressEnd(message=message))
        self._token = None
