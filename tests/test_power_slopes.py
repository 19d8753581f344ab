"""``transferstats power`` with target-specific slopes (issue 25): the analysed model decides its
slopes with analyze's own rule, simulated slope variation costs power, analyze's Wald t verdict
keeps the false-positive rate where the intercept-only analysis loses it, and a pilot's slopes
fit recovers the slope SDs and correlation of the grid that made it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from transferstats import loading
from transferstats.analysis import power as pw
from transferstats.analysis.description import describe
from transferstats.analysis.model import build_model
from transferstats.analysis.spec import AnalysisSpec
from transferstats.commands.power import grid_design
from transferstats.grid.spec import grid_from_dict
from transferstats.simulate import SimulationSettings, flat_table, simulate_scores
from transferstats.tasks import task_scope

POOL = ["mnli", "anli", "qqp", "sst2", "squad_v1", "squad_v2", "hellaswag", "commonsenseqa",
        "cosmosqa", "ccg"]
#: 16 mixes (1, 2, 4, 8 tasks x 10k, 40k examples x 2 draws), three zero-shot languages per
#: target, two seeds.
GRID = {"name": "slopes", "model": "xlm-roberta-base", "targets": ["xnli", "pawsx", "xquad"],
        "languages": ["en", "de", "es", "zh"], "seeds": [1, 2],
        "factorial": {"diversity": [1, 2, 4, 8], "volume": [10000, 40000], "draws": 2,
                      "tasks": POOL}}


def design_of(**changes) -> pw.GridDesign:
    grid = grid_from_dict(GRID | changes, "test")
    with task_scope(grid.tasks):
        return grid_design(grid)[0]


def analyze_structure(design: pw.GridDesign, mode: str = "auto"):
    """The model analyze itself builds on a simulated grid of the design."""
    sim = pw._simulator(design, pw.default_components(), pw.analysis_model(design))
    table = pw.results_table(sim, pw.simulate_outcome(sim, np.random.default_rng(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        described = describe(loading.load_results(table), AnalysisSpec())
    return build_model(described.description, described.data, described.mixes, interaction=True,
                       target_mix=True, identity="auto", random_slopes=mode)[1]


@pytest.mark.parametrize("targets", [["xnli", "pawsx", "xquad"], ["xnli", "pawsx"]])
def test_the_analysed_model_has_the_slopes_analyze_gives_the_design(targets):
    design = design_of(targets=targets)
    model = pw.analysis_model(design)
    structure = analyze_structure(design)
    assert model.slopes == structure.slopes
    assert model.slopes_reason == structure.slopes_reason
    if len(targets) >= 3:
        assert model.slopes == ("diversity", "volume") and model.bootstrap == "none"
        assert model.stand_in == pw.STAND_IN_SLOPES
        assert "(1 + diversity + volume | target_task)" in model.formula
    else:
        assert model.slopes == () and model.bootstrap != "none"
        assert "slopes that differ between targets need at least 3" in model.slopes_reason
        # analyze's refusal of "on" on two targets, in power's error.
        with pytest.raises(pw.PowerError, match="at least 3"):
            pw.analysis_model(design, random_slopes="on")
    assert pw.analysis_model(design, random_slopes="off").slopes == ()


def test_the_slopes_verdict_is_shift_equivariant():
    """REML variance parameters, the standard error and Satterthwaite's df do not move when D
    times the diversity column is added, and the estimate moves by D: one slopes fit per
    simulated grid gives the verdict at every true difference."""
    design = design_of()
    components = pw.default_components(diversity_slope=0.8, volume_slope=0.4,
                                       slope_correlation=-0.5)
    sim = pw._simulator(design, components, pw.analysis_model(design))
    y = pw.simulate_outcome(sim, np.random.default_rng(4))
    estimate, se, df = pw._analyse_slopes(sim, y)
    assert np.isfinite([estimate, se, df]).all() and df < 10
    moved, moved_se, moved_df = pw._analyse_slopes(sim, y + 0.7 * sim.X[:, 1])
    assert moved == pytest.approx(estimate + 0.7, abs=1e-5)
    assert moved_se == pytest.approx(se, rel=1e-4)
    assert moved_df == pytest.approx(df, rel=1e-3)


def test_simulated_slopes_have_the_asked_covariance():
    """The generative model's per-target slopes have the SDs and the correlation given: each
    target's slopes, read back from grids without other noise, over 600 grids of 3 targets (the
    SDs within 5%, three standard errors; the correlation within 0.05, three)."""
    design = design_of()
    components = pw.Components(sd=dict.fromkeys(pw.COMPONENTS, 0.0) | {"seed": 1e-6},
                               slope_sd={"diversity": 1.5, "volume": 0.5},
                               slope_correlation=-0.6)
    sim = pw._simulator(design, components, pw.analysis_model(design, random_slopes="off"))
    rng = np.random.default_rng(1)
    target = sim.generative_codes[0]
    slopes = []
    for _ in range(600):
        y = pw.simulate_outcome(sim, rng)
        slopes += [np.linalg.lstsq(sim.slope_columns[target == t], y[target == t], rcond=None)[0]
                   for t in range(len(design.targets))]
    drawn = np.array(slopes).T
    assert np.std(drawn, axis=1, ddof=1) == pytest.approx([1.5, 0.5], rel=0.05)
    assert np.corrcoef(drawn)[0, 1] == pytest.approx(-0.6, abs=0.05)


def test_slope_variation_costs_power_and_the_slopes_verdict_keeps_its_error_rate():
    """At the same true difference, targets whose slopes differ (SD 1 per doubling) leave far
    less power than common slopes. analyze's Wald t verdict keeps the false-positive rate near
    0.05, where the intercept-only analysis (random_slopes = "off") of the same grids gives a
    directional verdict most of the time: the bound below separates the two.

    With 40 simulations at a true rate of 0.05, 8 or more directional verdicts have probability
    0.0007, so the bound of 7 (0.175) does not fail by chance; an analysis blind to the slopes
    (rate about 0.5 on these grids) passes it with probability below 0.001."""
    design = design_of()
    common = pw.default_components(diversity_slope=0.0, volume_slope=0.0)
    varied = pw.default_components(diversity_slope=1.0, volume_slope=1.0, slope_correlation=0.0)
    difference = 0.8
    without = pw.power_analysis(design, difference, components=common, simulations=12, seed=2,
                                n_jobs=1)
    with_slopes = pw.power_analysis(design, difference, components=varied, simulations=40,
                                    seed=2, n_jobs=1)
    blind = pw.power_analysis(design, difference, components=varied, simulations=40, seed=2,
                              n_jobs=1, calibration_grids=0, random_slopes="off")
    assert with_slopes.model.slopes and not blind.model.slopes
    assert without.power >= 0.6 and with_slopes.power <= without.power - 0.35
    assert stats.binom.sf(7, 40, 0.05) < 0.001 and stats.binom.cdf(7, 40, 0.45) < 0.001
    assert with_slopes.false_positive_rate <= 7 / 40
    assert blind.false_positive_rate >= 0.25
    assert any("no target-specific slopes to carry" in n for n in blind.model.notes)
    # The slopes' Satterthwaite df rest on the three targets, not on the 288 rows.
    assert np.nanmedian(with_slopes.simulations.df) < 6
    # The GLS standard error at the true components, slopes included, matches the spread of
    # the simulated estimates.
    spread = np.nanstd(with_slopes.simulations.estimate, ddof=1)
    assert with_slopes.expected_se == pytest.approx(spread, rel=0.3)
    document = with_slopes.to_dict()
    assert document["analysis"]["slopes"] == ["diversity", "volume"]
    assert document["components"]["slope_sd"] == {"diversity": 1.0, "volume": 1.0}


def test_the_pilot_recovers_the_slopes_of_the_grid_that_made_it():
    """A pilot simulated by ``transferstats.simulate`` with correlated slopes drawn around the
    population's (not centred): the pilot's slopes fit estimates the SDs and the correlation of
    the slopes its targets drew."""
    settings = SimulationSettings(
        targets=("xnli", "pawsx", "xquad", "mlqa", "tydiqa", "udpos", "panx", "tatoeba"),
        diversity_levels=(1, 2, 4, 8), volume_levels=(10_000, 40_000), draws=2, seeds=(1, 2),
        max_languages=3, target_diversity_sd=2.0, target_volume_sd=1.0,
        target_slope_correlation=0.6, centre_target_slopes=False, random_state=5)
    components = pw.pilot_components(flat_table(*simulate_scores(settings)))
    drawn = settings.target_slopes()
    diversity = np.array(list(drawn["diversity"].values()))
    volume = np.array(list(drawn["volume"].values()))
    assert components.pilot["slopes"] == ["diversity", "volume"]
    assert components.sources["diversity_slope"].startswith("pilot")
    assert components.slope_sd["diversity"] == pytest.approx(np.std(diversity, ddof=1), rel=0.15)
    assert components.slope_sd["volume"] == pytest.approx(np.std(volume, ddof=1), rel=0.15)
    assert components.slope_correlation == pytest.approx(np.corrcoef(diversity, volume)[0, 1],
                                                         abs=0.15)
    assert components.has_slopes and any("rest on the pilot's 8 targets" in n
                                         for n in components.notes)


def test_a_pilot_with_two_targets_keeps_the_default_slopes_and_says_why():
    settings = SimulationSettings(targets=("xnli", "pawsx"), diversity_levels=(1, 2, 4),
                                  volume_levels=(10_000, 40_000), draws=2, seeds=(1, 2),
                                  max_languages=2, target_diversity_sd=2.0)
    components = pw.pilot_components(flat_table(*simulate_scores(settings)))
    assert dict(components.slope_sd) == pw.DEFAULT_SLOPE_SD
    assert components.slope_correlation == pw.DEFAULT_SLOPE_CORRELATION
    assert any("cannot estimate how the slopes differ between targets" in n and "at least 3" in n
               for n in components.notes)
    assert components.sources["volume_slope"] == pw.DEFAULT_SLOPE_SOURCES["volume_slope"]


def test_slope_components_are_checked():
    with pytest.raises(pw.PowerError, match="slope_correlation must lie in"):
        pw.default_components(slope_correlation=1.5)
    with pytest.raises(pw.PowerError, match="diversity-slope SD"):
        pw.default_components(diversity_slope=-1.0)
    with pytest.raises(pw.PowerError, match="one SD for each of diversity, volume"):
        pw.Components(sd=pw.DEFAULT_SD, slope_sd={"diversity": 1.0})
    assert not pw.Components(sd=pw.DEFAULT_SD).has_slopes       # given SDs alone: common slopes
    defaults = pw.default_components()
    assert dict(defaults.slope_sd) == pw.DEFAULT_SLOPE_SD and defaults.has_slopes


def test_a_model_without_slopes_is_calibrated_on_analyze_without_slopes():
    """With random_slopes = "off" on three targets the stand-in is calibrated on analyze's
    bootstrap, so the calibration grids are analysed without slopes too (analyze's own "auto"
    would answer with the slopes' t interval and no bootstrap)."""
    design = design_of()
    common = pw.default_components(diversity_slope=0.0, volume_slope=0.0)
    sims = pw.simulate_analyses(design, common, simulations=10, seed=1, n_jobs=1,
                                model=pw.analysis_model(design, random_slopes="off"),
                                calibration_grids=1, calibration_resamples=50)
    assert sims.calibration is not None and sims.calibration.usable.all()
    assert np.isfinite(sims.calibration.boot_se).all() and sims.df is None


def test_the_simulation_reads_the_model_analyze_fits_on_the_same_grid():
    """On targets with common slopes the fit is singular: the reduction keeps the correlated
    slopes when only a correlation is at +-1, and drops every slope when their variances are at
    zero, after which analyze analyses the model of random intercepts (bootstrapped). Either way
    the simulation reads analyze's own estimate on the same grid: the Satterthwaite df of the
    slopes model, or the intercept model's estimate with a z interval (df inf)."""
    from transferstats.analysis.pipeline import analyze_loaded

    design = design_of()
    common = pw.default_components(diversity_slope=0.0, volume_slope=0.0)
    sim = pw._simulator(design, common, pw.analysis_model(design))
    for seed in range(3):
        y = pw.simulate_outcome(sim, np.random.default_rng([3, seed]))
        estimate, se, df = pw._analyse_slopes(sim, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = analyze_loaded(loading.load_results(pw.results_table(sim, y)),
                                    AnalysisSpec(resamples=50), n_jobs=1, progress=False,
                                    companions=False)
        assert result.estimates["comparison"]["estimate"] == pytest.approx(estimate, abs=1e-5)
        if result.slopes.fitted:
            assert result.comparison.df == pytest.approx(df, rel=1e-6)
        else:
            assert "every slope was estimated at zero" in result.slopes.reason
            assert df == np.inf and (estimate, se) == pw._analyse(sim, y)
