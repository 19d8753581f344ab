"""A realistic fake :class:`AnalysisResult` for the report tests, built without running an analysis.

The data follow a small diversity-by-volume factorial grid on all XTREME targets: mixes of 1, 2 or
4 intermediate tasks at 10k, 40k or 160k examples, three seeds, improvements generated from known
effects (0.9 points per doubling of tasks, 0.6 per doubling of examples) plus crossed random
intercepts and noise. Estimates and bootstrap draws are plausible numbers near the truth, not a
model fit: the report only renders them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pingouin as pg

from transferstats.analysis.covariates import Covariate
from transferstats.analysis.description import Description, DesignCheck, LanguageRule, Source
from transferstats.analysis.descriptives import MixComparisons, RmAnova
from transferstats.analysis.filters import Dropped, TargetSplit
from transferstats.analysis.model import IdentityPlan, ModelStructure
from transferstats.analysis.result import (
    IDENTITY_COLUMNS,
    PER_TARGET_COLUMNS,
    AnalysisResult,
    Comparison,
    Effect,
    FitSummary,
    Heterogeneity,
    IdentityResult,
    IntervalMethod,
    PlainModel,
    SlopeStructure,
    Verdict,
)
from transferstats.tasks import TARGET_TASKS, get_task

TRUE_EFFECTS = {"diversity": 0.9, "volume": 0.6, "diversity:volume": 0.0}
TASK_POOL = ("mnli", "squad_v1", "hellaswag", "ccg")
VOLUMES = (10_000, 40_000, 160_000)
N_TASKS = (1, 2, 4)
SEEDS = (1, 2, 3)
Z95 = 1.959964
PROBLEMS = [
    {"file": "results/xlmr-large.mnli+squad_v1@10k.xnli.s2/run.json", "location": "status",
     "severity": "warning",
     "message": "run xlmr-large.mnli+squad_v1@10k.xnli.s2 failed (CUDA out of memory); left out "
                "of the analysis"},
    {"file": "results/xlmr-large.mnli@40k.panx.s3/scores.jsonl", "location": "line 12",
     "severity": "warning", "message": "language 'xx' is not an evaluation language of panx"},
]
PROBLEM_STRINGS = [f"{p['severity']}: {p['file']}:{p['location']}: {p['message']}" for p in PROBLEMS]


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
                for language in get_task(target).non_english:
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
                            "language": language, "target_language": f"{target}:{language}",
                            "seed": seed, "diversity": diversity,
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
    n_languages = data.groupby(["mix", "target_task"])["language"].nunique()
    table["n_languages"] = [n_languages.loc[mix].sum() if target == "average"
                            else n_languages[(mix, target)]
                            for mix, target in zip(table["mix"], table["target_task"], strict=True)]
    order = {mix: i for i, mix in enumerate(dict.fromkeys(data["mix"]))}
    return (table.sort_values("mix", key=lambda s: s.map(order), kind="stable")
            [["mix", "target_task", "mean", "ci_low", "ci_high", "n_runs", "n_languages"]]
            .reset_index(drop=True))


def _effect(term: str, estimate: float, half_width: float, p_value: float, unit: str) -> Effect:
    se = half_width / Z95
    return Effect(term=term, unit=unit, estimate=estimate, ci_low=estimate - half_width,
                  ci_high=estimate + half_width, se=se, bootstrap_se=se * 1.05, p_value=p_value,
                  p_value_wald=p_value, chi2=15.2,
                  percentile_ci_low=estimate - half_width * 1.02,
                  percentile_ci_high=estimate + half_width * 0.98)


IDENTITY_TASKS = {"mnli": 4.1, "squad_v1": 3.6, "hellaswag": 1.2, "ccg": 0.8}
PLAIN_DIVERSITY = 1.45
RULE = ("identity effects are estimable when every intermediate task is in at least 2 mixes, "
        "the per-mix design (task shares, diversity, volume and the interaction if modelled) "
        "has full column rank, and at least 10 mixes remain beyond that rank to estimate the "
        "mix variance")


def _identity_plan(data: pd.DataFrame, used: bool) -> IdentityPlan:
    if not used:
        return IdentityPlan(used=False, mode="auto", reference=None, rule="the rule",
                            reason="task identity effects are not estimable from this grid: 9 "
                                   "mixes leave 2 degrees of freedom for the mix variance; the "
                                   "primary model is the plain one")
    return IdentityPlan(
        used=True, mode="auto", reference="mnli", rule=RULE,
        reason="the grid can estimate them: every task is in at least 6 mixes, the per-mix "
               "design has full rank (7) and 11 mixes remain for the mix variance",
        estimability={"tasks": list(IDENTITY_TASKS), "n_mixes": data["mix"].nunique(),
                      "rank": 7, "columns": 7, "mix_df": 11, "estimable": True,
                      "task_mixes": dict.fromkeys(IDENTITY_TASKS, 6), "reference": "mnli",
                      "min_mixes_per_task": 2, "min_mix_df": 10})


def _identity_rows() -> tuple[dict, ...]:
    mean = sum(IDENTITY_TASKS.values()) / len(IDENTITY_TASKS)
    return tuple({"task": task, "estimate": value, "ci_low": value - 0.9, "ci_high": value + 0.9,
                  "bootstrap_se": 0.46, "relative": value - mean,
                  "relative_ci_low": value - mean - 0.5, "relative_ci_high": value - mean + 0.5,
                  "n_mixes": 6, "mean_share": 0.45, "resamples_without": 0,
                  "reference": task == "mnli"} for task, value in IDENTITY_TASKS.items())


def _plain(effects: tuple[Effect, ...], comparison: Comparison, verdict: str) -> PlainModel:
    """The plain model's entry: a diversity effect inflated by composition."""
    plain_effects = (replace(effects[0], estimate=PLAIN_DIVERSITY, ci_low=1.15, ci_high=1.75),
                     *effects[1:])
    plain_comparison = replace(comparison, estimate=0.82, ci_low=0.45, ci_high=1.2)
    sentence = ("The apparent diversity effect is explained by which tasks the mixes contain: the "
                f"plain model gives diversity {PLAIN_DIVERSITY:.2f} [1.15, 1.75] and verdict "
                f"supported, the model with task identity effects 0.87 [0.52, 1.22] and verdict "
                f"{verdict}.")
    return PlainModel(
        same_as_primary=False, fitted=True,
        formula="improvement ~ diversity + volume + (1 | target_task) + (1 | mix)",
        effects=plain_effects, comparison=plain_comparison,
        verdict=Verdict("supported", "diversity's benefit exceeds volume's: the interval of the "
                                     "difference [0.45, 1.20] lies above zero"),
        failed_resamples=0, disagrees=verdict != "supported",
        explained_by_composition=verdict != "supported",
        disagreement_rule="their verdicts differ or the plain model's diversity estimate lies "
                          "outside the identity-adjusted model's diversity interval",
        sentence=sentence)


def _per_target(data: pd.DataFrame) -> tuple[pd.DataFrame, Heterogeneity]:
    rows = []
    for i, target in enumerate(sorted(data["target_task"].unique())):
        for term, centre in (("diversity", 0.6 + 0.08 * i), ("volume", 0.6),
                             ("diversity - volume", 0.08 * i)):
            rows.append({"target": target, "term": term, "estimate": centre,
                         "ci_low": centre - 0.4, "ci_high": centre + 0.4, "bootstrap_se": 0.2,
                         "percentile_ci_low": centre - 0.41, "percentile_ci_high": centre + 0.39})
    n = len(rows) // 3
    return (pd.DataFrame(rows, columns=list(PER_TARGET_COLUMNS)),
            Heterogeneity(tested=True, chi2=30.1, df=2 * (n - 1), p_value=0.018, differ=True,
                          targets=tuple(sorted(data["target_task"].unique())),
                          random=("target_task", "target_language", "mix", "mix_target"),
                          n_failed=0, reason="likelihood-ratio test"))


REASONS = {
    "inconclusive": ("the interval of the difference [-0.17, 0.66] includes zero; the grid "
                     "could detect a difference of 0.48 points with the stated power"),
    "supported": ("diversity's benefit exceeds volume's: the interval of the difference "
                  "[0.12, 0.66] lies above zero"),
    "refuted": ("volume's benefit exceeds diversity's: the interval of the difference "
                "[-0.66, -0.12] lies below zero"),
    "confounded": ("diversity and volume are too collinear across mixes (r = 0.990, VIF = "
                   "50.3; threshold |r| < 0.9)"),
}


def _description(data: pd.DataFrame, simulated: bool, verdict: str,
                 covariates: tuple[Covariate, ...]) -> Description:
    confounded = verdict == "confounded"
    check = DesignCheck(
        n_mixes=data["mix"].nunique(), varies="both", single_factor=None, fixed_at=None,
        correlation=0.99 if confounded else 0.0, vif=50.3 if confounded else 1.0,
        confounded=confounded, reason=REASONS["confounded"] if confounded else "",
        max_correlation=0.9, diversity_levels=tuple(float(n) for n in N_TASKS),
        volume_levels=VOLUMES, centre_log2={"diversity": 1.0, "volume": 15.3})
    truth = {"diversity_effect": TRUE_EFFECTS["diversity"], "volume_effect": TRUE_EFFECTS["volume"],
             "interaction": TRUE_EFFECTS["diversity:volume"], "intercept": 1.5, "seed_sd": 1.5,
             "random_state": 0}
    source = Source("examples/simulated", True, truth) if simulated else Source("results/", False)
    targets = tuple(sorted(data["target_task"].unique()))
    return Description(
        source=source, model="xlm-roberta-large", models=("xlm-roberta-large",), kind="task",
        outcome="improvement", outcome_reason="auto: the results hold baseline runs",
        diversity="n_tasks", languages=tuple(sorted(data["language"].unique())),
        language_rule=LanguageRule(False, True, "English is the language of the intermediate "
                                                "tasks; left out"),
        splits=tuple(TargetSplit(t, "test", ("test",), "the only split its runs hold")
                     for t in targets),
        has_baselines=True, targets=targets, mixes=tuple(sorted(data["mix"].unique())),
        seeds_per_cell=(3, 3), replicated_mixes=tuple(sorted(data["mix"].unique())),
        covariates=covariates, check=check,
        dropped=(Dropped("English", "xnli", 240, 81, "English is the language of the "
                                                     "intermediate tasks"),
                 Dropped("failed run", "xnli", 0, 1, "1 run(s) failed")),
        runs_complete=data["run_id"].nunique(), runs_failed=1, n_rows=len(data),
        n_runs=data["run_id"].nunique())


TARGET_IN_MIX = Covariate("target_in_mix", "built in: share of the mix's examples that come "
                                           "from the target's own training task",
                          0.12, 0.2, 0.0, 1.0)


def _terms(interaction: bool, identity: bool) -> tuple[Effect, ...]:
    effects = [
        _effect("diversity", 0.87, 0.35, 4e-5, "points per doubling of the number of tasks"),
        _effect("volume", 0.63, 0.23, 0.0006, "points per doubling of intermediate examples"),
    ]
    if interaction:
        effects.append(_effect("diversity:volume", -0.04, 0.17, math.nan,
                               "points per doubling of both"))
    if identity:
        effects.append(_effect("target_in_mix", 0.9, 0.5, 0.002,
                               "points per unit of target_in_mix (centred at its mean 0.12)"))
    return tuple(effects)


def _structure(interaction: bool, plan: IdentityPlan, covariates: tuple[str, ...]
               ) -> ModelStructure:
    mix_terms = ("diversity", "volume", "diversity:volume") if interaction else ("diversity", "volume")
    return ModelStructure(outcome="improvement", mix_terms=mix_terms, covariates=covariates,
                          random=("target_task", "target_language", "mix"), identity=plan,
                          shares=tuple(f"share[{t}]" for t in IDENTITY_TASKS if t != "mnli")
                          if plan.used else ())


def make_result(*, seed: int = 0, interaction: bool = True, simulated: bool = True,
                verdict: str = "inconclusive", identity: bool = True) -> AnalysisResult:
    """A fake analysis of a 3 x 3 diversity-by-volume grid on the nine XTREME targets.

    Parameters
    ----------
    seed:
        Seed of the generated data.
    interaction:
        Include the ``diversity:volume`` term (effects, bootstrap draws, formula).
    simulated:
        Mark the data as simulated (with the true effects).
    verdict:
        The verdict; ``"confounded"`` also sets the design check's ``confounded``.
    identity:
        The primary model has task identity effects (parametric bootstrap), a plain model
        beside it that disagrees, per-target effects and a covariate; otherwise the primary model
        is the plain one and identity effects are "not estimable".
    """
    rng = np.random.default_rng(seed)
    data = _model_data(rng)
    used = identity and verdict != "confounded"
    covariates = (TARGET_IN_MIX,) if used else ()
    description = _description(data, simulated, verdict, covariates)
    structure = _structure(interaction, _identity_plan(data, used), tuple(c.name for c in covariates))
    terms = _terms(interaction, used)
    comparison = Comparison("diversity - volume", {"diversity": 1.0, "volume": -1.0},
                            "higher is better", estimate=0.24, ci_low=-0.17, ci_high=0.66,
                            bootstrap_se=0.17, minimum_detectable_difference=0.48,
                            percentile_ci_low=-0.18, percentile_ci_high=0.65)
    decision = Verdict(verdict, REASONS[verdict])
    intervals = IntervalMethod(resampling="crossed cluster", method="crossed cluster, BCa",
                               resamples=1000, seed=0, level=0.95, units=("language", "mix"),
                               replicates="seeds resampled within (mix, target)",
                               failed_resamples=0)
    if used:
        intervals = replace(intervals, method="parametric, antithetic pairs, percentile, t(11)",
                            resampling="parametric", t_df=11, plain_method="crossed cluster, BCa",
                            replicates="random effects and residuals redrawn from the fitted "
                                       "model")
        plain = _plain(terms, comparison, verdict)
        identity_result = IdentityResult(structure.identity, _identity_rows(),
                                         {"chi2": 41.2, "df": 3, "p_value": 5.9e-9})
    else:
        plain = PlainModel(same_as_primary=True, fitted=True, formula="", effects=terms,
                           comparison=comparison, verdict=decision, failed_resamples=0)
        identity_result = IdentityResult(structure.identity)
    per_target, heterogeneity = _per_target(data)
    fit = FitSummary(method="fast", converged=True,
                     variance_components={"target_task": 0.94, "target_language": 0.61, "mix": 0.0},
                     residual_variance=2.26, on_boundary=("mix",), reml_log_likelihood=-8123.4)

    names = [e.term for e in terms]
    centre = np.array([e.estimate for e in terms], dtype=float)
    draws = pd.DataFrame(rng.normal(centre, 0.18, size=(intervals.resamples, len(names))),
                         columns=names)
    draws["diversity - volume"] = draws["diversity"] - draws["volume"]

    languages = (data.groupby("language")["improvement"].apply(_mean_ci).unstack()
                 .reset_index().sort_values("mean").reset_index(drop=True))
    languages["n"] = languages["n"].astype(int)

    interaction_table = (data.groupby(["n_tasks", "examples"])["improvement"].apply(_mean_ci)
                         .unstack().reset_index().rename(columns={"examples": "volume_examples"}))
    interaction_table["n"] = interaction_table["n"].astype(int)

    subject_means = data.groupby(["target_language", "mix"], as_index=False)["improvement"].mean()
    pairwise = pg.pairwise_tests(subject_means, dv="improvement", within="mix",
                                 subject="target_language", padjust="holm", effsize="hedges")
    problems = pd.DataFrame(PROBLEMS, columns=["file", "location", "severity", "message"])
    comparisons = MixComparisons(
        rm_anova=RmAnova(subjects="target_language", n_subjects=160, F=210.4, ddof1=8.0,
                         ddof2=1272.0, p_unc=1e-150, p_gg=1e-120, ng2=0.31, eps=0.82),
        pairwise=pairwise, skipped=())
    return AnalysisResult(
        description=description, structure=structure, terms=terms, comparison=comparison,
        decision=decision, intervals=intervals, fit=fit, identity=identity_result,
        slopes=SlopeStructure((), "random slopes turned off (random_slopes = \"off\")"), plain=plain,
        heterogeneity=heterogeneity, coverage=None, comparisons=comparisons, collinearity=None,
        model_data=data,
        bootstrap_draws=draws, improvement_table=_improvement_table(data),
        language_table=languages, interaction_table=interaction_table,
        problems=problems,
        identity_table=pd.DataFrame(list(identity_result.tasks), columns=list(IDENTITY_COLUMNS)),
        per_target_table=per_target)


def make_unfittable_result() -> AnalysisResult:
    """What the analysis returns when diversity and volume are perfectly collinear: a
    ``confounded`` verdict, no estimates (``None``), no bootstrap draws, NaN fitted values."""
    result = make_result(verdict="confounded")
    reason = ("only diversity varies across the 9 mixes (or there are fewer than 3 mixes), so "
              "the two effects cannot be separated")
    description = result.description
    check = replace(description.check, correlation=None, vif=None, reason=reason)
    return replace(
        result, description=replace(description, check=check),
        terms=tuple(Effect(e.term, e.unit) for e in result.terms),
        comparison=Comparison(result.comparison.contrast, result.comparison.weights,
                              result.comparison.direction),
        decision=Verdict("confounded", reason), fit=None,
        model_data=result.model_data.assign(fitted=math.nan, residual=math.nan),
        bootstrap_draws=pd.DataFrame(columns=[*result.structure.fixed, "diversity - volume"]))
