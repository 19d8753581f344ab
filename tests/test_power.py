"""``transferstats power``: the design it simulates, the stand-in it analyses with, its agreement
with full ``analyze`` runs, pilot components, the command line.

The slow tests validate the stand-in against the analysis the verdict comes from: grids simulated
by an independent generator (scores with baselines, as a results table) are analysed by
``transferstats.analyze`` (crossed bootstrap, BCa), and the share of "supported" verdicts is
compared with the power the tool computes for the same design.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import transferstats as ts
from transferstats.analysis import power as pw
from transferstats.cli import main
from transferstats.commands.power import candidate_designs, grid_design
from transferstats.grid.spec import grid_from_dict, load_grid
from transferstats.results import format_mix_tasks
from transferstats.tasks import get_task, task_scope

POOL = ["mnli", "anli", "qqp", "sst2", "squad_v1", "squad_v2", "hellaswag", "commonsenseqa",
        "cosmosqa", "ccg"]
#: A small factorial grid: 16 mixes (1, 2, 4, 8 tasks x 10k, 40k examples x 2 draws), three
#: targets with three zero-shot languages each, two seeds: 288 model rows, fast to bootstrap.
SMALL_GRID = {"name": "small", "model": "xlm-roberta-base", "targets": ["xnli", "pawsx", "xquad"],
              "languages": ["en", "de", "es", "zh"], "seeds": [1, 2],
              "factorial": {"diversity": [1, 2, 4, 8], "volume": [10000, 40000], "draws": 2,
                            "tasks": POOL}}
TRUE_SD = {"target": 1.0, "target_language": 1.0, "mix": 0.5, "target_mix": 0.5, "seed": 1.0}


def small_design(**changes) -> pw.GridDesign:
    grid = grid_from_dict(SMALL_GRID | changes, "test")
    with task_scope(grid.tasks):
        return grid_design(grid)[0]


def simulate_flat(design: pw.GridDesign, rng: np.random.Generator, sd: dict, difference: float,
                  *, volume_effect: float = 0.5, intercept: float = 1.0) -> pd.DataFrame:
    """An independent generator: the scores of every run of the design, baselines included, as a
    flat results table. Written apart from ``transferstats.analysis.power`` on purpose: its own
    loops, its own draws, scores (not improvements) with a per-language base level, so the
    analysis derives the improvement over the baseline as it does for real runs."""
    names = [name for name, _ in design.mixes]
    d = np.log2([len(tasks) for _, tasks in design.mixes])
    v = np.log2([sum(count for _, count in tasks) for _, tasks in design.mixes])
    d, v = d - d.mean(), v - v.mean()
    mix_effect = rng.normal(0, sd["mix"], len(names))
    rows = []
    for target, languages in design.languages.items():
        metric = get_task(target).metric
        target_effect = rng.normal(0, sd["target"])
        language_effect = rng.normal(0, sd["target_language"], len(languages))
        target_mix_effect = rng.normal(0, sd["target_mix"], len(names))
        base = 60 + rng.normal(0, 5, len(languages))
        for m in [None, *range(len(names))]:
            if m is None:
                mix, tasks, gain = "none", "", np.zeros(len(languages))
            else:
                mix, tasks = names[m], format_mix_tasks(dict(design.mixes[m][1]))
                gain = (intercept + (volume_effect + difference) * d[m] + volume_effect * v[m]
                        + target_effect + language_effect + mix_effect[m] + target_mix_effect[m])
            for seed in range(1, design.seeds + 1):
                scores = base + gain + rng.normal(0, sd["seed"], len(languages))
                rows += [(f"x.{mix}.{target}.s{seed}", "xlmr", mix, tasks, target, seed, language,
                          metric, "test", float(score))
                         for language, score in zip(languages, scores, strict=True)]
    return pd.DataFrame(rows, columns=["run_id", "model", "mix", "mix_tasks", "target_task", "seed",
                                       "language", "metric", "split", "value"])


# --------------------------------------------------------------------------------------------
# The design


def test_the_design_is_the_grid_as_plan_expands_it():
    grid = load_grid("runners/smoke.toml")
    with task_scope(grid.tasks):
        design, notes = grid_design(grid)
    assert [name for name, _ in design.mixes] == ["mnli", "hellaswag-ccg", "four-formats"]
    # The smoke grid evaluates en, de, fr where a target has them; the model keeps zero-shot rows.
    assert design.languages == {"xnli": ("de", "fr"), "panx": ("de", "fr"), "xquad": ("de",),
                                "tatoeba": ("de", "fr")}
    assert design.seeds == 2 and design.n_rows == 3 * 2 * 7
    assert design.gpu_hours == pytest.approx(0.80, abs=0.01)  # plan's estimate
    rows = pw.design_rows(design)
    assert rows.n == design.n_rows and rows.n_levels["language"] == 2


def test_factorial_design_model_matches_the_pipeline():
    grid = load_grid("runners/diversity_volume.toml")
    with task_scope(grid.tasks):
        design, _ = grid_design(grid)
    assert len(design.mixes) == 36 and design.n_rows == 36 * 3 * 155
    model = pw.analysis_model(design)
    assert model.question == pw.CONTRAST and model.correlation == pytest.approx(0, abs=1e-9)
    assert model.fixed[:3] == ("diversity", "volume", "diversity:volume")
    assert model.random == ("target", "target_language", "mix", "target_mix")
    assert model.slopes == ("diversity", "volume") and model.bootstrap == "none"
    assert "(1 + diversity + volume | target_task)" in model.formula
    assert model.resample_failure == 0.0 and not model.blocked


def test_estimates_are_shift_equivariant():
    """Adding D to the diversity effect moves the stand-in's estimate by exactly D and leaves its
    standard error unchanged, so one fit per simulated grid gives the whole power curve."""
    design = small_design()
    model = pw.analysis_model(design)
    sim = pw._simulator(design, pw.default_components(), model)
    y = pw.simulate_outcome(sim, np.random.default_rng(3))
    estimate, se = pw._analyse(sim, y)
    for difference in (0.3, -1.7):
        shifted = y + difference * sim.X[:, 1]
        moved, moved_se = pw._analyse(sim, shifted)
        assert moved == pytest.approx(estimate + difference, abs=1e-7)
        assert moved_se == pytest.approx(se, rel=1e-6)


def test_simulations_depend_on_the_seed_only():
    """With slopes (analyze's Wald t on Satterthwaite df); the calibrated path without them is
    checked across backends in tests/test_parallel.py."""
    design = small_design()
    components = pw.default_components(diversity_slope=1.0, volume_slope=1.0,
                                       slope_correlation=0.0)
    kwargs = dict(simulations=10, seed=5)
    one = pw.simulate_analyses(design, components, n_jobs=1, **kwargs)
    two = pw.simulate_analyses(design, components, n_jobs=2, **kwargs)
    assert one.df is not None and two.df is not None and one.calibration is None
    np.testing.assert_array_equal(one.estimate, two.estimate)
    np.testing.assert_array_equal(one.lower, two.lower)
    np.testing.assert_array_equal(one.df, two.df)
    off = pw.analysis_model(design, random_slopes="off")
    same = pw.simulate_analyses(design, components, n_jobs=1, model=off, calibration_grids=0,
                                **kwargs)
    other = pw.simulate_analyses(design, components, n_jobs=1, model=off, calibration_grids=0,
                                 **(kwargs | {"seed": 6}))
    assert not np.array_equal(same.estimate, other.estimate)


def test_one_factor_and_confounded_designs_do_not_crash():
    design = small_design()
    volume_only = pw.GridDesign("volume only", tuple(
        (f"m{i}", (("mnli", 1000 * 2 ** i),)) for i in range(8)), design.languages, 2)
    model = pw.analysis_model(volume_only)
    assert model.question == "volume" and model.fixed == ("volume",) and not model.blocked
    assert any("only volume varies" in note for note in model.notes)
    assert model.slopes == ("volume",)      # three targets: analyze's slope of the varied factor
    result = pw.power_analysis(volume_only, 0.5, simulations=10, calibration_grids=0, n_jobs=1)
    assert 0 <= result.power <= 1 and result.model.question == "volume"
    assert np.isfinite(result.simulations.df).all()
    # Diversity and volume rise together: r = 1, confounded, no verdict at any difference.
    confounded = pw.GridDesign("confounded", tuple(
        (f"m{k}", tuple((task, 5000 * 2 ** k // k) for task in POOL[:k])) for k in (1, 2, 4, 8)),
        design.languages, 2)
    blocked = pw.power_analysis(confounded, 2.0, simulations=20, calibration_grids=0, n_jobs=1)
    assert blocked.model.blocked.startswith("confounded")
    assert blocked.power == 0 and blocked.minimum_detectable_difference is None
    with pytest.raises(pw.PowerError, match="neither diversity nor volume varies"):
        pw.analysis_model(pw.GridDesign("flat", (("a", (("mnli", 10),)), ("b", (("anli", 10),))),
                                        design.languages, 2))


def test_one_factor_designs_plan_for_the_varied_effect_with_identity_as_analyze_fits_it():
    """A single-source grid of several sources, each at several sizes, gets the source (task
    identity) effects analyze fits; a fixed budget whose split is rounded (39,999 examples over 3
    tasks) still plans for diversity alone, as analyze's design check reads it."""
    design = small_design()
    sizes = (1_000, 2_000, 4_000, 8_000)
    single_source = pw.GridDesign("single source", tuple(
        (f"{task}-{n}", ((task, n),)) for task in POOL[:5] for n in sizes), design.languages, 1)
    model = pw.analysis_model(single_source)
    assert model.question == "volume" and model.identity["used"]
    assert model.fixed[0] == "volume" and len(model.fixed) == 1 + 4   # volume + 4 task shares
    assert model.weights[1] == 1 and not model.weights[2:].any()
    fixed_budget = pw.GridDesign("fixed budget", tuple(
        (f"d{k}-r{r}", tuple((task, 40_000 // k) for task in np.roll(POOL, r)[:k]))
        for k in (1, 2, 3, 4) for r in range(3)), design.languages, 1)
    model = pw.analysis_model(fixed_budget, identity="off")
    assert model.question == "diversity" and model.fixed == ("diversity",)
    assert any("only diversity varies" in note for note in model.notes)


def test_too_few_mixes_withhold_the_verdict_as_the_bootstrap_does():
    """Three mixes: a bootstrap resample loses a design point most of the time, more than 5% of
    the resamples fail, and analyze gives no directional verdict."""
    grid = load_grid("runners/smoke.toml")
    with task_scope(grid.tasks):
        design, _ = grid_design(grid)
    model = pw.analysis_model(design, random_slopes="off")
    assert model.resample_failure == pytest.approx(1 - 6 / 27, abs=0.03)
    result = pw.power_analysis(design, 5.0, simulations=40, calibration_grids=0, n_jobs=1,
                               random_slopes="off")
    assert result.power == 0
    # With its four targets analyze fits slopes, whose Wald t verdict resamples nothing.
    slopes = pw.analysis_model(design)
    assert slopes.slopes and slopes.resample_failure == 0.0


# --------------------------------------------------------------------------------------------
# Pilot components


def test_pilot_components_are_recovered_from_a_simulated_pilot():
    grid = grid_from_dict(SMALL_GRID | {
        "targets": ["xnli", "pawsx", "udpos", "panx", "xquad", "mlqa"], "seeds": [1, 2, 3],
        "languages": ["en", "de", "es", "zh", "ar", "fr"],
        "factorial": SMALL_GRID["factorial"] | {"diversity": [1, 2, 4, 8],
                                                "volume": [10000, 20000, 40000], "draws": 3}},
        "test")
    with task_scope(grid.tasks):
        design, _ = grid_design(grid)
    truth = {"target": 1.0, "target_language": 0.8, "mix": 0.7, "target_mix": 0.5, "seed": 1.0}
    pilot = simulate_flat(design, np.random.default_rng(11), truth, 0.4)
    components = pw.pilot_components(pilot)
    assert components.source == "pilot"
    # The improvement subtracts the mean of the baseline's three seeds, whose noise is one more
    # language-within-target intercept: the analysis sees sqrt(0.8² + 1²/3).
    seen = truth | {"target_language": math.sqrt(0.8 ** 2 + 1.0 ** 2 / 3)}
    # 36 mixes, 6 targets, 28 target-languages, 3 seeds: within about two standard errors.
    tolerance = {"target": 0.6, "target_language": 0.25, "mix": 0.25, "target_mix": 0.15,
                 "seed": 0.05}
    for name, value in seen.items():
        assert components.sd[name] == pytest.approx(value, abs=tolerance[name]), name
    assert components.pilot["n_mixes"] == 36
    effects = components.pilot["fixed_effects"]
    assert effects["diversity"]["estimate"] - effects["volume"]["estimate"] == pytest.approx(
        0.4, abs=0.6)


def test_pilot_errors_are_named():
    design = small_design(targets=["xnli"])
    pilot = simulate_flat(design, np.random.default_rng(1), TRUE_SD, 0.0)
    with pytest.raises(pw.PowerError, match="no baseline"):
        pw.pilot_components(pilot[pilot["mix"] != "none"])
    with pytest.raises(ts.ResultsError):
        pw.pilot_components(pilot.drop(columns="value"))


# --------------------------------------------------------------------------------------------
# The command line


def test_cli_end_to_end_on_the_smoke_grid(tmp_path, capsys):
    out, report = tmp_path / "figures", tmp_path / "power.json"
    code = main(["power", "runners/smoke.toml", "--difference", "1", "--simulations", "100",
                 "--calibration", "1", "--search", "--json", str(report), "--out", str(out),
                 "--jobs", "1", "--random-slopes", "off"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "power" in printed and "documented defaults" in printed
    document = json.loads(report.read_text())
    for key in ("power", "power_ci", "false_positive_rate", "minimum_detectable_difference",
                "components", "designs"):
        assert key in document
    assert document["components"]["source"] == "defaults"
    assert document["designs"][0]["role"] == "grid"
    assert len(document["designs"]) > 1  # the search's candidates
    for name in ("power_curve", "cost_power"):
        for suffix in ("png", "pdf"):
            assert (out / f"{name}.{suffix}").stat().st_size > 1000


def test_cli_with_a_pilot(tmp_path, capsys):
    design = small_design()
    pilot = tmp_path / "pilot.csv"
    simulate_flat(design, np.random.default_rng(2), TRUE_SD, 0.5).to_csv(pilot, index=False)
    grid = tmp_path / "grid.toml"
    grid.write_text(_toml(SMALL_GRID))
    report = tmp_path / "p.json"
    assert main(["power", str(grid), "--pilot", str(pilot), "--difference", "0.8",
                 "--simulations", "100", "--calibration", "0", "--json", str(report),
                 "--out", str(tmp_path), "--jobs", "1", "--random-slopes", "off"]) == 0
    printed = capsys.readouterr().out
    assert "from pilot" in printed and "target slopes (SD, points per doubling)" in printed
    document = json.loads(report.read_text())
    assert document["components"]["source"] == "pilot"
    assert set(document["components"]["sd"]) == set(pw.COMPONENTS)
    # The pilot's three targets allow slopes: their SDs are the pilot's, not the defaults.
    assert set(document["components"]["slope_sd"]) == set(pw.SLOPES)
    assert document["components"]["sources"]["diversity_slope"].startswith("pilot")
    assert document["analysis"]["slopes"] == []


def _toml(document: dict) -> str:
    lines, tables = [], []
    for key, value in document.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for key, table in tables:
        lines.append(f"[{key}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("arguments, message", [
    (["--difference", "0"], "positive true difference"),
    (["--difference", "-1"], "positive true difference"),
    (["--difference", "big"], "expected a number"),
    (["--difference", "nan"], "finite"),
    (["--difference", "1", "--power", "1.5"], "between 0 and 1"),
    (["--difference", "1", "--simulations", "5"], "at least 100"),
    (["--difference", "1", "--jobs", "0"], "at least 1"),
    (["--difference", "1", "--calibration", "-1"], "whole number"),
    ([], "--difference"),
])
def test_bad_arguments_are_refused_clearly(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["power", "runners/smoke.toml", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_grid_and_pilot_are_refused_clearly(tmp_path, capsys):
    assert main(["power", str(tmp_path / "missing.toml"), "--difference", "1"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["power", "runners/smoke.toml", "--difference", "1",
                 "--pilot", str(tmp_path / "nothing")]) == 2
    assert "pilot" in capsys.readouterr().err


def test_search_without_a_design_reaching_the_power_lists_the_simulated_ones():
    """A cheaper design that is as powerful as the grid must not be hidden because neither
    reaches the requested power."""
    from types import SimpleNamespace

    from rich.console import Console

    from transferstats.commands.power import _print_search

    def row(hours, power, mixes):
        return {"mixes": mixes, "target_languages": 155, "seeds": 3, "gpu_hours": hours,
                "power": power, "power_ci": (power - 0.05, power + 0.05),
                "minimum_detectable_difference": 0.35, "languages": "grid's"}

    grid = row(1222.3, 0.692, 36)
    screened = {**row(50.0, 0.0, 12), "power": None, "power_ci": None}
    search = SimpleNamespace(chosen=[], simulated=2,
                             rows=[screened, row(340.0, 0.730, 24), row(210.0, 0.560, 16)])
    result = SimpleNamespace(designs=[grid], target_power=0.8)
    console = Console(record=True, width=200)
    _print_search(console, search, result, {"png": "c.png", "pdf": "c.pdf"})
    text = console.export_text()
    assert "no searched design reaches power 0.8" in text
    assert "the best simulated reaches 0.730" in text
    lines = [line for line in text.splitlines() if "0.730" in line or "0.560" in line]
    assert len(lines) == 3 and "210.0" in lines[1] and "340.0" in lines[2]   # cheapest first


def test_search_candidates_vary_levels_draws_seeds_and_languages():
    grid = grid_from_dict(SMALL_GRID, "test")
    with task_scope(grid.tasks):
        candidates = candidate_designs(grid)
    settings = pd.DataFrame([dict(c.settings) for c in candidates])
    assert set(settings["seeds"]) == {1, 2, 3, 4}
    assert set(settings["draws"]) == {1, 2, 3, 4}
    assert set(map(tuple, settings["diversity"])) >= {(1, 8), (1, 2, 4, 8)}
    assert set(settings["languages"]) == {"4 listed", "all"}
    assert all(c.gpu_hours > 0 for c in candidates)


# --------------------------------------------------------------------------------------------
# Validation against full analyze runs (slow)

#: Simulations of the tool's false-positive rate on the factorial grid (1,000 until CI time had
#: to be cut): its Monte Carlo standard error near 0.05 is 0.9 points.
FPR_SIMULATIONS = 600


def _full_analyze_runs(design, difference, grids, seed, resamples):
    """Verdicts of transferstats.analyze on independently simulated grids at the true difference,
    and the smallest true difference at which each analysis would have said "supported": its
    BCa interval shifted (exact: the bootstrap refits move with the difference, the BCa
    adjustments do not), infinite where the verdict was withheld."""
    rng = np.random.default_rng(seed)
    verdicts, thresholds, directional_at_zero = [], [], []
    for _ in range(grids):
        flat = simulate_flat(design, rng, TRUE_SD, difference)
        result = ts.analyze(flat, resamples=resamples, jobs=2, seed=int(rng.integers(1 << 30)))
        verdicts.append(result.verdict)
        comparison = result.estimates["comparison"]
        # No direction whatever the difference: a confounded design, or too many failed
        # resamples (pipeline.decide).
        withheld = result.verdict == "confounded" or \
            "could not be fitted" in result.verdict_reason
        low, high = comparison["ci_low"] - difference, comparison["ci_high"] - difference
        thresholds.append(math.inf if withheld else -low)
        directional_at_zero.append(not withheld and (low > 0 or high < 0))
    return np.array(verdicts), np.array(thresholds), np.array(directional_at_zero)


@pytest.mark.slow
def test_power_agrees_with_the_rejection_rate_of_full_analyze_runs():
    """The tool's power against the verdicts of full analyze runs on grids from the independent
    generator (common slopes), at a difference in the middle of the power curve; and the whole
    distribution of the difference at which the verdict turns "supported". With three targets
    analyze's model has target-specific slopes and its verdict is their Wald t interval, which
    the tool computes the same way (400 simulations: each is a slopes fit)."""
    from scipy import stats

    design = small_design()
    components = pw.default_components(**TRUE_SD, diversity_slope=0.0, volume_slope=0.0)
    difference = round(2.4 * pw.expected_standard_error(design, components), 2)
    tool = pw.power_analysis(design, difference, components=components, simulations=400,
                             seed=1, n_jobs=2)
    assert tool.model.slopes
    verdicts, thresholds, directional = _full_analyze_runs(design, difference, grids=48, seed=2,
                                                           resamples=150)
    n = len(verdicts)
    full = float(np.mean(verdicts == "supported"))
    full_se = math.sqrt(max(full * (1 - full), 0.05) / n)
    tool_se = (tool.power_ci[1] - tool.power_ci[0]) / (2 * 1.96)
    print(f"\ntrue difference {difference}: power from the tool {tool.power:.3f} "
          f"[{tool.power_ci[0]:.3f}, {tool.power_ci[1]:.3f}]; full analyze runs {full:.3f} "
          f"({int(round(full * n))} of {n} supported)")
    assert abs(tool.power - full) <= 2.5 * math.hypot(full_se, tool_se)
    finite = np.where(np.isfinite(thresholds), thresholds, 1e6)
    tool_thresholds = tool.simulations.threshold()
    ks = stats.ks_2samp(finite, np.where(np.isfinite(tool_thresholds), tool_thresholds, 1e6))
    print(f"difference at which the verdict turns supported: median tool "
          f"{np.median(tool_thresholds):.3f}, full {np.median(thresholds):.3f}; KS p = {ks.pvalue:.3f}")
    assert ks.pvalue > 0.01
    fpr_full = float(directional.mean())
    print(f"false-positive rate at 0: tool {tool.false_positive_rate:.3f} "
          f"[{tool.false_positive_ci[0]:.3f}, {tool.false_positive_ci[1]:.3f}], full analyze "
          f"{fpr_full:.3f} ({int(directional.sum())} of {n})")
    fpr_error = math.sqrt(0.05 * 0.95 / tool.simulations.n)
    assert tool.false_positive_rate <= 0.05 + 2 * fpr_error
    assert abs(tool.false_positive_rate - fpr_full) <= 2.5 * math.hypot(
        math.sqrt(0.05 * 0.95 / n), fpr_error)


@pytest.mark.slow
def test_false_positive_rate_is_nominal_on_the_factorial_grid():
    """The calibrated stand-in of analyze's parametric bootstrap (the model without slopes, on
    targets whose slopes are common): its false-positive rate."""
    grid = load_grid("runners/diversity_volume.toml")
    with task_scope(grid.tasks):
        design, _ = grid_design(grid)
    components = pw.default_components(diversity_slope=0.0, volume_slope=0.0)
    result = pw.power_analysis(design, 0.3, components=components, simulations=FPR_SIMULATIONS,
                               seed=3, n_jobs=2, random_slopes="off")
    rate = result.false_positive_rate
    error = math.sqrt(0.05 * 0.95 / FPR_SIMULATIONS)
    print(f"\nfactorial grid: false-positive rate {rate:.3f} {result.false_positive_ci}, power at "
          f"0.3 {result.power:.3f} {result.power_ci}, MDD {result.minimum_detectable_difference}")
    assert rate <= 0.05 + 2 * error
