"""probe reproduce nanda-restricted (docs/design.md, "Reproductions"): the reader of the authors'
released figures and the rules applied to them, the reference numbers, the phase rules, the quick
scale end to end (golden: the orderings of the authors' curves), and rows recomputed from the runs."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest

import probe.reproduce.nanda_restricted as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("nanda-restricted")


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("nanda-restricted")
    assert rec.artefact.repository == m.FIG_REPO and rec.artefact.commit == m.FIG_COMMIT
    assert all(f in rec.artefact.description for f in (m.FIG_LOSS, m.FIG_EXCLUDED, m.FIG_ACC, m.FIG_KEYS))
    assert {s.authors_file for s in rec.setting} <= {m.TRAIN_CODE, m.HELPERS}
    assert all(s.authors and s.probe for s in rec.setting)
    paper = rec.scales["paper"].spec
    assert "p: 113" in paper and "train_fraction: 0.3" in paper and "steps: 40000" in paper
    assert "steps: 1000" in rec.scales["quick"].spec and rec.scales["quick"].time != "unmeasured"


def test_the_reference_numbers_are_the_released_figures():
    """As figure_milestones reads them from the four PDFs (commit dfbd38f): the excluded loss's
    minimum at 1,300 and peak at 10,300; restricted loss below 1 at 6,000, test loss at 9,900; test
    loss below 0.1 at 10,400 and 99% test accuracy at 10,600; key frequencies 14, 35, 41, 42, 52."""
    a = m.AUTHORS
    assert (a["memorisation_end"], a["formation_end"]) == (1300, 10300)
    assert (a["restricted_1"], a["test_loss_1"], a["test_loss_0.1"], a["test_acc_0.99"]) == (6000, 9900, 10400, 10600)
    assert a["memorisation_end"] < a["restricted_1"] < a["test_loss_1"] < a["formation_end"] <= a["test_loss_0.1"]
    ratio, rises = m._rises(a)
    assert rises and ratio == pytest.approx(43.6, abs=0.05)
    assert m.AUTHORS_KEY_FREQS == (14, 35, 41, 42, 52)


def _plotly_like_pdf(curves: dict[str, tuple[list[float], list[float]]]) -> bytes:
    """A page drawn as plotly's PDF export draws a log-scale line plot: white grid lines (and a zero
    line half a width off), tick labels and legend texts as glyph codes with a ToUnicode CMap,
    coloured polylines, legend sample lines. Plot: epochs 0..3,000 at x = 60 + 0.1 epoch; loss at
    y = 200 + 25 log10(loss)."""
    def hexstr(s: str) -> str:
        return "<" + "".join(f"{ord(c):04X}" for c in s) + ">"

    def text(x: float, y: float, s: str) -> str:
        glyphs = " 6 0 Td ".join(f"{hexstr(c)} Tj" for c in s)
        return f"q\n0 0 0 rg\nBT\n/F1 12 Tf\n1 0 0 1 {x} {y} Tm\n{glyphs}\nET\nQ\n"

    def line(colour: str, pts: list[tuple[float, float]]) -> str:
        return (f"q\n{colour} RG\n{pts[0][0]} {pts[0][1]} m\n" + "".join(f"{x} {y} l\n" for x, y in pts[1:])
                + "S\nQ\n")

    white = "1 1 1"
    body = ["1 0 0 1 0 0 cm\n", "q\n.9 .9 .9 rg\n60 60 300 200 re\nf\nQ\n"]
    body += [line(white, [(x, 60), (x, 260)]) for x in (160.0, 260.0, 360.0)]
    body.append(line(white, [(59.625, 60), (59.625, 260)]))  # the zero line
    body += [line(white, [(60, y), (360, y)]) for y in (100.0, 150.0, 200.0)]
    for label, centre in (("0", 60), ("1k", 160), ("2k", 260), ("3k", 360)):
        body.append(text(centre - 3.3 * len(label), 48, label))
    for label, y in (("100μ", 100.0), ("0.01", 150.0), ("1", 200.0)):
        body.append(text(30, y - 3.15, label))
    colours = ["0.3882 0.4314 0.9804", "0.9373 0.3333 0.2314"]
    for k, (name, (xs, ys)) in enumerate(curves.items()):
        pts = [(60 + 0.1 * x, 200 + 25 * math.log10(y)) for x, y in zip(xs, ys)]
        body.append(line(colours[k], pts))
        body.append(line(colours[k], [(365, 243.5 - 15 * k), (375, 243.5 - 15 * k)]))
        body.append(text(380, 240 - 15 * k, name))
    cmap = ("/CIDInit /ProcSet findresource begin\nbegincmap\n1 begincodespacerange\n<0000> <FFFF>\n"
            "endcodespacerange\n1 beginbfchar\n<03BC> <03BC>\nendbfchar\n1 beginbfrange\n<0020> <007E> <0020>\n"
            "endbfrange\nendcmap\n")
    pdf = b"%PDF-1.4\n"
    for n, s in enumerate(("".join(body), cmap), start=1):
        data = zlib.compress(s.encode("utf-8"))
        head = f"{n} 0 obj\n<</Filter /FlateDecode /Length {len(data)}>>\nstream\n".encode()
        pdf += head + data + b"\nendstream\nendobj\n"
    return pdf + b"%%EOF\n"


def test_a_released_figure_is_read_back_into_its_curves():
    curves = {"test": ([0, 1000, 2000, 3000], [4.0, 2.0, 0.05, 1e-3]),
              "train": ([0, 1000, 2000, 3000], [4.0, 1e-3, 1e-4, 1e-4])}
    got = m.read_plotly_pdf(_plotly_like_pdf(curves))
    assert sorted(got) == ["test", "train"]
    for name, (xs, ys) in curves.items():
        np.testing.assert_allclose(got[name][0], xs, atol=1e-6)
        np.testing.assert_allclose(got[name][1], ys, rtol=1e-6)
    # the test curve crosses 1 between its vertices at 1,000 (2) and 2,000 (0.05), in log scale at 1,188
    assert m.first_plotted(*got["test"], 1.0) == 1200.0
    assert m.first_plotted(*got["test"], 1.0, every=1) == 1188.0
    assert math.isinf(m.first_plotted(*got["train"], 1e-5))
    with pytest.raises(ValueError):
        m.read_plotly_pdf(b"%PDF-1.4\n%%EOF\n")


def test_the_rules_applied_to_the_figures():
    """Synthetic curves: excluded loss falls to 0.5 at 200, peaks at 6 at 800; the boundaries, the
    values there and the crossings come out at their checkpoints."""
    x = np.arange(0.0, 1300.0, 100.0)
    excluded = np.array([4, 1, 0.5, 0.6, 1, 2, 4, 5, 6, 5, 4, 4, 4], dtype=float)
    train = np.geomspace(4, 1e-6, len(x))
    test = np.array([4, 5, 6, 6, 6, 5, 4, 2, 0.9, 0.2, 0.05, 0.01, 0.01])
    restricted = np.array([4, 4, 3, 2, 0.8, 0.3, 0.1, 0.05, 0.01, 0.01, 0.01, 0.01, 0.01])
    acc = np.array([0, 0, 0, 0, 0, 0.1, 0.2, 0.5, 0.9, 0.98, 0.995, 1, 1])
    got = m.figure_milestones({"test_loss": (x, test), "trig_loss": (x, restricted)},
                              {"excl_full": (x, excluded), "train loss": (x, train)}, {"test acc": (x, acc)})
    assert (got["memorisation_end"], got["formation_end"]) == (200.0, 800.0)
    assert (got["excluded_low"], got["excluded_peak"]) == (0.5, 6.0)
    assert got["train_at_low"] == pytest.approx(train[2]) and got["train_at_peak"] == pytest.approx(train[8])
    crossings = (got["restricted_1"], got["test_loss_1"], got["test_loss_0.1"], got["test_acc_0.99"])
    assert crossings == (400, 800, 1000, 1000)
    assert m.key_frequencies({"excl 14": (x, x), "excl 3": (x, x), "train": (x, x)}) == (3, 14)


def test_the_phase_boundaries_rule():
    steps = np.array([0, 100, 200, 300, 400, 500])
    excluded = np.array([4.0, 2.0, 3.0, 9.0, 8.0, 1.0])  # falls (memorisation), rises, peaks, falls
    assert m.boundaries(steps, excluded) == (100.0, 300.0)
    assert m.boundaries(steps, np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])) == (0.0, 0.0)  # never rises
    assert all(math.isnan(v) for v in m.boundaries(np.array([]), np.array([])))


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "nanda-restricted", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 8
    assert set(table["verdict"]) <= {"agrees", "differs"}
    assert all(m.FIG_REPO in s for s in table["source"])
    verdict = dict(zip(table["quantity"], table["verdict"]))
    # the orderings of the authors' curves: restricted loss falls long before test loss; excluded loss
    # rises while the train loss falls
    assert verdict["restricted loss falls below 1 before the test loss does"] == "agrees"
    assert verdict["excluded loss rises during circuit formation while the train loss does not"] == "agrees"
    runs = pd.read_csv(out / "runs.csv")
    r = runs.iloc[0]
    assert r["restricted_1"] < r["test_loss_1"] / 2
    assert r["memorisation_end"] < r["formation_end"] and r["excluded_peak"] > 2 * r["excluded_low"]


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """The same run stopped at 200 steps: its excluded-loss peak, test-loss crossings and key
    frequencies are those of the shorter run, and the rows say so."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    spec = m._spec(m.QUICK_P, m.QUICK_FRACTION, 200, 50, m.QUICK_MODEL)
    run_sweep(parse_spec(spec), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    after = {r.quantity: r for r in changed.rows}
    assert set(after) == set(before)
    q = "steps to test loss < 0.1"
    assert after[q].paper == before[q].paper == "10,400" and after[q].probe.startswith("never")
    assert after[q].probe != before[q].probe
    q = "end of circuit formation: the excluded loss's peak"
    assert after[q].probe != before[q].probe
