"""The pop-up a plain editor gets when an experiment is decided: once per experiment, however often it finishes
(an incumbent's re-run announces it again, with its new mean)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from overnight.daemon.journal import Experiment
from overnight.daemon.server.app import Daemon
from overnight.daemon.server.core import summary
from overnight.daemon.server.in_flight import InFlight
from overnight.protocol import types as t


def _kept(exp_id: int, kind: str = "experiment") -> t.ExperimentFinishedParams:
    exp = Experiment(id=exp_id, tag="t", kind=kind, status="keep", parent_commit="a" * 40, commit_sha="b" * 40,
                     ref=None, description="LR 3e-3 → 4e-3", hypothesis="", reasoning="", diff="", agent="replay",
                     meta={}, val_bpb=2.25, holdout_bpb=None, decided_by="keep rule", decision_reason="",
                     evidence={"incumbent_mean": 2.30}, error=None, attempts=1, created=time.time(),
                     finished=time.time())
    return t.ExperimentFinishedParams(experiment=summary(exp))


class _Editor:
    def __init__(self) -> None:
        self.protocol = SimpleNamespace(show_messages=True, notify=lambda method, params: None)
        self.experiment_progress = SimpleNamespace(finished=lambda params: None)
        self.popups: list[str] = []

    def window_show_message(self, params: Any) -> None:
        self.popups.append(params.message)


def test_a_keep_pops_up_once_though_the_incumbents_re_runs_finish_it_again() -> None:
    daemon = Daemon.__new__(Daemon)  # the broadcast path alone: no socket, no loop
    daemon._announced = set()
    daemon.core = SimpleNamespace(flying=InFlight())
    editors = [_Editor(), _Editor()]
    daemon._attached = lambda: editors  # type: ignore[method-assign]
    for params in (_kept(2), _kept(2), _kept(1, kind="baseline"), _kept(3), _kept(2)):
        daemon._send_all(t.OVERNIGHT_EXPERIMENT_FINISHED, params)
    for editor in editors:
        assert [m.split(":")[1].strip() for m in editor.popups] == ["#2 kept", "#3 kept"]
