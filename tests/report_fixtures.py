"""A realistic fake :class:`AnalysisResult` for the report tests, built without running an analysis.

The data follow a small diversity-by-volume factorial grid on all XTREME targets: mixes of 1, 2 or
4 intermediate tasks at 10k, 40k or 160k examples, three seeds, improvements generated from known
effects (0.9 points per doubling of tasks, 0.6 per doubling of examples) plus crossed random
intercepts and noise. Estimates and bootstrap draws are plausible numbers near the truth, not a
model fit: the report only renders them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pingouin as pg

from transferstats.analysis.result import AnalysisResult
from transferstats.tasks import TARGET_TASKS, get_task

TRUE_EFFECTS = {"diversity": 0.9, "volume": 0.6, "diversity:volume": 0.0}
TASK_POOL = ("mnli", "squad_v1", "hellaswag", "ccg")
VOLUMES = (10_000, 40_000, 160_000)
N_TASKS = (1, 2, 4)
SEEDS = (1, 2, 3)
Z95 = 1.959964


def _mix_name(n_tasks: int, examples: int) -> str:
    return "+".join(TASK_POOL[:n_tasks]) + f"@{examples // 1000}k"


def _mean_ci(values: pd.Series) -> pd.Series:
    half_width = Z95 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    mean = values.mean()
    return pd.Series({"mean": mean, "ci_low": mean - half_width, "ci_high": mean + half_width,
                      "n": len(values)})


def _model_data(rng: np.random.Generator) -> pd.DataFrame:
    target_effect = {t: rng.normal(0, 1.0) for t in TARGET_TASKS}
    language_effect = {}
    mix_effect = {}
    rows = []
    for n_tasks in N_TASKS:
        for examples in VOLUMES:
            mix = _mix_name(n_tasks, examples)
            mix_effect[mix] = rng.normal(0, 0.3)
            for target in TARGET_TASKS:
                for language in get_task(target).languages:
                    key = (target, language)
                    language_effect.setdefault(key, rng.normal(0, 0.8))
                    for seed in SEEDS:
                        diversity = math.log2(n_tasks)
                        volume = math.log2(examples / VOLUMES[0])
                        fitted = (TRUE_EFFECTS["diversity"] * diversity
                                  + TRUE_EFFECTS["volume"] * volume + target_effect[target]
                                  + language_effect[key] + mix_effect[mix])
                        residual = rng.normal(0, 1.5)
                        rows.append({
                            "run_id": f"xlmr-large.{mix}.{target}.s{seed}",
                            "model": "xlm-roberta-large", "mix": mix, "target_task": target,
                            "language": language, "seed": seed, "diversity": diversity,
                            "volume": volume, "n_tasks": n_tasks, "n_formats": n_tasks,
                            "effective_tasks": float(n_tasks), "examples": examples,
                            "improvement": fitted + residual, "fitted": fitted,
                            "residual": residual,
                        })
    return pd.DataFrame(rows)


def _improvement_table(data: pd.DataFrame) -> pd.DataFrame:
    per_run = data.groupby(["mix", "target_task", "seed"], sort=False)["improvement"].mean()
    per_target = per_run.groupby(["mix", "target_task"], sort=False).apply(_mean_ci).unstack()
    per_seed_average = per_run.groupby(["mix", "seed"], sort=False).mean()
    average = per_seed_average.groupby("mix", sort=False).apply(_mean_ci).unstack()
    average["target_task"] = "average"
    table = pd.concat([per_target.reset_index(), average.reset_index()], ignore_index=True)
    table = table.rename(columns={"n": "n_runs"}).astype({"n_runs": int})
    order = {mix: i for i, mix in enumerate(dict.fromkeys(data["mix"]))}
    return (table.sort_values("mix", key=lambda s: s.map(order), kind="stable")
            [["mix", "target_task", "mean", "ci_low", "ci_high", "n_runs"]]
            .reset_index(drop=True))


def _estimates(data: pd.DataFrame, interaction: bool, simulated: bool, verdict: str) -> dict:
    effects = [
        {"term": "diversity", "estimate": 0.87, "ci_low": 0.52, "ci_high": 1.21, "p_value": 4e-5,
         "unit": "points per doubling of the number of tasks"},
        {"term": "volume", "estimate": 0.63, "ci_low": 0.41, "ci_high": 0.86, "p_value": 0.0006,
         "unit": "points per doubling of intermediate examples"},
    ]
    if interaction:
        effects.append({"term": "diversity:volume", "estimate": -0.04, "ci_low": -0.21,
                        "ci_high": 0.13, "p_value": math.nan,
                        "unit": "points per doubling of both"})
    interaction_formula = " + diversity:volume" if interaction else ""
    estimates = {
        "outcome": "improvement",
        "n_rows": len(data),
        "n_runs": data["run_id"].nunique(),
        "effects": effects,
        "comparison": {"contrast": "diversity - volume", "estimate": 0.24, "ci_low": -0.17,
                       "ci_high": 0.66, "p_value": 0.25},
        "verdict": verdict,
        "verdict_reason": ("the 95% interval of diversity - volume includes zero, and the grid "
                           "could only detect differences of 0.48 points per doubling or more"),
        "minimum_detectable_difference": {"value": 0.48, "power": 0.8, "alpha": 0.05,
                                          "unit": "points per doubling"},
        "bootstrap": {"resamples": 1000, "method": "crossed cluster, BCa", "seed": 0,
                      "units": ["language", "mix"], "confidence_level": 0.95},
        "model": {
            "formula": ("improvement ~ diversity + volume" + interaction_formula
                        + " + (1 | target_task) + (1 | target_task:language) + (1 | mix)"),
            "method": "REML",
            "converged": True,
            "variance_components": [
                {"group": "target_task", "variance": 0.94, "sd": 0.97, "boundary": False},
                {"group": "target_task:language", "variance": 0.61, "sd": 0.78,
                 "boundary": False},
                {"group": "mix", "variance": 0.0, "sd": 0.0, "boundary": True},
                {"group": "residual", "variance": 2.26, "sd": 1.50, "boundary": False},
            ],
            "lrt": {"term": "diversity:volume", "statistic": 0.21, "df": 1, "p_value": 0.65},
        },
        "design": {"diversity_volume_correlation": 0.0, "vif": {"diversity": 1.0, "volume": 1.0},
                   "confounded": verdict == "confounded"},
        "settings": {"diversity_measure": "n_tasks", "volume_measure": "examples"},
        "warnings": ["mix: random-intercept variance estimated at zero (boundary fit)"],
        "source": {"simulated": True, "command": "transferstats simulate --seed 0",
                   "true_effects": dict(TRUE_EFFECTS)} if simulated else None,
    }
    return estimates


def make_result(*, seed: int = 0, interaction: bool = True, simulated: bool = True,
                verdict: str = "inconclusive") -> AnalysisResult:
    """A fake analysis of a 3 x 3 diversity-by-volume grid on the nine XTREME targets.

    Parameters
    ----------
    seed:
        Seed of the generated data.
    interaction:
        Include the ``diversity:volume`` term (effects, bootstrap draws, formula).
    simulated:
        Mark the data as simulated in ``estimates["source"]`` (with the true effects).
    verdict:
        ``estimates["verdict"]``; ``"confounded"`` also sets ``design.confounded``.
    """
    rng = np.random.default_rng(seed)
    data = _model_data(rng)
    estimates = _estimates(data, interaction, simulated, verdict)

    terms = [e["term"] for e in estimates["effects"]]
    centre = np.array([e["estimate"] for e in estimates["effects"]])
    draws = pd.DataFrame(rng.normal(centre, 0.18, size=(estimates["bootstrap"]["resamples"],
                                                          len(terms))), columns=terms)
    draws["diversity - volume"] = draws["diversity"] - draws["volume"]

    languages = (data.groupby("language")["improvement"].apply(_mean_ci).unstack()
                 .reset_index().sort_values("mean").reset_index(drop=True))
    languages["n"] = languages["n"].astype(int)

    interaction_table = (data.groupby(["n_tasks", "examples"])["improvement"].apply(_mean_ci)
                         .unstack().reset_index().rename(columns={"examples": "volume_examples"}))
    interaction_table["n"] = interaction_table["n"].astype(int)

    run_means = data.groupby(["mix", "seed"], as_index=False)["improvement"].mean()
    pairwise = pg.pairwise_tests(run_means, dv="improvement", between="mix", padjust="holm")

    problems = pd.DataFrame([
        {"file": "results/xlmr-large.mnli+squad_v1@10k.xnli.s2/run.json", "location": "status",
         "severity": "error", "message": "run failed: CUDA out of memory; left out"},
        {"file": "results/xlmr-large.mnli@40k.panx.s3/scores.jsonl", "location": "line 12",
         "severity": "warning", "message": "language 'xx' is not an evaluation language of panx"},
    ])
    return AnalysisResult(estimates=estimates, model_data=data, bootstrap_draws=draws,
                          improvement_table=_improvement_table(data), language_table=languages,
                          pairwise=pairwise, interaction_table=interaction_table,
                          run_problems=problems)
