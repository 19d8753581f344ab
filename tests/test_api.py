"""The Python API as a notebook user calls it: ``import transferstats as ts``."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pytest

import transferstats as ts
from transferstats.analysis import mixed
from transferstats.cli import main
from transferstats.tasks import is_known

SMALL = ts.SimulationSettings(diversity_levels=(1, 2, 4), volume_levels=(10_000, 40_000), draws=2,
                              seeds=(1, 2), targets=("xnli", "panx"), max_languages=4)
QUICK = {"resamples": 60, "seed": 2, "jobs": 1}
MY_TASK = {"my_nli": {"role": "intermediate", "format": "classification", "metric": "accuracy",
                      "num_labels": 3}}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    ts.simulate_results(folder, SMALL)
    return folder


@pytest.fixture(scope="module")
def result(results_dir):
    return ts.analyze(results_dir, **QUICK)


@pytest.fixture(scope="module")
def flat(results_dir) -> pd.DataFrame:
    """The same results in the flat-table form, as a DataFrame."""
    return ts.load_results(results_dir).scores.drop(columns="n_examples")


def test_the_result_answers_in_tidy_form(result):
    assert result.verdict in ("supported", "refuted", "inconclusive", "confounded")
    effects = result.effects
    assert list(effects["term"]) == ["diversity", "volume", "diversity:volume", "diversity - volume"]
    assert {"term", "estimate", "se", "ci_low", "ci_high", "p_value", "unit"} <= set(effects.columns)
    terms = effects.set_index("term")
    assert (terms["ci_low"] < terms["estimate"]).all() and (terms["estimate"] < terms["ci_high"]).all()
    # The contrast row is the difference of the two effects, with the bootstrap's SE.
    assert terms.at["diversity - volume", "estimate"] == pytest.approx(
        terms.at["diversity", "estimate"] - terms.at["volume", "estimate"])
    assert terms.at["diversity - volume", "se"] == result.estimates["comparison"]["bootstrap_se"]
    assert np.isnan(terms.at["diversity - volume", "p_value"])
    assert result.design["n_mixes"] == 12 and abs(result.design["correlation"]) < 0.2
    assert result.problems.columns.tolist() == ["file", "location", "severity", "message"]


def test_summary_and_notebook_display(result):
    text = result.summary()
    assert f"verdict: {result.verdict}" in text and "diversity - volume" in text
    assert "\x1b[" not in text  # plain text, no terminal colour codes
    html = result._repr_html_()
    assert f"verdict: {result.verdict}" in html
    assert "<table" in html and "data:image/png;base64," in html


def test_cli_is_the_api_plus_the_report(results_dir, result, tmp_path):
    out = tmp_path / "report"
    assert main(["analyze", str(results_dir), "--resamples", "60", "--seed", "2", "--jobs", "1",
                 "--out", str(out)]) == 0
    written = json.loads((out / "estimates.json").read_text())
    assert written["verdict"] == result.verdict
    for effect, expected in zip(written["effects"], result.estimates["effects"], strict=True):
        assert effect["estimate"] == pytest.approx(expected["estimate"], rel=1e-12)
        assert effect["ci_low"] == pytest.approx(expected["ci_low"], rel=1e-12)
    paths = result.write_report(tmp_path / "from_python")
    assert {"report.html", "report.md", "estimates.json"} <= set(paths)
    assert json.loads(paths["estimates.json"].read_text())["effects"] == written["effects"]


def test_a_dataframe_gives_the_numbers_of_the_folder(flat, result):
    from_frame = ts.analyze(flat, **QUICK)
    pd.testing.assert_frame_equal(from_frame.effects, result.effects)
    assert from_frame.verdict == result.verdict


def test_dataframe_problems_name_the_frame_rows(flat):
    bad = flat.copy()
    label = bad.index[7]
    bad.loc[label, "value"] = 140.0
    with pytest.raises(ts.ResultsError) as caught:
        ts.analyze(bad, **QUICK)
    locations = [p.location for p in caught.value.problems if p.severity == "error"]
    assert locations and all(f"row {label}" in location for location in locations)


@pytest.mark.parametrize("settings, named", [
    ({"resample": 100}, "resample"),
    ({"outcome": "accuracy"}, "outcome"),
    ({"level": 1.5}, "level"),
    ({"interaction": "yes"}, "interaction"),
    ({"jobs": 0}, "jobs"),
    ({"tasks": 3}, "tasks"),
])
def test_unknown_keywords_and_bad_values_are_named(results_dir, settings, named):
    with pytest.raises(ValueError, match=named):
        ts.analyze(results_dir, **settings)


def test_keywords_are_the_spec_keys_with_their_defaults():
    spec = ts.load_spec()
    assert spec == ts.AnalysisSpec()
    assert (spec.outcome, spec.diversity, spec.resamples, spec.seed, spec.level, spec.interval) == (
        "auto", "n_tasks", 1000, 0, 0.95, "bca")


def test_tasks_given_to_a_call_are_known_in_that_call_only(flat, tmp_path):
    renamed = flat.assign(mix_tasks=flat["mix_tasks"].str.replace("mnli=", "my_nli=", regex=False))
    assert renamed["mix_tasks"].str.contains("my_nli=").any()
    with pytest.raises(ts.ResultsError, match="my_nli"):
        ts.analyze(renamed, **QUICK)
    result = ts.analyze(renamed, tasks=MY_TASK, **QUICK)
    assert result.settings.tasks[0].id == "my_nli"
    assert not is_known("my_nli")
    # The same task from a TOML file, and from an analysis spec's [tasks] table.
    task_file = tmp_path / "tasks.toml"
    task_file.write_text('[tasks.my_nli]\nrole = "intermediate"\nformat = "classification"\n'
                         'metric = "accuracy"\nnum_labels = 3\n')
    assert ts.analyze(renamed, tasks=str(task_file), **QUICK).verdict == result.verdict
    spec = tmp_path / "spec.toml"
    spec.write_text("[bootstrap]\nresamples = 60\n\n" + task_file.read_text())
    assert ts.analyze(renamed, spec=spec, seed=2, jobs=1).verdict == result.verdict
    assert not is_known("my_nli")
    # The report of such a result can still be written after the call returned.
    assert "report.html" in result.write_report(tmp_path / "custom")


def test_load_results_scopes_tasks_too(flat):
    renamed = flat.assign(mix_tasks=flat["mix_tasks"].str.replace("mnli=", "my_nli=", regex=False))
    assert ts.load_results(renamed, strict=False).errors
    assert not ts.load_results(renamed, tasks=MY_TASK).errors
    assert not is_known("my_nli")


def test_fit_crossed_is_a_documented_standalone_solver():
    rng = np.random.default_rng(4)
    n = 600
    data = pd.DataFrame({"a": rng.integers(0, 12, n), "b": rng.integers(0, 7, n),
                         "x": rng.normal(size=n)})
    data["y"] = (1 + 0.7 * data["x"] + rng.normal(0, 1.0, 12)[data["a"]]
                 + rng.normal(0, 0.5, 7)[data["b"]] + rng.normal(0, 0.4, n))
    fit = ts.fit_crossed(data, "y", fixed=["x"], random=["a", "b"])
    reference = mixed.fit_crossed_statsmodels(data, "y", ["x"], ["a", "b"])
    assert fit.method == "fast" and fit.converged
    pd.testing.assert_series_equal(fit.params, reference.params, rtol=1e-5)
    pd.testing.assert_series_equal(fit.bse, reference.bse, rtol=1e-3)
    assert list(fit.cov_params.index) == ["Intercept", "x"] == list(fit.cov_params.columns)
    assert set(fit.variance_components) == {"a", "b"}
    summary = fit.summary()
    assert "variance components" in summary and "Intercept" in summary and "REML" in summary


def test_fit_crossed_docstring_example_runs():
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(mixed.fit_crossed, "fit_crossed", globs={}):
        runner.run(test)
    outcome = runner.summarize(verbose=False)
    assert outcome.attempted >= 5 and outcome.failed == 0


def test_a_threshold_above_the_separable_correlation_still_says_confounded(flat):
    # Volume follows diversity almost exactly (|r| between 0.999 and 1): even with
    # max_correlation = 1 the grid is called confounded, never fitted to nonsense.
    collinear = flat.copy()
    n_tasks = collinear["mix_tasks"].str.count(r"\+") + 1
    per_task = (10_000 * n_tasks + collinear["mix"].str.len()) // n_tasks
    collinear["mix_tasks"] = [
        "+".join(f"{part.split('=')[0]}={count}" for part in tasks.split("+")) if tasks else ""
        for tasks, count in zip(collinear["mix_tasks"], per_task, strict=True)]
    result = ts.analyze(collinear, max_correlation=1.0, **QUICK)
    assert 0.999 <= abs(result.design["correlation"]) < 1
    assert result.verdict == "confounded"
