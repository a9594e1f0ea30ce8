"""docs/reproductions.md is the index of the registered reproductions: one row per registered
reproduction, linking its page, whose verdict is the one counted from its committed comparison."""

from __future__ import annotations

import re
from pathlib import Path

from probe.reproduce.registry import RECORDS, all_reproductions, recorded_verdict

INDEX = Path(__file__).resolve().parents[2] / "docs" / "reproductions.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in INDEX.read_text().splitlines():
        m = re.match(r"\| \[([a-z0-9-]+)\]\(reproductions/([a-z0-9-]+)/README\.md\) \|", line)
        if m:
            assert m.group(1) == m.group(2), line
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_every_registered_reproduction_has_its_row_page_and_recorded_verdict():
    rows = _rows()
    names = {rec.name for rec in all_reproductions()}
    assert set(rows) == names, "docs/reproductions.md's index and the registry list other reproductions"
    for rec in all_reproductions():
        assert (RECORDS / rec.name / "README.md").is_file(), rec.name
        verdict = rows[rec.name][-1]
        assert verdict.startswith(recorded_verdict(rec)), (rec.name, verdict, recorded_verdict(rec))
