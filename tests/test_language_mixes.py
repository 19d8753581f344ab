"""Mixes of source languages analysed like mixes of tasks: no registration, no baseline needed,
the report in languages, ``target_in_mix`` per evaluated language (issue 11)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import LANGUAGE_SMALL
from transferstats.analysis.derive import NO_BASELINE_CHOICE
from transferstats.analysis.pipeline import analyze_loaded
from transferstats.analysis.spec import AnalysisSpec
from transferstats.loading import load_results
from transferstats.problems import ResultsError
from transferstats.report.terminal import summary, summary_text
from transferstats.simulate import flat_table, simulate_scores

QUICK = AnalysisSpec(resamples=50, seed=1, covariates=("target_in_mix",))


def _analyze(table, spec=QUICK):
    return analyze_loaded(load_results(table), spec, n_jobs=1, progress=False, companions=False)


@pytest.fixture(scope="module")
def result():
    """The analysis of the small language grid (no baseline), shared by the tests that read it."""
    return _analyze(flat_table(*simulate_scores(LANGUAGE_SMALL)))


def test_without_baseline_the_score_is_analysed_and_said_once(result):
    estimates = result.estimates
    assert (estimates["outcome"], estimates["outcome_choice"]) == ("score", NO_BASELINE_CHOICE)
    assert sum("no baseline runs" in warning for warning in estimates["warnings"]) == 1
    assert summary_text(result).count("no baseline runs") == 1
    # The simulated in-mix effect (6 points at full share) is recovered.
    effect = result.effect("target_in_mix")
    assert effect["ci_low"] <= LANGUAGE_SMALL.in_mix_effect <= effect["ci_high"]


def test_the_analysis_speaks_of_languages(result):
    estimates = result.estimates
    assert estimates["source_kind"] == "language"
    assert estimates["diversity_description"] == "number of source languages"
    units = {e["term"]: e["unit"] for e in estimates["effects"]}
    assert units["diversity"] == "points per doubling of the number of languages"
    assert units["volume"] == "points per doubling of training examples"
    assert "share of the mix's examples in the evaluated language" in \
        estimates["covariates"][0]["source"]
    text = " ".join(str(line) for line in summary(result).renderables)
    assert "language identity effects" in text and "task" not in text.replace("target", "")


def test_with_baselines_auto_stays_improvement():
    table = flat_table(*simulate_scores(replace(LANGUAGE_SMALL, baseline=True)))
    result = _analyze(table)
    assert result.estimates["outcome"] == "improvement"
    assert not any("no baseline runs" in w for w in result.estimates["warnings"])


def test_an_explicit_improvement_without_baseline_is_refused(language_table):
    with pytest.raises(ResultsError) as error:
        _analyze(language_table, replace(QUICK, outcome="improvement"))
    assert [(p.location, p.message) for p in error.value.problems if p.severity == "error"] == [(
        "outcome", "outcome 'improvement' needs baseline runs (mix 'none') and the results hold "
                   "none; analyse the score (outcome 'score', or 'auto', the default)")]


def test_task_formats_are_refused_for_language_mixes(language_table):
    with pytest.raises(ResultsError) as error:
        _analyze(language_table, replace(QUICK, diversity="n_formats"))
    assert [(p.location, p.message) for p in error.value.problems] == [(
        "diversity", "diversity measure 'n_formats' cannot describe language mixes: languages "
                     "have no task format; use n_tasks (the number of source languages) or "
                     "effective_tasks")]


def test_the_report_speaks_of_languages(result):
    from transferstats.report.render import compose

    text = "\n".join(part for block in compose(result) for part in (block.text, *block.items))
    assert "Which languages: identity effects" in text
    assert "the diversity of the source languages helps cross-lingual transfer more" in text \
        or "cannot tell whether diversity or volume helps cross-lingual transfer" in text
    assert "(chosen because the results hold no baseline runs)" in text
    assert "intermediate task" not in text.replace("intermediate-task training", "")
