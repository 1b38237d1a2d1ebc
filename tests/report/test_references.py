"""The quoted rows: `references.json` is well formed, the report shows every row marked quoted
with its source and standard error, and no quoted row enters the paired differences or plots."""

from __future__ import annotations

import html
import json
import math
import os
import re

import matplotlib
import pytest

from automem.report import build_report, find_versions, plots, reference_rows
from automem.report.tables import REFERENCE_KINDS, REFERENCES_PATH, check_references, fmt
from tests.report.conftest import PROGRESSIONS

GAMES = ("crafter", "minihack", "nethack")


def _raw_refs():
  with open(REFERENCES_PATH, encoding="utf-8") as f:
    return json.load(f)


def test_the_references_file_is_valid():
  refs = _raw_refs()
  check_references(refs)
  assert set(GAMES) <= set(refs["games"])
  for game in GAMES:
    rows = refs["games"][game]
    assert {r["kind"] for r in rows} == set(REFERENCE_KINDS), game
    versions = [r["version"] for r in rows]
    assert len(set(versions)) == len(versions), f"{game}: a version is listed twice"
    for r in rows:
      assert isinstance(r["version"], str) and r["version"].strip()
      mean = r["progression_mean"]
      assert isinstance(mean, int | float) and not isinstance(mean, bool)
      assert math.isfinite(mean) and 0 <= mean <= 100, r
      assert r["source"].startswith("https://"), r
      assert r["kind"] in REFERENCE_KINDS
      if r["kind"] == "leaderboard":  # the leaderboard publishes both for every entry
        assert r["progression_se"] >= 0 and isinstance(r["n"], int) and r["n"] > 0, r
        assert "/submissions/" in r["source"] and r["source"].endswith("/summary.json"), r


@pytest.mark.parametrize("change, message", [
    ({"version": ""}, "version must be non-empty"),
    ({"version": None}, "version must be non-empty"),
    ({"source": " "}, "source must be non-empty"),
    ({"version": "a | b"}, "without '\\|'"),
    ({"progression_mean": 120.0}, "not a number in \\[0, 100\\]"),
    ({"progression_mean": "33.1"}, "not a number in \\[0, 100\\]"),
    ({"progression_mean": True}, "not a number in \\[0, 100\\]"),
    ({"progression_mean": float("nan")}, "not a number in \\[0, 100\\]"),
    ({"progression_se": -1.0}, "progression_se -1.0"),
    ({"n": 0}, "n 0 is not a positive integer"),
    ({"kind": "blog"}, "kind 'blog' is not one of"),
])
def test_a_bad_row_is_refused_with_where_it_is(tmp_path, change, message):
  refs = _raw_refs()
  refs["games"]["minihack"][1].update(change)
  path = tmp_path / "references.json"
  path.write_text(json.dumps(refs))
  with pytest.raises(ValueError, match=rf"references\['minihack'\]\[1\]: .*{message}"):
    reference_rows(str(path))
  with pytest.raises(ValueError, match="expected"):
    check_references({"crafter": []})


def _table_after(body: str, marker: str) -> tuple[list[str], list[list[str]]]:
  """The header cells and body rows (cells as HTML) of the first table after `marker`."""
  table = body[body.index(marker):].split("<table>", 1)[1].split("</table>", 1)[0]
  head = re.findall(r"<th>(.*?)</th>", table)
  rows = [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr><td>.*?</tr>", table)]
  return head, rows


@pytest.fixture(scope="module")
def built(tiny_runs, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("report"))
  report = build_report(find_versions(tiny_runs), out, lineage=[], ledger=[])
  with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
    page = f.read()
  return report, page


def test_the_report_shows_every_reference_row_quoted_with_its_source(built):
  report, page = built
  expected = reference_rows()["crafter"]
  assert report["references"]["crafter"] == expected
  body = page.split("<body>", 1)[1]
  head, rows = _table_after(body, "Quoted, not measured here")
  assert head == ["version", "kind", "n", "progression_mean", "progression_se", "source"]
  assert len(rows) == len(expected)
  for ref, cells in zip(expected, rows):
    cell = dict(zip(head, cells))
    assert cell["version"] == html.escape(f"{ref['version']} (quoted)")
    assert cell["kind"] == ref["kind"]
    assert cell["progression_mean"] == fmt(ref["progression_mean"])
    assert cell["progression_se"] == fmt(ref.get("progression_se"))
    assert cell["n"] == fmt(ref.get("n"))
    link = re.fullmatch(r'<a href="([^"]+)" title="([^"]+)">([^<]+)</a>', cell["source"])
    assert link and link[1] == ref["source"] and link[2] == html.escape(ref["setting"]), cell
  # the page is still self-contained: sources are links to follow, nothing is loaded from them
  assert not re.search(r"""(src|srcset)=["']?https?:""", page) and "<link" not in page


def test_quoted_rows_take_no_part_in_the_paired_differences(built, tmp_path):
  report, page = built
  measured = report["table"]["crafter"]
  assert [r["version"] for r in measured] == list(PROGRESSIONS)
  assert not any(r["quoted"] for r in measured)
  v0, v1 = (PROGRESSIONS[k] for k in ("v0", "v1"))
  diffs = [v1[k] - v0[k] for k in v0]
  assert measured[1]["vs_v0_pairs"] == len(diffs)
  assert measured[1]["vs_v0_diff_mean"] == pytest.approx(sum(diffs) / len(diffs))
  assert not any(k.startswith("vs_") for r in report["references"]["crafter"] for k in r)
  body = page.split("<body>", 1)[1]
  head, rows = _table_after(body, "<h2>crafter</h2>")
  assert "vs_v0_diff_mean" in head and [r[0] for r in rows] == ["v0", "v1"]
  head, _ = _table_after(body, "Quoted, not measured here")
  assert not any(h.startswith("vs_") for h in head)
  # the progression plot draws the measured rows only, even when handed a quoted one
  table = {"crafter": [*measured, {**reference_rows()["crafter"][0], "progression_ci95": 0.0}]}
  with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep tick labels as text
    paths = plots.progression_plot(table, str(tmp_path))
  with open(next(p for p in paths if p.endswith(".svg")), encoding="utf-8") as f:
    svg = f.read()
  assert ">v1<" in svg and "AutoMem paper" not in svg
