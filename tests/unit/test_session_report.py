"""`overnight report`: the session as pull-request markdown, checked against journals filled the way the loop fills
them (test_report's session: a baseline, a keep, a held keep, a discard, a refused run, a transfer check, flags)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from overnight.daemon import cli, report, session_report
from overnight.daemon.agents.cost import Usage
from overnight.daemon.journal import Journal, Run, Session
from overnight.daemon.noise import session_noise
from overnight.daemon.session_report import markdown, md_text

from .test_report import MIN_SIGMA, _by, _session

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "a | b\nc `code` <!-- hide the rest --> [click](http://x) **bold** @everyone fixes #1 under_score _em_"


def _md(j: Journal, tag: str = "s", root: Path | None = None, plot: Path | None = None) -> str:
    return markdown(j, tag, root=root or Path.cwd(), plot_path=plot)


def _section(text: str, title: str) -> list[str]:
    """The lines of one `## title` section, up to the next section."""
    lines = text.splitlines()
    start = lines.index(f"## {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def _table_rows(section: list[str]) -> list[list[str]]:
    """The body cells of the section's table, split on unescaped pipes only (as GitHub splits them)."""
    rows = [line for line in section if line.startswith("|")][2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in rows]


def _keeps(tmp_path: Path, deltas: Sequence[float], direction: str = "minimize", *, sandbox: str = "bwrap",
           config: Mapping[str, Any] | None = None, descriptions: Sequence[str] = ()) -> Journal:
    """A session with a baseline measured three times and one keep per Δ (evidence as the keep rule writes it)."""
    j = Journal(tmp_path / ".overnight" / "journal.db")
    j.create_session(Session("k", "overnight/k", "abc", {}, {"sandbox": sandbox, "min_sigma": MIN_SIGMA,
                                                             "direction": direction, **(config or {})}, 0.0))
    base = j.start_experiment(tag="k", kind="baseline", parent_commit="abc", description="baseline", agent="loop")
    for k, v in enumerate((2.40, 2.41, 2.42)):
        j.add_run(Run(experiment_id=base, seed=k, status="ok", started=0.0, finished=1.0, val_bpb=v, holdout_bpb=v + 0.02,
                      wall_seconds=60.0, cpu_seconds=50.0, device="cpu"))
    j.finish_experiment(base, status="keep", decided_by="keep rule", reason="baseline", val_bpb=2.41, holdout_bpb=2.43)
    incumbent = 2.41
    for i, delta in enumerate(deltas):
        description = descriptions[i] if i < len(descriptions) else f"change {i}"
        exp = j.start_experiment(tag="k", kind="experiment", parent_commit="abc", description=description, agent="replay")
        j.set_commit(exp, f"{exp:07d}ffffffff", f"refs/overnight/k/{exp}", "")
        for seed in range(2):
            j.add_run(Run(experiment_id=exp, seed=seed, status="ok", started=0.0, finished=1.0,
                          val_bpb=incumbent + delta, wall_seconds=60.0, cpu_seconds=50.0, device="cuda"))
        j.finish_experiment(exp, status="keep", decided_by="keep rule", reason="beyond noise",
                            evidence={"incumbent_mean": incumbent}, val_bpb=incumbent + delta)
        incumbent += delta
    return j


# -- the verdict and the warnings ----------------------------------------------------------------------


def test_the_verdict_states_baseline_to_incumbent_in_bpb_and_pooled_sigma_with_the_holdout(tmp_path: Path) -> None:
    j = _session(tmp_path)
    text = _md(j)
    base, kept = j.baseline("s"), _by(j, "restore a sane learning rate")
    assert base is not None and base.holdout_bpb is not None
    sigma = session_noise(j, "s", MIN_SIGMA).sigma
    want = (f"val_bpb 2.4100 → 2.3700 (−0.0400, {0.04 / sigma:.1f}σ) · holdout {base.holdout_bpb:.4f} → "
            f"{kept.holdout_bpb:.4f}")
    assert text.splitlines()[0] == "# Overnight session s"
    verdict = text.splitlines()[2]
    assert verdict.startswith(f"**{want}**") and f"`#{base.id}` → `#{kept.id}`" in verdict
    assert f"_Noise: {report.noise_text(session_noise(j, 's', MIN_SIGMA))}._" in text


def test_no_keep_says_the_baseline_stands(tmp_path: Path) -> None:
    text = _md(_keeps(tmp_path, []), "k")
    assert "**No experiment beat the baseline**: val_bpb 2.4100 · holdout 2.4300" in text
    assert "No experiment was kept" in "\n".join(_section(text, "Top wins"))


def test_an_unsealed_session_is_warned_about_in_reports_words(tmp_path: Path) -> None:
    text = _md(_session(tmp_path, sandbox="none"))
    assert f"**⚠ {report.UNSEALED}**" in text
    assert "REPORTED METRIC" not in text


def test_a_sealed_session_has_no_warning_and_a_reported_one_has_reports_warning(tmp_path: Path) -> None:
    assert "⚠ UNSEALED" not in _md(_session(tmp_path, sandbox="bwrap"))
    j = _keeps(tmp_path / "r", [-0.05], config={"measure": "reported", "metric": "val_loss"})
    text = _md(j, "k")
    assert f"**⚠ {report.REPORTED}**" in text and "UNSEALED" not in text
    assert text.splitlines()[2].startswith("**val_loss 2.4100 → 2.3600 (−0.0500")


def test_a_session_from_before_sealed_runs_says_so(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.create_session(Session("old", "overnight/old", "abc", {}, {}, 0.0))
    assert "(the session predates sealed runs)" in _md(j, "old")


# -- the tables ---------------------------------------------------------------------------------------


def test_wins_are_ordered_by_delta_with_sigma_multiples_runs_and_short_commits(tmp_path: Path) -> None:
    j = _keeps(tmp_path, [-0.01, -0.05, -0.03])
    text = _md(j, "k")
    sigma = session_noise(j, "k", MIN_SIGMA).sigma
    rows = _table_rows(_section(text, "Top wins"))
    assert [r[0] for r in rows] == ["`#3`", "`#4`", "`#2`"]
    assert [r[1] for r in rows] == ["−0.0500", "−0.0300", "−0.0100"]
    assert [r[2] for r in rows] == [f"{d / sigma:.1f}σ" for d in (0.05, 0.03, 0.01)]
    assert [r[3] for r in rows] == ["2", "2", "2"]
    assert rows[0][4:] == ["change 1", "`0000003`"]


def test_a_maximised_metric_lists_the_largest_gain_first(tmp_path: Path) -> None:
    rows = _table_rows(_section(_md(_keeps(tmp_path, [0.01, 0.05, 0.03], "maximize"), "k"), "Top wins"))
    assert [r[1] for r in rows] == ["+0.0500", "+0.0300", "+0.0100"]


def test_at_most_ten_wins_are_listed(tmp_path: Path) -> None:
    text = _md(_keeps(tmp_path, [-0.001 * (i + 1) for i in range(12)]), "k")
    assert len(_table_rows(_section(text, "Top wins"))) == 10
    assert "…and 2 more kept" in text


def test_a_hostile_description_stays_inert_in_one_table_row(tmp_path: Path) -> None:
    text = _md(_keeps(tmp_path, [-0.02], descriptions=[HOSTILE]), "k")
    section = _section(text, "Top wins")
    rows = _table_rows(section)
    assert len([line for line in section if line.startswith("|")]) == 3 and len(rows) == 1
    assert len(rows[0]) == 6  # the pipe inside the description did not add a column
    cell = rows[0][4]
    # Nothing opens a comment, a link or emphasis: every such character is escaped.
    assert not re.search(r"(?<!\\)<!--|(?<!\\)\[click|(?<!\\)\*\*bold", text) and "\n" not in cell
    assert r"a \| b c \`code\` \<!-- hide the rest --\> \[click\](http://x) \*\*bold\*\*" in cell
    assert "`@everyone` fixes `#1` under_score \\_em\\_" in cell  # no mention, no issue link; a word stays a word


def test_md_text_escapes_and_shortens() -> None:
    assert md_text("x|y\r\n\u2028z") == r"x\|y z"
    assert md_text("a" * 300, 10) == "a" * 9 + "…"
    assert md_text(r"back\slash & <b>") == r"back\\slash \& \<b\>"
    assert md_text("mail a@b.com") == "mail a@b.com"


def test_settings_and_hardware_come_from_the_session_and_its_runs(tmp_path: Path) -> None:
    j = _keeps(tmp_path, [-0.02], config={"budget": 60.0, "clock": "auto", "threads": 1, "slots": 2, "agent": "claude",
                                          "claude": {"model": "claude-x"}, "alpha": 0.02, "max_runs": 4,
                                          "measure": "harness", "metric": "val_bpb"})
    cells = dict((r[0], r[1]) for r in _table_rows(_section(_md(j, "k"), "Settings and hardware")))
    assert cells["budget"] == "60 s of training per run" and cells["budget clock"] == "auto"
    assert cells["threads per run"] == "1" and cells["slots (runs at once)"] == "2"
    assert cells["agent"] == "claude (claude-x)" and cells["keep rule"] == "α 0.02 · at most 4 runs per candidate"
    assert cells["sandbox"] == "bwrap" and cells["measured by"] == "harness · val_bpb (minimize)"
    assert cells["run devices"] == "cpu (3 runs), cuda (2 runs)"
    assert cells["report machine CPUs"] == str(os.cpu_count())
    assert "report machine torch" in cells and "report machine Python" in cells


def test_ablation_is_reported_when_the_journal_has_it(tmp_path: Path) -> None:
    j = _keeps(tmp_path, [-0.02, -0.03])
    assert "## Ablation" not in _md(j, "k")  # a journal from before `overnight ablate`

    class Ablated(Journal):
        def ablations(self, tag: str) -> list[dict[str, Any]]:
            return [{"experiment_id": 2, "description": "x | y", "effect": 0.021, "sigma": 2.6, "droppable": False,
                     "commit": "0000002ffff"},
                    {"experiment_id": 3, "description": "z", "effect": -0.001, "sigma": 0.1, "droppable": True,
                     "commit": "0000003ffff"},
                    {"description": "malformed: no experiment id"}]

    j.close()
    ablated = Ablated(tmp_path / ".overnight" / "journal.db")
    rows = _table_rows(_section(_md(ablated, "k"), "Ablation"))
    assert rows == [["`#2`", "+0.0210", "2.6σ", "no", r"x \| y", "`0000002`"],
                    ["`#3`", "−0.0010", "0.1σ", "yes", "z", "`0000003`"]]

    class Empty(Journal):
        def ablations(self, tag: str) -> list[dict[str, Any]]:
            return []

    ablated.close()
    assert "## Ablation" not in _md(Empty(tmp_path / ".overnight" / "journal.db"), "k")


def test_transfers_flags_and_counts(tmp_path: Path) -> None:
    j = _session(tmp_path)
    text = _md(j)
    transfer = _section(text, "Transfer checks")
    assert f"- {md_text(report.transfer_text(j.transfers('s')[0]))}" in transfer
    assert "62% of the gain survived" in "\n".join(transfer)
    held = _by(j, "memorise the validation split")
    assert f"- ⚠ `#{held.id}` is held for you" in "\n".join(_section(text, "Flags"))
    counts = _section(text, "Experiments by status")
    assert "4 experiments: 1 kept, 1 held, 1 discarded, 1 failed (the baseline not counted)." in counts
    assert _table_rows(counts) == [["keep", "1"], ["discard", "1"], ["invalid", "1"], ["held", "1"]]


def test_cost_sums_the_agents_usage_the_runs_compute_and_the_span(tmp_path: Path) -> None:
    j = _keeps(tmp_path, [])
    usage = Usage(input_tokens=100, cache_read_input_tokens=1000, cache_creation_input_tokens=10, output_tokens=50,
                  requests=1, cost_usd=0.25).as_dict()
    for i in range(2):
        exp = j.start_experiment(tag="k", kind="experiment", parent_commit="abc", description=f"d{i}", agent="claude",
                                 meta={"usage": usage})
        j.add_run(Run(experiment_id=exp, seed=0, status="ok", started=0.0, finished=1.0, val_bpb=2.5,
                      wall_seconds=1800.0, cpu_seconds=3600.0))
        j.finish_experiment(exp, status="discard", decided_by="keep rule", reason="worse", val_bpb=2.5)
    with j._tx() as db:  # a known span: created at 1000 s, the last one finished 2 h 05 min later
        db.execute("UPDATE experiments SET created = 1000.0 + id, finished = 1000.0 + 7500.0 * (id = 3)")
    cells = dict((r[0], r[1]) for r in _table_rows(_section(_md(j, "k"), "Cost")))
    assert cells["agent tokens in / cached / out"] == "2,220 / 2,000 / 100"
    assert cells["agent cost"] == "$0.50"
    assert cells["training compute (wall)"] == f"{(3 * 60 + 2 * 1800) / 3600:.2f} h over 5 runs"
    assert cells["training compute (CPU)"] == f"{(3 * 50 + 2 * 3600) / 3600:.2f} h over 5 runs"
    assert cells["session span"].startswith("2 h 05 min (1970-01-01 00:16 → 1970-01-01 02:21 UTC)")


def test_no_agent_usage_says_none_was_recorded(tmp_path: Path) -> None:
    cells = dict((r[0], r[1]) for r in _table_rows(_section(_md(_keeps(tmp_path, [-0.02]), "k"), "Cost")))
    assert cells["agent tokens in / cached / out"].startswith("none recorded") and cells["agent cost"] == "—"


# -- the plot and the empty session -------------------------------------------------------------------


def test_the_plot_is_written_and_linked_relative_to_the_reports_folder(tmp_path: Path) -> None:
    j = _session(tmp_path)
    out = tmp_path / "pr" / "report.png"
    text = _md(j, root=tmp_path / "pr", plot=out)
    assert "![val_bpb per experiment](report.png)" in _section(text, "Progress")
    assert out.read_bytes()[:8] == PNG
    deeper = _md(j, root=tmp_path, plot=tmp_path / "my figs" / "p.png")
    assert "![val_bpb per experiment](<my figs/p.png>)" in deeper
    assert "## Progress" not in _md(j)  # no plot asked for


def test_an_empty_session_gives_a_short_report(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.create_session(Session("e", "overnight/e", "abc", {}, {"sandbox": "bwrap", "budget": 30.0}, 0.0))
    plot = tmp_path / "e.png"
    text = markdown(j, "e", root=tmp_path, plot_path=plot)
    assert "Session e has no experiments yet." in text and "## Top wins" not in text
    assert "30 s of training per run" in text and not plot.exists()
    j.start_experiment(tag="e", kind="baseline", parent_commit="abc", description="baseline", agent="loop")
    assert "no experiments yet (one in flight)" in _md(j, "e")
    with pytest.raises(ValueError, match="no session 'nope'"):
        _md(j, "nope")


# -- the command --------------------------------------------------------------------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`overnight …`: through cli.main once it registers `report`; until then through a parser built the same way."""
    parser = cli.build_parser()
    registered = any(isinstance(a, argparse._SubParsersAction) and "report" in a.choices for a in parser._actions)
    if registered:
        rc = cli.main(argv)
    else:
        local = argparse.ArgumentParser(prog="overnight")
        local.add_argument("-C", "--workspace")
        session_report.add_parser(local.add_subparsers(dest="command", required=True))
        args = local.parse_args(argv)
        try:
            rc = session_report.cmd_report(args, Console(soft_wrap=True))
        except cli.CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            rc = 1
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_writes_the_report_and_its_plot_beside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _session(tmp_path).close()
    out = tmp_path / "pr" / "report.md"
    rc, said, _ = _cli(["-C", str(tmp_path), "report", "-o", str(out)], capsys)
    assert rc == 0 and f"wrote {out} (and {tmp_path / 'pr' / 'report.png'})" in said.replace("\n", "")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Overnight session s\n") and "![val_bpb per experiment](report.png)" in text
    assert (tmp_path / "pr" / "report.png").read_bytes()[:8] == PNG


def test_cli_prints_markdown_without_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _session(tmp_path).close()
    rc, said, _ = _cli(["-C", str(tmp_path), "report", "--tag", "s"], capsys)
    assert rc == 0 and said.startswith("# Overnight session s\n") and "## Progress" not in said
    assert "| `#" in said  # the table rows, not wrapped or read as rich markup
    assert not list(tmp_path.glob("*.png"))


def test_cli_refuses_an_unknown_tag_and_a_report_named_like_its_plot(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _session(tmp_path).close()
    rc, _, err = _cli(["-C", str(tmp_path), "report", "--tag", "nope"], capsys)
    assert rc == 1 and "no session 'nope'" in err and "sessions: s" in err
    rc, _, err = _cli(["-C", str(tmp_path), "report", "-o", str(tmp_path / "r.png")], capsys)
    assert rc == 1 and "overwritten by its own plot" in err


def test_cli_on_an_empty_session_writes_no_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    j = Journal(tmp_path / ".overnight" / "journal.db")
    j.create_session(Session("e", "overnight/e", "abc", {}, {"sandbox": "bwrap"}, 0.0))
    j.close()
    rc, said, _ = _cli(["-C", str(tmp_path), "report", "-o", str(tmp_path / "r.md")], capsys)
    assert rc == 0 and "wrote" in said and "(and" not in said and not (tmp_path / "r.png").exists()
    assert "has no experiments yet" in (tmp_path / "r.md").read_text(encoding="utf-8")
