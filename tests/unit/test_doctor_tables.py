"""`overnight doctor --repair` rebuilds a damaged journal table by table: every table of the schema is rescued."""

from __future__ import annotations

from pathlib import Path


def test_doctor_rescues_every_table_but_the_derived_cache(tmp_path: Path) -> None:
    """A damaged journal is rebuilt table by table: a table added to the schema must be added to the rescue too."""
    import sqlite3

    from overnight.daemon import doctor
    from overnight.daemon.journal import Journal

    Journal(tmp_path / "j.db").close()
    db = sqlite3.connect(tmp_path / "j.db")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}
    db.close()
    assert tables - {"line_history"} == set(doctor._TABLES)
