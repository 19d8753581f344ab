"""Target-specific slopes in the analysis (issue 25): the structure chosen from the design, reduced
only where singular, Wald t intervals on Satterthwaite's degrees of freedom, each target's own
slopes beside their average, and what the report and estimates.json say of it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from transferstats.analysis.inference import satterthwaite
from transferstats.analysis.pipeline import analyze_loaded
from transferstats.analysis.slope_reduction import reduce_slopes
from transferstats.analysis.spec import AnalysisSpec
from transferstats.loading import load_results
from transferstats.problems import ResultsError
from transferstats.report.terminal import summary_text
from transferstats.simulate import SimulationSettings, flat_table, simulate_scores

GRID = SimulationSettings(draws=3, seeds=(1, 2), targets=("xnli", "panx", "xquad", "pawsx"),
                          max_languages=4, target_mix_sd=0.0, volume_effect=0.5)
SLOPES = {"xnli": 2.0, "panx": -0.5, "xquad": 1.0, "pawsx": 3.5}
SPEC = AnalysisSpec(resamples=50, seed=0, identity="off")


def _analyze(settings: SimulationSettings, spec: AnalysisSpec = SPEC):
    loaded = load_results(flat_table(*simulate_scores(settings)))
    return analyze_loaded(loaded, spec, n_jobs=1, progress=False)


@pytest.fixture(scope="module")
def sloped():
    return _analyze(replace(GRID, target_diversity_effects=tuple(SLOPES.items())))


def test_slopes_by_target_are_fitted_and_each_targets_slope_is_recovered(sloped):
    assert sloped.slopes.used and sloped.slopes.requested == ("diversity", "volume")
    assert "diversity" in sloped.slopes.fitted and "target_task" in sloped.slopes.fitted
    own = sloped.per_target_table.set_index(["target", "term"])["estimate"]
    for target, slope in SLOPES.items():
        assert abs(own[(target, "diversity")] - slope) < 0.6, target
    # The average over targets like these: its interval holds the targets' mean slope.
    diversity = sloped.term("diversity")
    assert diversity is not None and diversity.ci_low < np.mean(list(SLOPES.values())) < diversity.ci_high
    assert diversity.df is not None and diversity.df < 10, "the df count targets, not rows"
    assert sloped.heterogeneity.tested and sloped.heterogeneity.p_value < 1e-3


def test_the_intervals_are_lmertests_satterthwaite_intervals(sloped):
    data = sloped.model_data
    structure = sloped.structure
    reduction = reduce_slopes(data, structure.outcome, structure.primary_fixed,
                              list(structure.random), {"target_task": structure.slopes})
    table = satterthwaite(reduction.fit, {"diversity - volume": {"diversity": 1.0,
                                                                 "volume": -1.0}}).iloc[0]
    comparison = sloped.comparison
    assert comparison.estimate == pytest.approx(table["estimate"], rel=1e-9)
    assert (comparison.ci_low, comparison.ci_high) == pytest.approx(
        (table["ci_low"], table["ci_high"]), rel=1e-9)
    assert comparison.df == pytest.approx(table["df"], rel=1e-9)
    assert sloped.intervals.resampling == "wald t" and sloped.intervals.df_method == "Satterthwaite"


def test_the_report_and_terminal_say_what_the_interval_generalises_over(sloped, tmp_path):
    text = summary_text(sloped)
    assert f"random slopes by target: {sloped.slopes.fitted}" in " ".join(text.split())
    assert "targets like these 4" in " ".join(text.split())
    report = sloped.write_report(tmp_path / "report")["report.md"].read_text(encoding="utf-8")
    assert "targets like these 4" in report and "Satterthwaite" in report
    estimates = sloped.to_dict()
    assert estimates["random_slopes"]["fitted"] == sloped.slopes.fitted
    assert estimates["comparison"]["df"] == pytest.approx(sloped.comparison.df)


def test_slopes_without_variation_give_a_singular_fit_whose_steps_are_recorded():
    result = _analyze(GRID)   # every target has the same slopes
    steps = result.slopes.steps
    assert steps and steps[0]["singular"], "the correlated fit is singular"
    assert steps[-1]["decision"].endswith(("kept correlated", "kept")) or not result.slopes.fitted
    assert result.to_dict()["random_slopes"]["steps"] == [dict(s) for s in steps]


def test_random_slopes_on_is_refused_with_two_targets():
    two = replace(GRID, targets=("xnli", "panx"))
    with pytest.raises(ResultsError, match="at least 3"):
        _analyze(two, replace(SPEC, random_slopes="on"))
    assert not _analyze(two).slopes.used, "auto leaves them out"


def test_random_slopes_off_keeps_the_bootstrap(sloped):
    result = _analyze(replace(GRID, target_diversity_effects=tuple(SLOPES.items())),
                      replace(SPEC, random_slopes="off"))
    assert not result.slopes.used and result.intervals.resampling == "crossed cluster"
    width = result.comparison.ci_high - result.comparison.ci_low
    assert width < sloped.comparison.ci_high - sloped.comparison.ci_low, \
        "without slopes the interval ignores the variation between targets"


def test_kenward_roger_is_an_option_on_a_small_grid():
    small = replace(GRID, targets=("xnli", "panx", "xquad"), draws=2,
                    target_diversity_effects=(("xnli", 2.0), ("panx", -0.5), ("xquad", 1.0)))
    result = _analyze(small, replace(SPEC, df_method="kenward-roger"))
    assert result.intervals.df_method == "Kenward-Roger"
    satterthwaite_result = _analyze(small)
    kr, sw = result.comparison, satterthwaite_result.comparison
    assert kr.estimate == pytest.approx(sw.estimate, rel=1e-9), "the same fit"
    assert kr.df is not None and sw.df is not None and kr.df == pytest.approx(sw.df, rel=0.2)
