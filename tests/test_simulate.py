"""The generative model of ``transferstats simulate`` and its agreement with ``power``'s."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from transferstats import load_results
from transferstats.analysis.power import DEFAULT_SD
from transferstats.cli import main
from transferstats.simulate import SimulationSettings, simulate_results, simulate_scores

GRID = dict(diversity_levels=(1, 2), volume_levels=(10_000, 40_000), draws=2, seeds=(1, 2),
            targets=("xnli", "pawsx", "panx"), max_languages=3, seed_sd=0.0)


def _improvements(settings: SimulationSettings) -> pd.DataFrame:
    """Score of every (mix, target, language, seed) with its mix and target."""
    runs, scores = simulate_scores(settings)
    meta = pd.DataFrame([{"run_id": r["run_id"], "target": r["target_task"],
                          "mix": r["intermediate"]["name"] if r["intermediate"] else "none"}
                         for r in runs])
    return scores.merge(meta, on="run_id").query("metric != 'exact_match'")


def test_target_by_mix_shifts_whole_cells_and_leaves_the_other_draws():
    """w_tm moves every language and seed of a (mix, target) cell by one amount, different
    across the targets of a mix, and the grid without it has the same other draws."""
    without = _improvements(SimulationSettings(**GRID, target_mix_sd=0.0))
    with_it = _improvements(SimulationSettings(**GRID, target_mix_sd=2.0))
    shift = with_it.assign(shift=with_it["value"] - without["value"])
    per_cell = shift.groupby(["mix", "target"])["shift"]
    assert (per_cell.max() - per_cell.min()).max() < 2e-3          # rounding to 3 decimals
    cells = per_cell.mean().drop("none", level="mix")
    assert cells.groupby(level="mix").std().min() > 0.1            # targets differ within a mix
    assert (shift.loc[shift["mix"] == "none", "shift"].abs() < 1e-12).all()  # baselines unmoved
    assert 1.0 < cells.std() < 3.5


def test_power_defaults_are_the_simulate_defaults():
    """One generative model: power's default components are simulate's, with the language main
    effect and the language-within-target effect as one (target, language) component."""
    s = SimulationSettings()
    assert DEFAULT_SD == {"target": s.target_sd,
                          "target_language": math.hypot(s.language_sd, s.target_language_sd),
                          "mix": s.mix_sd, "target_mix": s.target_mix_sd, "seed": s.seed_sd}
    assert np.isclose(DEFAULT_SD["target_language"], 1.0)


def test_correlated_target_slopes_recover_their_sds_and_correlation():
    """Over many targets the drawn slope pairs have the SDs and correlation asked for, and the
    uncentred draws average to the population slopes within Monte Carlo error."""
    n = 4000
    settings = SimulationSettings.realistic(targets=tuple(f"t{i}" for i in range(n)),
                                            diversity_effect=-1.0, volume_effect=2.0)
    slopes = settings.target_slopes()
    diversity = np.array(list(slopes["diversity"].values()))
    volume = np.array(list(slopes["volume"].values()))
    assert abs(diversity.std(ddof=1) / 5.9 - 1) < 0.05
    assert abs(volume.std(ddof=1) / 3.1 - 1) < 0.05
    assert abs(np.corrcoef(diversity, volume)[0, 1] + 0.98) < 0.01
    assert abs(diversity.mean() + 1.0) < 4 * 5.9 / math.sqrt(n)
    assert abs(volume.mean() - 2.0) < 4 * 3.1 / math.sqrt(n)


def test_slope_correlation_leaves_the_diversity_draws_and_centring_keeps_the_mean():
    base = dict(targets=("xnli", "pawsx", "panx", "udpos", "xquad"), target_diversity_sd=2.0,
                target_volume_sd=1.0)
    independent = SimulationSettings(**base).target_slopes()
    correlated = SimulationSettings(**base, target_slope_correlation=0.6).target_slopes()
    assert independent["diversity"] == correlated["diversity"]
    assert independent["volume"] != correlated["volume"]
    centred = SimulationSettings(**base, target_slope_correlation=0.6).realised()
    assert np.isclose(centred["target_average_slopes"]["diversity"], 1.0)
    assert np.isclose(centred["target_average_slopes"]["volume"], 0.5)
    drawn = SimulationSettings(**base, centre_target_slopes=False).realised()
    assert not np.isclose(drawn["target_average_slopes"]["diversity"], 1.0)
    assert drawn["population_slopes"] == {"diversity": 1.0, "volume": 0.5}


def test_simulation_json_holds_the_slopes_the_scores_were_made_with(tmp_path):
    """Per-target OLS slopes (language fixed effects) on a nearly noiseless language grid equal
    the per-target truth written to simulation.json."""
    settings = SimulationSettings.realistic(
        targets=("xnli", "mlqa", "tydiqa", "xquad"), diversity_levels=(1, 2, 4, 8),
        volume_levels=(10_000, 20_000, 40_000, 80_000), draws=2, seed_sd=0.01, mix_sd=0.0,
        target_sd=1.0, target_language_sd=1.0, in_mix_effect=0.0, max_languages=3,
        diversity_effect=0.5, volume_effect=0.5, random_state=7)
    out = simulate_results(tmp_path / "sim", settings)
    truth = json.loads((out / "simulation.json").read_text())["realised"]
    data = load_results(out).scores
    data = data[(data["language"] != "en") & (data["metric"] != "exact_match")]
    assert data["value"].between(0.5, 99.5).all(), "no score clipped"
    tasks = data["mix_tasks"].str.split("+")
    data = data.assign(d=np.log2(tasks.str.len()),
                       v=np.log2(tasks.map(lambda ts: sum(int(t.split("=")[1]) for t in ts))))
    for target, rows in data.groupby("target_task"):
        X = np.column_stack([pd.get_dummies(rows["language"]).to_numpy(float), rows[["d", "v"]]])
        coef = np.linalg.lstsq(X, rows["value"].to_numpy(), rcond=None)[0]
        assert np.allclose(coef[-2:], [truth["diversity"][target], truth["volume"][target]],
                           atol=0.01), target
    averages = truth["target_average_slopes"]
    assert np.isclose(averages["diversity"], np.mean(list(truth["diversity"].values())))
    assert truth["population_slopes"] == {"diversity": 0.5, "volume": 0.5}


def test_realistic_preset_on_the_command_line(tmp_path):
    out = tmp_path / "sim.csv"
    assert main(["simulate", str(out), "--preset", "realistic", "--targets", "xnli,tydiqa",
                 "--diversity-levels", "1,2", "--volume-levels", "1000,2000", "--draws", "1",
                 "--max-languages", "2", "--seed-sd", "2.5"]) == 0
    truth = json.loads(out.with_suffix(".simulation.json").read_text())
    assert truth["kind"] == "language" and truth["seed_sd"] == 2.5
    assert truth["target_slope_correlation"] == -0.98 and truth["target_sd"] == 5.6
    assert truth["centre_target_slopes"] is False


def test_the_realistic_preset_of_a_task_grid_keeps_the_task_defaults():
    settings = SimulationSettings.realistic(kind="task")
    assert settings.intermediate_tasks == SimulationSettings().intermediate_tasks
    assert settings.baseline and settings.target_diversity_sd == 5.9
