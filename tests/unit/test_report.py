"""Reports print what the journal holds, verbatim: agent text is never read as terminal markup."""

from pathlib import Path

from rich.console import Console

from overnight.daemon import report
from overnight.daemon.journal import Journal, Run, Session

TRICKY = "use x[0] and [bold]not bold[/bold] in [sweep]"


def _journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.db")
    j.create_session(Session("t", "overnight/t", "abc", {}, {}, 0.0))
    exp_id = j.start_experiment(tag="t", kind="experiment", parent_commit="abc", description=TRICKY, agent="replay",
                                hypothesis=TRICKY)
    j.add_run(Run(experiment_id=exp_id, seed=1, status="crash", started=0.0, finished=1.0, error="boom",
                  log_tail=f"Traceback\n{TRICKY}\n", log_path="x.log"))
    j.finish_experiment(exp_id, status="crash", decided_by="loop", reason=TRICKY, error=TRICKY)
    return j


def _render(renderable: object) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def test_table_and_show_print_agent_text_verbatim(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rows = report.rows(j, "t")
    assert TRICKY in _render(report.to_table(rows))
    exp = j.experiments("t")[0]
    shown = _render(report.show(exp, j.runs(exp.id)))
    assert shown.count(TRICKY) >= 4  # description, hypothesis, decision, error, log tail


def test_tsv_keeps_one_line_per_experiment(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    tsv = report.to_tsv(report.rows(j, "t"))
    assert tsv.splitlines()[1].split("\t")[1:4] == ["0.000000", "0.0", "crash"]
