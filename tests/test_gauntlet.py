"""The gauntlet (issue 24, item 7): grids of shapes no one here designed, analysed end to end.

For each grid of ``tests/gauntlet_grids.py``: the analysis and its report run without a
traceback; every score is modelled, a baseline, or left out with its reason and target, exactly
as the grid's own accounting says; and the report and the terminal say nothing that contradicts
the design -- a language grid never speaks of intermediate tasks, a grid that varies one factor
never of the other's effect or of the contrast, no baselines are mentioned where there are none,
the model is named as in the data, and the warning count is the number of warnings printed.
"""

from __future__ import annotations

import re

import pytest

import transferstats as ts
from gauntlet_grids import BUILDERS, GauntletGrid
from transferstats.report.terminal import summary_text

#: The bundled grid's 999 run folders take long to write and read: slow-marked.
SLOW_GRIDS = {"bundled_factorial", "realistic_slopes", "several_models"}
RESAMPLES = 60


def _analysed(grid: GauntletGrid, tmp_path):
    options = {"resamples": RESAMPLES, "seed": 3, **grid.analyze_options}
    result = ts.analyze(grid.path, jobs=1, **options)
    paths = result.write_report(tmp_path / "report")
    return result, paths["report.md"].read_text(encoding="utf-8"), summary_text(result)


def _dropped(result) -> dict[tuple[str, str], int]:
    table: dict[tuple[str, str], int] = {}
    for entry in result.description.dropped:
        if entry.rows:
            table[(entry.reason, entry.target)] = table.get((entry.reason, entry.target), 0) + entry.rows
    return table


def _check_words(grid: GauntletGrid, result, text: str) -> None:
    """Words that would contradict the grid's design."""
    lowered = text.lower()
    if grid.kind == "language":
        assert "intermediate task" not in lowered
        assert "intermediate examples" not in lowered
    if grid.varies != "both":
        other = "volume" if grid.varies == "diversity" else "diversity"
        assert f"{other} effect" not in lowered
        assert "contrast" not in lowered
        assert "diversity − volume" not in text and "diversity - volume" not in text
        assert "minimum detectable difference" not in lowered
    if not grid.baseline:
        assert "baseline runs included" not in lowered
        assert "improvement over" not in lowered or "no baseline" in lowered
    assert "xlm-r" not in lowered or "xlm-r" in grid.model.lower()
    assert grid.model in text


def _check_warnings(result, terminal: str) -> None:
    counted = re.search(r"(\d+) warning\(s\)", terminal)
    assert counted is not None
    assert int(counted.group(1)) == len(result.warnings)
    flat = " ".join(terminal.split())
    for problem in result.problems[result.problems["severity"] == "warning"]["message"]:
        assert " ".join(problem.split()) in flat, f"warning not printed: {problem}"


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow)
                                  if name in SLOW_GRIDS else name for name in BUILDERS])
def test_grid_is_analysed_in_its_own_words(name, tmp_path):
    grid = BUILDERS[name](tmp_path / "grid")
    result, report, terminal = _analysed(grid, tmp_path)
    description = result.description
    assert description.model == grid.model
    assert description.kind == grid.kind
    assert description.varies == grid.varies
    assert set(description.targets) == set(grid.targets)
    assert description.n_rows == grid.modelled_rows
    assert {s.target: s.split for s in description.splits
            if s.target in grid.split} == grid.split
    assert _dropped(result) == grid.dropped, "every left-out score counted, per reason and target"
    failed = {x.target: x.runs for x in description.dropped if x.reason == "failed run"}
    assert failed == grid.failed_runs
    for text in (report, terminal):
        _check_words(grid, result, text)
    _check_warnings(result, terminal)
    estimates = result.to_dict()
    assert estimates["description"]["model"] == grid.model
    assert len(estimates["dropped"]) == len(description.dropped)


@pytest.mark.slow
def test_real_lm_eval_output_is_analysed_on_each_targets_split(lm_eval_grid, tmp_path):
    """Real lm-evaluation-harness output whose targets sit on different splits: both targets are
    analysed, each on the only split its runs hold, for every outcome, without a traceback."""
    for outcome in ("auto", "transfer_gap", "worst_language"):
        result = ts.analyze(lm_eval_grid, outcome=outcome, resamples=RESAMPLES, jobs=1)
        splits = {s.target: s.split for s in result.description.splits}
        assert len(set(splits.values())) == 2, "validation for one target, test for the other"
        dropped = result.description.dropped
        assert not [x for x in dropped if x.reason == "split"]
        # A run-level outcome a target cannot give (no English score for the gap) leaves that
        # target's runs out, counted; every other target is analysed.
        lost = {x.target for x in dropped if x.reason == "no outcome"}
        assert set(result.description.targets) | lost == set(splits)
        terminal = summary_text(result)
        _check_warnings(result, terminal)
        assert "intermediate task" not in terminal.lower()
    paths = result.write_report(tmp_path / "report")
    report = paths["report.md"].read_text(encoding="utf-8")
    assert "intermediate task" not in report.lower()
    assert result.description.model in report
