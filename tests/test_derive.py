"""Derived variables: diversity measures, volume, improvement over the baseline, run outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import LANGUAGE_SMALL
from transferstats.analysis.derive import (
    add_improvement,
    builtin_covariate_values,
    describe_mix,
    effective_number_of_tasks,
    model_frame,
    run_outcomes,
    target_in_mix,
    target_language_in_mix,
)
from transferstats.analysis.pipeline import analyze_loaded
from transferstats.analysis.spec import AnalysisSpec
from transferstats.languages import is_language_code
from transferstats.loading import load_results
from transferstats.simulate import flat_table, simulate_scores


def test_effective_number_of_tasks():
    assert effective_number_of_tasks(np.array([10, 10, 10, 10])) == pytest.approx(4.0)
    assert effective_number_of_tasks(np.array([100])) == pytest.approx(1.0)
    shares = np.array([0.9, 0.1])
    assert effective_number_of_tasks(np.array([900, 100])) == pytest.approx(
        np.exp(-(shares * np.log(shares)).sum()))
    assert 1 < effective_number_of_tasks(np.array([900, 100])) < 2


def test_describe_mix_counts_formats():
    mix = describe_mix("mnli=1000+qqp=1000+squad_v1=2000+hellaswag=4000")
    assert mix["n_tasks"] == 4 and mix["n_formats"] == 3 and mix["examples"] == 8000
    assert describe_mix("")["n_tasks"] == 0


def _scores():
    rows = []
    for mix, tasks in (("none", ""), ("m1", "mnli=1000"), ("m2", "mnli=500+squad_v1=500")):
        for seed in (1, 2):
            for language, base in (("en", 90.0), ("de", 80.0), ("fr", 78.0)):
                lift = {"none": 0.0, "m1": 1.0, "m2": 3.0}[mix] + (0.5 if seed == 2 else 0.0)
                rows.append({"run_id": f"{mix}.s{seed}", "model": "m", "mix": mix, "mix_tasks": tasks,
                             "target_task": "xnli", "seed": seed, "language": language,
                             "metric": "accuracy", "split": "test", "value": base + lift})
    return pd.DataFrame(rows)


def test_improvement_is_against_the_mean_baseline_of_the_same_language():
    trained, problems = add_improvement(_scores())
    assert problems == []
    # The baseline's two seeds average to base + 0.25.
    row = trained[(trained["run_id"] == "m2.s1") & (trained["language"] == "de")].iloc[0]
    assert row["baseline"] == pytest.approx(80.25) and row["improvement"] == pytest.approx(2.75)


def test_run_outcomes():
    outcomes = run_outcomes(_scores()).set_index("run_id")
    assert outcomes.at["m1.s1", "nonenglish_mean"] == pytest.approx(80.0)
    assert outcomes.at["m1.s1", "worst_language"] == pytest.approx(79.0)
    assert outcomes.at["m1.s1", "transfer_gap"] == pytest.approx(91.0 - 80.0)


@pytest.mark.parametrize("measure, expected", [("n_tasks", [0.0, 1.0]), ("n_formats", [0.0, 1.0]),
                                               ("effective_tasks", [0.0, 1.0])])
def test_model_frame_diversity_measures_are_log2(measure, expected):
    data, _ = model_frame(_scores(), outcome="improvement", diversity=measure)
    assert sorted(data.drop_duplicates("mix")["diversity"]) == pytest.approx(expected)
    assert set(data["language"]) == {"de", "fr"}  # zero-shot only by default
    assert (data["volume"] == np.log2(1000)).all()
    assert set(data["target_language"]) == {"xnli:de", "xnli:fr"}


def test_formats_measure_in_a_simulated_grid(small_results):
    loaded = load_results(small_results)
    tasks_only, _ = model_frame(loaded.scores, outcome="improvement", diversity="n_tasks")
    formats, _ = model_frame(loaded.scores, outcome="improvement", diversity="n_formats")
    assert (formats["n_formats"] <= formats["n_tasks"]).all()
    assert (formats["diversity"] <= tasks_only["diversity"]).all()


def test_language_codes_are_checked_against_the_registry():
    assert all(map(is_language_code, ["de", "sw", "yue", "fil", "tl"]))
    assert not any(map(is_language_code, ["xx", "xyz", "deu", "en-US", "DE", "und", "qaa", "", "german"]))


def test_describe_mix_of_languages_has_no_formats():
    mix = describe_mix("de=1000+sw=3000", "language")
    assert mix["n_tasks"] == 2 and np.isnan(mix["n_formats"]) and mix["examples"] == 4000


def test_target_in_mix_of_a_language_mix_is_the_evaluated_language_share():
    assert target_in_mix("de=1000+sw=3000", "xnli", "sw", "language") == 0.75
    assert target_in_mix("fil=1000+sw=3000", "xnli", "tl", "language") == 0.25  # same language
    assert target_in_mix("de=1000+sw=3000", "xnli", "fr", "language") == 0.0
    # A task mix: the target's own training task, whatever the language.
    assert target_in_mix("mnli=1000+qqp=3000", "xnli", "sw", "task") == 0.25


def test_target_language_in_mix_is_the_zero_one_form_of_the_share():
    assert target_language_in_mix("de=1000+sw=3000", "xnli", "sw") == 1.0
    assert target_language_in_mix("fil=1000+sw=3000", "xnli", "tl") == 1.0  # same language
    assert target_language_in_mix("de=1000+sw=3000", "xnli", "fr") == 0.0
    assert target_language_in_mix("", "xnli", "fr") == 0.0                  # the baseline
    with pytest.raises(ValueError, match="language mixes only"):
        target_language_in_mix("mnli=1000", "xnli", "en", "task")


def test_builtin_covariate_values_per_row():
    rows = pd.DataFrame({"mix_tasks": ["de=1000+sw=3000", "de=1000+sw=3000", "fr=500"],
                         "target_task": ["xnli", "xnli", "pawsx"],
                         "language": ["sw", "es", "fr"]})
    share = builtin_covariate_values(rows, "target_in_mix", "language")
    indicator = builtin_covariate_values(rows, "target_language_in_mix", "language")
    assert share.tolist() == [0.75, 0.0, 1.0]
    assert indicator.tolist() == [1.0, 0.0, 1.0]
    assert np.array_equal(indicator, (share > 0).astype(float))
    with pytest.raises(ValueError, match="language mixes only; these are task mixes"):
        builtin_covariate_values(rows, "target_language_in_mix", "task")


def test_target_language_in_mix_separates_from_diversity_at_a_fixed_budget():
    """At a fixed budget the share is 1/n for every evaluated language the mix holds, so it falls
    with diversity; the indicator does not."""
    mixes = ["de=6000", "de=3000+sw=3000", "de=1500+sw=1500+fr=1500+es=1500"]
    rows = pd.DataFrame({"mix_tasks": mixes, "target_task": "xnli", "language": "de"})
    assert builtin_covariate_values(rows, "target_in_mix", "language").tolist() == [1, 0.5, 0.25]
    assert builtin_covariate_values(rows, "target_language_in_mix", "language").tolist() == [1] * 3


def test_the_analysis_models_target_language_in_mix_as_zero_one():
    loaded = load_results(flat_table(*simulate_scores(LANGUAGE_SMALL)))
    spec = AnalysisSpec(resamples=50, seed=1, covariates=("target_language_in_mix",))
    result = analyze_loaded(loaded, spec, n_jobs=1, progress=False, companions=False)
    assert result.model_data["target_language_in_mix"].nunique() == 2, "0/1, centred"
