"""The same battery for every registered reproduction (docs/design.md, "Reproductions"): its record
(source, artefact, setting rows naming the authors' files, both scales with specs the sweep parser
accepts), its quick scale end to end through the one runner (every output file, the comparison
table's columns and verdicts, a figure as PNG and PDF), a second call that trains nothing and
gives the same rows, and its line in ``probe reproduce --list``."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from probe.cli import main
from probe.reproduce.registry import SCALES, VERDICTS, all_reproductions, recorded_verdict
from probe.reproduce.runner import COLUMNS, RECORD, reproduce
from probe.train.sweep import parse_spec

NAMES = [rec.name for rec in all_reproductions()]
OUTPUTS = ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD)


@pytest.fixture(params=NAMES)
def rec(request):
    return next(r for r in all_reproductions() if r.name == request.param)


def test_record(rec):
    assert rec.paper and rec.figure and rec.trains and rec.claims
    assert re.match(r"[A-Z][^{}]*\b(19|20)\d\d\b", rec.paper), f"{rec.name}: the source cites authors and year"
    assert rec.artefact.repository and rec.artefact.commit and rec.artefact.path and rec.artefact.description
    assert set(rec.scales) == set(SCALES)
    for row in rec.setting:
        assert row.setting and row.authors and row.probe, (rec.name, row)
        # a file of the authors' repository, or, where they released no code, the paper's section
        assert (row.authors_file.endswith((".py", ".ipynb", ".txt", ".md", ".sh", ".csv"))
                or row.authors_file.startswith("arXiv ") and rec.artefact.repository.startswith("arxiv.org/")), \
            (rec.name, row)
    specs = {name: parse_spec(sc.spec) for name, sc in rec.scales.items()}  # both scales are sweep specs
    for sc in rec.scales.values():
        for st in sc.stages:  # so are their further stages
            assert parse_spec(st.spec).axes
    assert rec.scales["quick"].spec != rec.scales["paper"].spec
    assert rec.scales["quick"].time != "unmeasured", "the quick scale's time is measured"
    assert all(specs.values())


def test_quick_scale_through_the_runner(rec, quick_reproduction):
    out, res = quick_reproduction(rec.name)
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": rec.name, "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv", keep_default_na=False)
    assert tuple(table.columns) == COLUMNS and len(table) >= 1
    assert set(table["verdict"]) <= set(VERDICTS)
    assert all(table["source"].str.len() > 0) and all(table["paper"].str.len() > 0)
    assert len(table) == len(res.analysis.rows)
    assert len(pd.read_csv(out / "runs.csv")) >= 1
    assert (out / "comparison.md").read_text().count("\n") == len(table) + 2  # header, rule, rows


def test_a_second_call_trains_nothing(rec, quick_reproduction, tmp_path):
    out, res = quick_reproduction(rec.name)
    copy = tmp_path / rec.name
    shutil.copytree(out, copy)
    stamp = {f: f.stat().st_mtime_ns for f in copy.rglob("run.h5")}  # every stage's runs
    assert stamp
    again = reproduce(rec.name, copy, "quick")
    assert {f: f.stat().st_mtime_ns for f in stamp} == stamp
    assert again.analysis.rows == res.analysis.rows


def test_listed(rec, capsys):
    assert main(["reproduce", "--list"]) == 0
    text = capsys.readouterr().out
    assert rec.name in text and rec.artefact.path in text
    assert f"scale quick: {rec.scales['quick'].time}" in text
    assert f"last recorded verdict: {recorded_verdict(rec)}" in text
