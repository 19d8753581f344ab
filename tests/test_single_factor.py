"""Grids that vary one factor on purpose (issue 13): a fixed budget (diversity only) and a single
source (volume only) get that factor's effect with its interval and the verdict that names the
design, never ``confounded``."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import transferstats as ts
from transferstats.analysis import descriptives
from transferstats.analysis.design import design_check, varying_factor
from transferstats.analysis.pipeline import analyze_loaded
from transferstats.analysis.spec import AnalysisSpec, load_spec
from transferstats.loading import load_results
from transferstats.report import render, tables
from transferstats.simulate import SimulationSettings, simulate_results
from transferstats.tasks import INTERMEDIATE_TASKS, task_scope

# Few resamples keep these tests fast; the slow coverage test uses 200.
FAST = AnalysisSpec(resamples=100, seed=1)
BASE = SimulationSettings(seeds=(1,), targets=("xnli", "panx"), max_languages=5, mix_sd=0.3,
                          seed_sd=0.8)


def fixed_budget_mixes(budget: int = 40_000, levels=(1, 2, 4, 8), draws: int = 3):
    """Mixes splitting one budget evenly over 1, 2, 4, 8 tasks, ``draws`` task sets per size; the
    split is rounded down, so a mix of 3 or 7 tasks would hold a little less than the budget."""
    mixes = []
    for n in levels:
        for draw in range(draws):
            tasks = np.roll(INTERMEDIATE_TASKS, 3 * draw + n)[:n]
            mixes.append((f"d{n}-r{draw}", tuple((task, budget // n) for task in tasks)))
    return tuple(mixes)


def single_source_mixes(sizes=(5_000, 10_000, 20_000, 40_000), sources=INTERMEDIATE_TASKS[:6]):
    """One mix per (source task, size): only volume varies."""
    return tuple((f"{source}-{size}", ((source, size),)) for source in sources for size in sizes)


def _analyze(tmp_path, settings, companions=True):
    results = simulate_results(tmp_path / "results", settings)
    return analyze_loaded(load_results(results), FAST, n_jobs=1, progress=False,
                          companions=companions)


def test_fixed_budget_grid_gets_its_diversity_effect(tmp_path):
    result = _analyze(tmp_path, replace(BASE, mixes=fixed_budget_mixes(), diversity_effect=1.5,
                                        volume_effect=0.0))
    assert result.verdict == "diversity_only"
    diversity = result.effect("diversity")
    assert diversity["ci_low"] <= 1.5 <= diversity["ci_high"]
    assert diversity["ci_low"] > 0 and diversity["p_value"] < 0.01
    assert [e["term"] for e in result.estimates["effects"]] == ["diversity"]
    assert list(result.effects["term"]) == ["diversity"], "no empty contrast row"
    assert result.estimates["comparison"]["estimate"] is None
    assert result.estimates["question"] == "diversity"
    reason = result.verdict_reason
    assert "volume is fixed at 40,000 intermediate examples" in reason
    assert f"[{diversity['ci_low']:.2f}, {diversity['ci_high']:.2f}]" in reason
    assert "needs mixes that vary both" in reason
    assert set(result.estimates["verdict_values"]) >= {"diversity_only", "volume_only",
                                                       "confounded"}
    # Per-target slopes of diversity alone, without a contrast per target.
    assert {row["term"] for row in result.estimates["per_target"]} == {"diversity"}
    assert result.estimates["heterogeneity"]["terms"] == ["diversity"]


@pytest.fixture(scope="module")
def single_source(tmp_path_factory):
    return _analyze(tmp_path_factory.mktemp("single_source"),
                    replace(BASE, mixes=single_source_mixes(), diversity_effect=0.0,
                            volume_effect=1.9, identity_sd=1.0, random_state=1))


def test_single_source_grid_gets_its_volume_effect(single_source):
    result = single_source
    assert result.verdict == "volume_only"
    volume = result.effect("volume")
    assert volume["ci_low"] <= 1.9 <= volume["ci_high"] and volume["ci_low"] > 1.0
    assert "diversity is fixed at 1 task" in result.verdict_reason
    assert result.estimates["design"]["confounded"] is False
    # Six sources in four mixes each: their identity effects are estimable and in the model.
    assert result.estimates["identity"]["used"]
    assert "diversity" not in result.estimates["model"]["fixed"]
    assert result.estimates["plain"]["verdict"] == "volume_only"
    assert result.interaction_table["volume_examples"].nunique() == 4
    assert {row["term"] for row in result.estimates["per_target"]} == {"volume"}


@pytest.mark.slow
def test_report_of_a_single_factor_grid_has_no_contrast(single_source, tmp_path):
    """Writing a report takes seconds (figures as PNG and PDF): a slow test."""
    paths = single_source.write_report(tmp_path / "report")
    assert "figures/levels.png" in paths and "figures/interaction.png" not in paths
    assert "figures/bootstrap_difference.png" not in paths
    markdown = paths["report.md"].read_text()
    assert "**Verdict: volume_only**" in markdown
    assert "| Diversity − volume" not in markdown
    assert "comparing it with diversity needs mixes that vary both" in markdown
    assert "contrast" not in markdown.lower()


@pytest.mark.parametrize("counts, examples, varies", [
    ([1, 2, 4, 8], [40_000, 40_000, 39_999, 40_000], "diversity"),  # rounding of a split budget
    ([1, 1, 1, 1], [630, 1_260, 2_520, 5_040], "volume"),
    ([1, 2, 4, 8], [10_000, 20_000, 10_000, 20_000], "both"),
    ([2, 2, 2], [5_000, 5_000, 5_000], "neither"),
])
def test_varying_factor(counts, examples, varies):
    assert varying_factor(np.array(counts, float), np.array(examples, float)) == varies


def test_design_check_of_one_varied_factor():
    mixes = pd.DataFrame({"n_tasks": [1, 1, 1, 1], "examples": [630, 1_260, 2_520, 5_040]})
    check = design_check(mixes, "n_tasks", 0.9)
    assert check["confounded"] is False and check["single_factor"] == "volume"
    assert check["fixed_at"] == "1 task" and check["correlation"] is None
    two = design_check(mixes.head(2), "n_tasks", 0.9)
    assert two["confounded"] is True and "at least 3" in two["reason"]
    flat = design_check(pd.DataFrame({"n_tasks": [2, 2, 2], "examples": [5, 5, 5]}), "n_tasks", 0.9)
    assert flat["confounded"] is True and "neither" in flat["reason"]


# --- many mixes --------------------------------------------------------------------------------

def many_mix_data(n_mixes: int = 60, n_languages: int = 5) -> pd.DataFrame:
    """Model data of ``n_mixes`` single-task mixes at two volumes, mix i scoring i on average."""
    rng = np.random.default_rng(3)
    mix = np.repeat(np.arange(n_mixes), n_languages)
    return pd.DataFrame({
        "mix": [f"m{i:02d}" for i in mix], "n_tasks": 1, "examples": 1000 * (1 + mix % 2),
        "target_language": [f"t:l{i}" for i in np.tile(np.arange(n_languages), n_mixes)],
        "score": mix + rng.normal(0, 1, len(mix)),
    })


def test_mix_ranking_orders_every_mix_with_a_t_interval():
    data = many_mix_data()
    ranking = descriptives.mix_ranking(data, "score", 0.95)
    assert list(ranking["rank"]) == list(range(1, 61))
    assert ranking["mean"].is_monotonic_decreasing and ranking.loc[0, "mix"] == "m59"
    values = data.loc[data["mix"] == "m59", "score"].to_numpy()
    low, high = stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values))
    assert ranking.loc[0, ["ci_low", "ci_high"]].tolist() == pytest.approx([low, high])
    table = tables.mix_ranking_table(ranking, "score")
    assert len(table.frame) == 20 and "the 10 best and the 10 worst of the 60 mixes" in table.caption
    assert table.frame["Mix"].iloc[[0, -1]].tolist() == ["m59", "m00"]


def test_many_mixes_are_shown_by_design_cell():
    ranking = descriptives.mix_ranking(many_mix_data(), "score", 0.95)
    improvement = pd.DataFrame({"mix": [f"m{i:02d}" for i in range(60) for _ in range(2)],
                                "target_task": ["xnli", "average"] * 60,
                                "mean": [float(i) for i in range(60) for _ in range(2)],
                                "ci_low": np.nan, "ci_high": np.nan, "n_runs": 1})
    cells = render.by_design_cell(improvement, ranking, 0.95)
    assert list(cells["mix"].unique()) == ["1 task, 1k", "1 task, 2k"]
    assert list(cells["target_task"][:2]) == ["xnli", "average"]
    even = cells[(cells["mix"] == "1 task, 1k") & (cells["target_task"] == "xnli")].iloc[0]
    assert even["mean"] == pytest.approx(np.mean(range(0, 60, 2))) and even["n_mixes"] == 30
    assert even["ci_low"] < even["mean"] < even["ci_high"]


def test_past_36_mixes_the_report_ranks_the_mixes(single_source):
    ranking = descriptives.mix_ranking(many_mix_data(), "score", 0.95)
    result = replace(single_source, mix_ranking=ranking,
                     comparisons=replace(single_source.comparisons, pairwise=pd.DataFrame()))
    blocks = render._pairwise(result)
    text = " ".join(block.text for block in blocks)
    assert "With 60 mixes there would be 1,770 pairwise tests" in text
    assert "tables/mix_ranking.csv" in text
    assert [block.table.name for block in blocks if block.table is not None] == ["mix_ranking"]


# --- coverage ----------------------------------------------------------------------------------

TRUE_VOLUME = 1.0
COVERAGE_SOURCES, COVERAGE_SIZES, COVERAGE_LANGUAGES = 8, (1_000, 2_000, 4_000, 8_000), 8


def single_source_table(replication: int) -> tuple[pd.DataFrame, dict]:
    """A small single-source grid in the flat form: 8 source tasks x 4 sizes (32 mixes), one
    target in 8 languages, one seed, no baseline. Score = 1 point per doubling of examples +
    source (SD 0.5) + mix (SD 0.4) + language (SD 1) + residual (SD 1)."""
    rng = np.random.default_rng(5000 + replication)
    source = np.repeat(np.arange(COVERAGE_SOURCES), len(COVERAGE_SIZES))
    size = np.tile(COVERAGE_SIZES, COVERAGE_SOURCES)
    volume = np.log2(size)
    mix_effect = (TRUE_VOLUME * (volume - volume.mean())
                  + rng.normal(0, 0.5, COVERAGE_SOURCES)[source] + rng.normal(0, 0.4, len(size)))
    mix = np.repeat(np.arange(len(size)), COVERAGE_LANGUAGES)
    language = np.tile(np.arange(COVERAGE_LANGUAGES), len(size))
    score = (50 + mix_effect[mix] + rng.normal(0, 1, COVERAGE_LANGUAGES)[language]
             + rng.normal(0, 1, len(mix)))
    languages = [f"l{i}" for i in range(COVERAGE_LANGUAGES)]
    tasks: dict = {f"src{i}": {"role": "intermediate", "format": "classification",
                               "metric": "accuracy"} for i in range(COVERAGE_SOURCES)}
    tasks["tgt"] = {"role": "target", "format": "classification", "metric": "accuracy",
                    "languages": languages}
    table = pd.DataFrame({
        "run_id": [f"run{m}" for m in mix], "model": "m",
        "mix": [f"src{source[m]}-{size[m]}" for m in mix],
        "mix_tasks": [f"src{source[m]}={size[m]}" for m in mix],
        "target_task": "tgt", "seed": 1, "language": [languages[i] for i in language],
        "metric": "accuracy", "split": "test", "value": score,
    })
    return table, tasks


def volume_interval_covers_truth(replication: int) -> bool:
    """Does analyze's 95% interval of the volume effect of one simulated grid hold the truth?"""
    table, tasks = single_source_table(replication)
    spec = load_spec(None, tasks=tasks, outcome="score", resamples=200, seed=replication)
    with task_scope(spec.tasks):
        # The primary model alone: its interval is the one the verdict quotes.
        result = analyze_loaded(ts.load_results(table), spec, n_jobs=1, progress=False,
                                companions=False)
    assert result.verdict == "volume_only" and result.estimates["identity"]["used"]
    volume = result.effect("volume")
    return bool(volume["ci_low"] <= TRUE_VOLUME <= volume["ci_high"])


@pytest.mark.slow
def test_interval_of_the_varied_factor_covers_the_truth(capsys):
    """Over 200 single-source grids the 95% interval of the volume effect covers 93-97% of the
    time, up to Monte Carlo error."""
    n_replications = 200
    with ProcessPoolExecutor(2) as pool:
        covered = sum(pool.map(volume_interval_covers_truth, range(n_replications)))
    rate = covered / n_replications
    with capsys.disabled():
        print(f"\ncoverage of the 95% interval of the volume effect: {rate:.3f} "
              f"({covered} of {n_replications} single-source grids)")
    # 93-97% widened by 2.6 binomial standard errors (sqrt(0.95 x 0.05 / 200) = 1.54 points):
    # a correct interval falls outside with probability about 1%.
    tolerance = 2.6 * np.sqrt(0.95 * 0.05 / n_replications)
    assert 0.93 - tolerance <= rate <= 0.97 + tolerance
