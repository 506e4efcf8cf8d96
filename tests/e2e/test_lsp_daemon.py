"""End to end: the daemon as a real subprocess, real LSP clients (pytest-lsp) attached over `overnight attach`.

One workspace for the module, one daemon process (`overnight daemon --detach`) running a replayed
agent with two-second training runs. The baseline learns almost nothing (a tiny LR), so the first
proposal (restore the LR, plus two comment edits elsewhere) is a certain keep: a suggestion with
three hunks. The tests run in file order against that one daemon, as a user's session would:
watch the loop, see the suggestion anchored in a buffer they changed, accept a hunk, reject one
with a reason, edit the file on disk (the watchdog path), change the budget.

The clients declare Visual Studio Code's real capabilities (from pytest-lsp), so the daemon's
work-done progress and refresh requests are checked against what VS Code accepts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from lsprotocol import types as lsp
from pygls import uris
from pygls.exceptions import JsonRpcException
from pygls.workspace import TextDocument
from pytest_lsp import LanguageClient, LanguageClientProtocol, client_capabilities
from pytest_lsp.client import register_lsp_features

from overnight.protocol import types as t
from overnight.protocol.wire import OvernightProtocol, make_converter

from ..conftest import commit_all, git, write_config

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

OVERNIGHT = [sys.executable, "-m", "overnight.daemon.cli"]
TRAIN = "trainer/train.py"
BAD_LR, GOOD_LR = "LR = 1e-5", "LR = 3e-3"
NOTE_A = ("# Model\n", "# Model (a GPT: blocks of attention and MLP)\n")
NOTE_B = ("# Setup and data\n", "# Setup and data (bytes in, bytes out)\n")


class Protocol(LanguageClientProtocol, OvernightProtocol):  # type: ignore[misc]
    """pytest-lsp's checking client protocol, speaking Overnight's methods with the strict converter."""


@dataclass
class Daemon:
    root: Path
    pid: int
    token: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*OVERNIGHT, *args], cwd=self.root, capture_output=True, text=True, timeout=120)

    def journal(self, sql: str) -> list[Any]:
        import sqlite3

        with sqlite3.connect(self.root / ".overnight" / "journal.db") as db:
            return db.execute(sql).fetchall()


@dataclass
class Client:
    lsp: LanguageClient
    notifications: list[tuple[str, Any]] = field(default_factory=list)
    buffer: TextDocument | None = None
    edits: list[lsp.ApplyWorkspaceEditParams] = field(default_factory=list)
    apply_delay: float = 0.0
    refreshes: list[str] = field(default_factory=list)
    init: lsp.InitializeResult | None = None

    async def ask(self, method: str, params: Any) -> Any:
        return await self.lsp.protocol.send_request_async(method, params)

    def got(self, method: str) -> list[Any]:
        return [p for m, p in self.notifications if m == method]

    async def until(self, what: str, predicate: Callable[[], Any], timeout: float = 240) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)
        return value

    def open(self, path: Path, text: str) -> None:
        uri = uris.from_fs_path(str(path)) or path.as_uri()
        self.buffer = TextDocument(uri, source=text, version=1)
        self.lsp.text_document_did_open(lsp.DidOpenTextDocumentParams(text_document=lsp.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=text)))

    def type_text(self, text: str) -> None:
        """The user replaces the whole buffer (as an editor sends it: a full-text change)."""
        assert self.buffer is not None
        version = (self.buffer.version or 0) + 1
        self.buffer = TextDocument(self.buffer.uri, source=text, version=version)
        self.lsp.text_document_did_change(lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=self.buffer.uri, version=version),
            content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text)]))


def _make_workspace(root: Path) -> None:
    from overnight.daemon.cli import main

    assert main(["init", str(root)]) == 0
    write_config(root, replay_file="proposals.jsonl", agent="replay", grace=90.0)  # robust on a loaded machine
    train = root / TRAIN
    original = train.read_text().replace(GOOD_LR, BAD_LR, 1)
    train.write_text(original)
    improved = original.replace(BAD_LR, GOOD_LR, 1).replace(*NOTE_A, 1).replace(*NOTE_B, 1)
    # Then certain regressions (the tiny LR again): they keep the loop busy and are never kept, so
    # the suggestion under test stays the only one. Enough of them that the loop is still at work when the
    # module's last tests (the user's edit, a new budget) need it: overlapped runs go through them fast.
    later = [improved.replace(GOOD_LR, BAD_LR, 1) + f"\n# note {i}\n" for i in range(40)]
    (root / "proposals.jsonl").write_text("\n".join(json.dumps({"description": d, "files": {TRAIN: text}}) for d, text in [
        ("restore a sane learning rate; comment the model and the data", improved),
        *((f"note {i}", text) for i, text in enumerate(later)),
    ]) + "\n")
    commit_all(root)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("e2e") / "ws"
    _make_workspace(root)
    started = subprocess.run([*OVERNIGHT, "daemon", "--detach", "--agent", "replay"], cwd=root,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    info = json.loads((root / ".overnight" / "daemon.json").read_text())
    d = Daemon(root, info["pid"], info["token"])
    yield d
    d.cli("shutdown")
    deadline = time.monotonic() + 60
    while psutil.pid_exists(d.pid) and psutil.Process(d.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the daemon did not exit after `overnight shutdown`"
        time.sleep(0.2)


@asynccontextmanager
async def attached(daemon: Daemon, token: str | None = None, caps: str = "visual-studio-code") -> AsyncIterator[Client]:
    """A client as an editor would start one: `overnight attach` as its language server process."""
    lc = LanguageClient(protocol_cls=Protocol, converter_factory=make_converter)
    register_lsp_features(lc)
    client = Client(lc)
    for method in t.METHODS:
        if t.METHODS[method].direction == "serverToClient":
            lc.feature(method)(_collector(client, method))

    async def apply_edit(params: lsp.ApplyWorkspaceEditParams) -> lsp.ApplyWorkspaceEditResult:
        client.edits.append(params)
        await asyncio.sleep(client.apply_delay)
        [change] = params.edit.document_changes or []
        assert isinstance(change, lsp.TextDocumentEdit)
        buf = client.buffer
        if buf is None or change.text_document.version != buf.version:
            return lsp.ApplyWorkspaceEditResult(applied=False, failure_reason="the document version changed")
        for e in sorted(change.edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
            assert isinstance(e, lsp.TextEdit)
            buf.apply_change(lsp.TextDocumentContentChangePartial(range=e.range, text=e.new_text))
        client.type_text(buf.source)  # the editor reports its new text, as after any edit
        return lsp.ApplyWorkspaceEditResult(applied=True)

    lc.feature(lsp.WORKSPACE_APPLY_EDIT)(apply_edit)
    lc.feature(lsp.WORKSPACE_CODE_LENS_REFRESH)(lambda params: client.refreshes.append("codeLens"))
    lc.feature(lsp.WORKSPACE_INLAY_HINT_REFRESH)(lambda params: client.refreshes.append("inlayHint"))
    await lc.start_io(*OVERNIGHT, "attach", cwd=str(daemon.root), env={**os.environ})
    capabilities = client_capabilities(caps)
    if caps == "visual-studio-code":
        # pytest-lsp's newest VS Code capabilities are 1.65's, from before inlay hints were final; the
        # VS Code the extension targets (1.100) declares their refresh support too.
        assert capabilities.workspace is not None
        capabilities.workspace.inlay_hint = lsp.InlayHintWorkspaceClientCapabilities(refresh_support=True)
    client.init = await lc.initialize_session(lsp.InitializeParams(
        capabilities=capabilities, root_uri=daemon.root.as_uri(),
        initialization_options={"token": token or daemon.token, "protocolVersion": t.PROTOCOL_VERSION}))
    try:
        yield client
    finally:
        await lc.shutdown_session()
        await lc.stop()


def _collector(client: Client, method: str) -> Callable[[Any], None]:
    def collect(params: Any) -> None:
        client.notifications.append((method, params))

    return collect


def _pending(client: Client) -> dict[str, t.Suggestion]:
    """The client's view of the pending suggestions, from the notifications alone."""
    view: dict[str, t.Suggestion] = {}
    for method, params in client.notifications:
        if method == t.OVERNIGHT_SUGGESTION_ADDED:
            view[params.suggestion.id] = params.suggestion
        elif method == t.OVERNIGHT_SUGGESTION_REMOVED:
            view.pop(params.id, None)
    return view


# -- the connection ----------------------------------------------------------------------------------


async def test_a_wrong_token_is_refused_through_the_bridge(daemon: Daemon) -> None:
    lc = LanguageClient(protocol_cls=Protocol, converter_factory=make_converter)
    lc.capabilities = lsp.ClientCapabilities()
    await lc.start_io(*OVERNIGHT, "attach", cwd=str(daemon.root))
    with pytest.raises(JsonRpcException) as refused:
        await asyncio.wait_for(lc.initialize_async(lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(),
            initialization_options={"token": "not-the-token", "protocolVersion": t.PROTOCOL_VERSION})), 30)
    assert refused.value.code == t.ErrorCode.UNAUTHORIZED
    assert lc._server is not None
    assert await asyncio.wait_for(lc._server.wait(), 30) == 0  # the daemon closed it; the bridge ends
    await lc.stop()


async def test_two_editors_watch_the_loop_and_one_leaving_changes_nothing(daemon: Daemon) -> None:
    async with attached(daemon) as b:
        async with attached(daemon) as a:
            status = await a.ask(t.OVERNIGHT_STATUS, t.StatusParams())
            assert status.agent == "replay" and status.protocol_version == t.PROTOCOL_VERSION
            # A client asking mid-run gets the run in flight with its curve so far (to draw it from the start).
            live = None
            deadline = time.monotonic() + 240
            while live is None:
                assert time.monotonic() < deadline, "never saw a run in flight with a curve"
                now = await b.ask(t.OVERNIGHT_STATUS, t.StatusParams())
                if now.current and now.live and len(now.live.curve) >= 2:
                    live = now.live
                    # An editor attaching now, mid-run, gets the editor's progress bar for the run in flight at once.
                    async with attached(daemon) as late:
                        await late.until("progress begun for a client that attached mid-run", lambda: any(
                            type(r).__name__ == "WorkDoneProgressBegin"
                            for reports in late.lsp.progress_reports.values() for r in reports), timeout=30)
                    assert live.experiment_id == now.current.id and live.runs_planned >= live.run + 1
                    assert [c[1] for c in live.curve] == sorted(c[1] for c in live.curve)
                    assert all(0 <= c[1] <= now.budget * 2 and c[2] > 0 for c in live.curve)
                await asyncio.sleep(0.3)
            kept = await a.until("the first keep", lambda: [p for p in a.got(t.OVERNIGHT_EXPERIMENT_FINISHED)
                                                            if p.experiment.kind == t.ExperimentKind.EXPERIMENT
                                                            and p.experiment.status == t.Status.KEEP])
            exp_id = kept[0].experiment.id
            # Both got the same broadcasts; the progress bar followed the experiment in the editor.
            await b.until("B's copy", lambda: any(p.experiment.id == exp_id for p in b.got(t.OVERNIGHT_EXPERIMENT_FINISHED)))
            assert a.got(t.OVERNIGHT_PROGRESS) and b.got(t.OVERNIGHT_PROGRESS)
            reports = a.lsp.progress_reports.get(f"overnight-experiment-{exp_id}", [])
            kinds = [type(r).__name__ for r in reports]
            assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd" and "WorkDoneProgressReport" in kinds
            assert "keep" in (reports[-1].message or "")
            # After training the bar says what the run is doing (it is not frozen at its last training frame).
            assert any(getattr(r, "message", None) in ("exporting…", "evaluating…") for r in reports), reports
            # A plain client (no showMessages: false) is told of the keep in words it can show.
            await a.until("the keep message", lambda: any(f"#{exp_id} kept" in m.message for m in a.lsp.messages))
            # The journal changed: VS Code is asked to refresh its lenses and hints, and gets the suggestion.
            await a.until("refresh requests", lambda: {"codeLens", "inlayHint"} <= set(a.refreshes))
            suggestion = (await a.until("the suggestion", lambda: list(_pending(a).values())))[0]
            assert suggestion.experiment_ids == [exp_id] and len(suggestion.hunks) == 3
            # The history and the decision's evidence.
            page = await a.ask(t.OVERNIGHT_EXPERIMENTS_LIST, t.ListExperimentsParams(offset=0, limit=50, status=[t.Status.KEEP]))
            assert [e.id for e in page.items][0] == exp_id and page.items[-1].kind == t.ExperimentKind.BASELINE
            detail = await a.ask(t.OVERNIGHT_EXPERIMENTS_GET, t.GetExperimentParams(id=exp_id))
            assert GOOD_LR in detail.diff and detail.evidence["t"] > detail.evidence["bar"] and len(detail.runs) == 2
            # A pauses; A leaves; B is still answered and sees the loop paused, not stopped.
            await a.ask(t.OVERNIGHT_PAUSE, t.PauseParams(reason="reviewing the suggestion"))
        await b.until("paused", lambda: any(p.state == t.LoopState.PAUSED for p in b.got(t.OVERNIGHT_LOOP_STATE_CHANGED)))
        status = await b.ask(t.OVERNIGHT_STATUS, t.StatusParams())
        assert status.state == t.LoopState.PAUSED and status.kept == 1
        redirect = await b.ask(t.OVERNIGHT_REDIRECT, t.RedirectParams(instruction="try a wider model next"))
        assert redirect.feedback_id > 0
        assert ("pause", "reviewing the suggestion") in daemon.journal("SELECT kind, text FROM feedback")


# -- suggestions -----------------------------------------------------------------------------------------


async def test_a_suggestion_anchors_in_the_buffer_the_user_changed_and_accept_edits_that_buffer(daemon: Daemon) -> None:
    disk = (daemon.root / TRAIN).read_text()
    assert BAD_LR in disk  # the user's file was never written by the loop
    async with attached(daemon) as ed:
        typed = "# my notes\n# more notes\n" + disk
        lr_line = next(i for i, line in enumerate(typed.splitlines()) if line.startswith(BAD_LR))
        ed.open(daemon.root / TRAIN, typed)
        # First anchored in the file on disk (on initialize), then in the opened buffer (on didOpen).
        [suggestion] = await ed.until("the suggestion anchored in the buffer", lambda: [
            s for s in _pending(ed).values() if any(GOOD_LR in h.new_text and h.range.start.line == lr_line for h in s.hunks)])
        lr = next(h for h in suggestion.hunks if GOOD_LR in h.new_text)
        assert lr.old_text.startswith(BAD_LR) and len(suggestion.hunks) == 3
        assert lr.experiment_ids == suggestion.experiment_ids and "bpb" in (lr.evidence or "")
        # CodeLens on each hunk: accept, reject, and the evidence.
        lenses = await ed.lsp.text_document_code_lens_async(lsp.CodeLensParams(
            text_document=lsp.TextDocumentIdentifier(uri=ed.buffer.uri if ed.buffer else "")))
        at_lr = [lens for lens in lenses if lens.range.start.line == lr.range.start.line]
        # Server commands, advertised: any LSP client can run the lens (the VS Code extension maps them onto its own).
        assert [lens.command.command for lens in at_lr if lens.command] == [
            t.SERVER_COMMAND_ACCEPT_SUGGESTION, t.SERVER_COMMAND_REJECT_SUGGESTION, t.SERVER_COMMAND_SHOW_EXPERIMENT]
        accept_lens = at_lr[0].command
        assert accept_lens and list(accept_lens.arguments or []) == [suggestion.id, lr.id]
        provider = ed.init.capabilities.execute_command_provider if ed.init else None
        assert provider is not None and {accept_lens.command, t.SERVER_COMMAND_PAUSE} <= set(provider.commands)
        # The user types again before accepting: the suggestion re-anchors.
        ed.type_text("# one more line\n" + ed.buffer.source if ed.buffer else "")
        await ed.until("re-anchored", lambda: next(iter(_pending(ed).values())).hunks[0].range.start.line
                       != suggestion.hunks[0].range.start.line)
        moved = next(h for h in next(iter(_pending(ed).values())).hunks if h.id == lr.id)
        assert moved.range.start.line == lr.range.start.line + 1
        # Accept the LR hunk by running its lens, as any editor does: one versioned edit of the live buffer,
        # nothing on disk, and a message saying so.
        result = await ed.lsp.workspace_execute_command_async(lsp.ExecuteCommandParams(
            command=accept_lens.command, arguments=accept_lens.arguments))
        assert result["applied"] is True, result
        assert any("accepted" in m.message and "not saved" in m.message for m in ed.lsp.messages)
        assert ed.buffer is not None and GOOD_LR in ed.buffer.source and ed.buffer.source.startswith("# one more line\n# my notes")
        assert (daemon.root / TRAIN).read_text() == disk
        left = await ed.until("the accepted hunk gone", lambda: [s for s in _pending(ed).values()
                                                                  if all(h.id != lr.id for h in s.hunks)])
        assert len(left[0].hunks) == 2
        assert daemon.journal("SELECT state FROM hunk_decisions") == [("accepted",)]
        # The experiment list marks what the user did with the experiment's changes.
        kept = await ed.ask(t.OVERNIGHT_EXPERIMENTS_LIST, t.ListExperimentsParams(offset=0, limit=50, status=[t.Status.KEEP]))
        assert [e.review for e in kept.items if e.kind == t.ExperimentKind.EXPERIMENT] == [t.Review.ACCEPTED]


async def test_two_clients_accepting_one_hunk_get_one_edit(daemon: Daemon) -> None:
    disk = (daemon.root / TRAIN).read_text()
    async with attached(daemon) as a, attached(daemon) as b:
        a.open(daemon.root / TRAIN, disk)
        b.open(daemon.root / TRAIN, disk)
        [suggestion] = await a.until("A's suggestion", lambda: list(_pending(a).values()))
        await b.until("B's suggestion", lambda: _pending(b))
        note_a = next(h for h in suggestion.hunks if NOTE_A[1] in h.new_text)
        a.apply_delay = 1.5  # A's editor is slow to apply: B's accept arrives meanwhile
        accept = t.AcceptSuggestionParams(id=suggestion.id, hunk_id=note_a.id)
        first = asyncio.ensure_future(a.ask(t.OVERNIGHT_SUGGESTIONS_ACCEPT, accept))
        await a.until("A's applyEdit", lambda: a.edits)
        with pytest.raises(JsonRpcException) as second:
            await b.ask(t.OVERNIGHT_SUGGESTIONS_ACCEPT, t.AcceptSuggestionParams(id=suggestion.id, hunk_id=note_a.id))
        assert second.value.code == t.ErrorCode.INVALID_STATE
        assert (await first).applied and not b.edits
        # Once accepted, it is gone for B too (its buffer did not change: the decision hides it).
        await b.until("B drops the hunk", lambda: all(h.id != note_a.id for s in _pending(b).values() for h in s.hunks))
        # Accepting it again is refused with a clear error, not a second edit.
        with pytest.raises(JsonRpcException) as again:
            await b.ask(t.OVERNIGHT_SUGGESTIONS_ACCEPT, t.AcceptSuggestionParams(id=suggestion.id, hunk_id=note_a.id))
        assert again.value.code == t.ErrorCode.INVALID_STATE and not b.edits


async def test_an_editor_refusing_the_edit_leaves_the_suggestion_pending(daemon: Daemon) -> None:
    async with attached(daemon) as ed:
        ed.open(daemon.root / TRAIN, (daemon.root / TRAIN).read_text())
        [suggestion] = await ed.until("the suggestion", lambda: list(_pending(ed).values()))
        assert ed.buffer is not None
        ed.buffer.version = 99  # the editor's buffer moved on before the edit arrived
        result = await ed.ask(t.OVERNIGHT_SUGGESTIONS_ACCEPT, t.AcceptSuggestionParams(id=suggestion.id))
        assert not result.applied and "stays pending" in (result.message or "")
        listed = await ed.ask(t.OVERNIGHT_SUGGESTIONS_LIST, t.ListSuggestionsParams(uri=ed.buffer.uri))
        assert [s.id for s in listed.items] == [suggestion.id]


async def test_reject_with_a_reason_reaches_the_agent_and_every_client(daemon: Daemon) -> None:
    async with attached(daemon) as a, attached(daemon) as b:
        [suggestion] = await a.until("the suggestion", lambda: list(_pending(a).values()))
        await b.until("B's copy", lambda: _pending(b))
        note_b = next(h for h in suggestion.hunks if NOTE_B[1] in h.new_text)
        await a.ask(t.OVERNIGHT_SUGGESTIONS_REJECT, t.RejectSuggestionParams(
            id=suggestion.id, hunk_id=note_b.id, reason="comments are mine to write"))
        removed = await b.until("B told", lambda: b.got(t.OVERNIGHT_SUGGESTION_REMOVED))
        assert removed[-1].id == suggestion.id and removed[-1].state == t.SuggestionState.REJECTED
        feedback = daemon.journal("SELECT kind, text FROM feedback WHERE kind='reject'")
        assert feedback and "comments are mine to write" in feedback[0][1]
        detail = await a.ask(t.OVERNIGHT_EXPERIMENTS_GET, t.GetExperimentParams(id=suggestion.experiment_ids[-1]))
        assert detail.experiment.review == t.Review.MIXED  # one hunk accepted earlier, this one rejected
        with pytest.raises(JsonRpcException) as expired:
            await a.ask(t.OVERNIGHT_SUGGESTIONS_ACCEPT, t.AcceptSuggestionParams(id=suggestion.id))
        assert expired.value.code == t.ErrorCode.INVALID_STATE
        with pytest.raises(JsonRpcException) as unknown:
            await a.ask(t.OVERNIGHT_SUGGESTIONS_REJECT, t.RejectSuggestionParams(id="no-such-suggestion"))
        assert unknown.value.code == t.ErrorCode.NOT_FOUND


# -- the user's own edits on disk (watchdog) --------------------------------------------------------------


async def test_the_users_edit_on_disk_is_rebased_onto_and_measured(daemon: Daemon) -> None:
    train = daemon.root / TRAIN
    async with attached(daemon) as ed:
        before = len(daemon.journal("SELECT id FROM experiments WHERE kind='baseline'"))
        # The user edits program.md and the training script in another editor (the loop is paused).
        (daemon.root / "program.md").write_text((daemon.root / "program.md").read_text() + "\nPrefer small models.\n")
        train.write_text(train.read_text().replace("WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.05", 1))
        started = await ed.until("the new baseline", lambda: [p for p in ed.got(t.OVERNIGHT_EXPERIMENT_STARTED)
                                                              if p.experiment.kind == t.ExperimentKind.BASELINE])
        assert "your change to trainer/train.py" in started[0].experiment.description
        await ed.until("the baseline measured", lambda: any(
            p.experiment.id == started[0].experiment.id and p.experiment.status == t.Status.KEEP
            for p in ed.got(t.OVERNIGHT_EXPERIMENT_FINISHED)))
        assert len(daemon.journal("SELECT id FROM experiments WHERE kind='baseline'")) == before + 1
        tag = (await ed.ask(t.OVERNIGHT_STATUS, t.StatusParams())).tag
        # The new baseline's commit is what the loop stands on (the branch itself may already hold the next
        # candidate, committed while it runs): the user's change, and the loop's own kept change elsewhere.
        rebased = started[0].experiment.commit
        assert rebased is not None
        branch = git(daemon.root, "show", f"{rebased}:{TRAIN}")
        assert "WEIGHT_DECAY = 0.05" in branch and GOOD_LR in branch
        assert "Prefer small models." in git(daemon.root, "show", f"{rebased}:program.md")
        assert BAD_LR in train.read_text()  # still never written by the daemon
        # The user now rewrites the LR line themselves: the pending LR hunk (accepted only in another
        # buffer, never saved) cannot apply to what is on disk, and no client is offered it.
        train.write_text(train.read_text().replace(BAD_LR, "LR = 2e-3", 1))
        await ed.until("synced", lambda: "LR = 2e-3" in git(daemon.root, "show", f"overnight/{tag}:{TRAIN}"), 120)
        listed = await ed.ask(t.OVERNIGHT_SUGGESTIONS_LIST, t.ListSuggestionsParams())
        assert all("LR =" not in h.new_text for s in listed.items for h in s.hunks)


# -- the budget, and bad input ------------------------------------------------------------------------------


async def test_set_budget_starts_a_new_session(daemon: Daemon) -> None:
    async with attached(daemon) as ed:
        await ed.ask(t.OVERNIGHT_PAUSE, t.PauseParams(reason="a new budget"))
        deadline = time.monotonic() + 240  # a re-measured baseline of the synced edit may still run
        while (old := await ed.ask(t.OVERNIGHT_STATUS, t.StatusParams())).state != t.LoopState.PAUSED:
            assert time.monotonic() < deadline, f"the loop did not pause: {old.state}"
            await asyncio.sleep(0.5)
        with pytest.raises(JsonRpcException) as bad:
            await ed.ask(t.OVERNIGHT_SET_BUDGET, t.SetBudgetParams(seconds=-3.0))
        assert bad.value.code == -32602
        await ed.ask(t.OVERNIGHT_SET_BUDGET, t.SetBudgetParams(seconds=3.0))
        # While paused the new session starts at once, and waits paused before its baseline.
        status = await ed.until("the new session", lambda: [p for p in ed.got(t.OVERNIGHT_LOOP_STATE_CHANGED)
                                                            if p.tag and p.tag != old.tag])
        assert status[-1].budget == 3.0 and status[-1].tag == f"{old.tag}-3s"
        await ed.until("the new session paused", lambda: [p for p in ed.got(t.OVERNIGHT_LOOP_STATE_CHANGED)
                                                           if p.tag == f"{old.tag}-3s" and p.state == t.LoopState.PAUSED])
        now = await ed.ask(t.OVERNIGHT_STATUS, t.StatusParams())
        assert now.state == t.LoopState.PAUSED and now.tag == f"{old.tag}-3s" and now.budget == 3.0
        assert not [p for p in ed.got(t.OVERNIGHT_EXPERIMENT_STARTED) if p.experiment.kind == t.ExperimentKind.BASELINE]
        await ed.ask(t.OVERNIGHT_RESUME, t.ResumeParams())
        await ed.until("its baseline", lambda: [p for p in ed.got(t.OVERNIGHT_EXPERIMENT_STARTED)
                                                if p.experiment.kind == t.ExperimentKind.BASELINE])
        stopped = await ed.ask(t.OVERNIGHT_STOP, t.StopParams(when=t.StopWhen.NOW))
        assert stopped.tag == f"{old.tag}-3s"


async def _bridge(daemon: Daemon, messages: list[dict[str, Any]]) -> asyncio.subprocess.Process:
    """`overnight attach` with an initialize (the right token) and these raw JSON-RPC messages written to it."""
    bridge = await asyncio.create_subprocess_exec(*OVERNIGHT, "attach", cwd=str(daemon.root),
                                                  stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert bridge.stdin is not None
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "processId": None, "capabilities": {},
        "initializationOptions": {"token": daemon.token, "protocolVersion": t.PROTOCOL_VERSION}}}
    for message in (init, *messages):
        body = json.dumps(message).encode()
        bridge.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await bridge.stdin.drain()
    return bridge


async def _bridge_session(daemon: Daemon, messages: list[dict[str, Any]], answers: int) -> dict[int, Any]:
    """Raw JSON-RPC through `overnight attach` (what no typed client would send): id → reply."""
    bridge = await _bridge(daemon, messages)
    assert bridge.stdout is not None
    replies: dict[int, Any] = {}
    while len(replies) < answers + 1:
        header = await asyncio.wait_for(bridge.stdout.readuntil(b"\r\n\r\n"), 60)
        length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
        reply = json.loads(await bridge.stdout.readexactly(length))
        if "id" in reply and "method" not in reply:
            replies[reply["id"]] = reply
    bridge.kill()
    await bridge.wait()
    return replies


async def test_bad_messages_get_errors_and_the_daemon_goes_on(daemon: Daemon) -> None:
    replies = await _bridge_session(daemon, [
        {"jsonrpc": "2.0", "id": 1, "method": t.OVERNIGHT_EXPERIMENTS_GET, "params": {"id": "seven"}},
        {"jsonrpc": "2.0", "id": 2, "method": "overnight/noSuchMethod", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": t.OVERNIGHT_SET_BUDGET, "params": {"seconds": 5.0, "tag": "../../etc"}},
        {"jsonrpc": "2.0", "id": 4, "method": t.OVERNIGHT_SUGGESTIONS_ACCEPT, "params": {"id": 7}},
    ], answers=4)
    assert replies[1]["error"]["code"] == -32602 and replies[2]["error"]["code"] == -32601
    assert replies[3]["error"]["code"] == t.ErrorCode.INVALID_STATE and "tag" in replies[3]["error"]["message"]
    assert replies[4]["error"]["code"] == -32602
    # A client that vanishes mid-request: the daemon answers into the void and goes on.
    ask = {"jsonrpc": "2.0", "id": 2, "method": t.OVERNIGHT_EXPERIMENTS_LIST, "params": {"offset": 0, "limit": 1000}}
    bridge = await _bridge(daemon, [ask])
    bridge.kill()
    await bridge.wait()
    async with attached(daemon) as ed:
        status = await ed.ask(t.OVERNIGHT_STATUS, t.StatusParams())
        assert status.protocol_version == t.PROTOCOL_VERSION
    log = (daemon.root / ".overnight" / "daemon.log").read_text()
    assert "Traceback" not in log
