"""The whole analysis: load -> derive -> design check -> mixed model -> crossed bootstrap -> verdict,
plus the descriptive tables. :func:`analyze_loaded` returns an :class:`AnalysisResult`; it writes
nothing. Users call :func:`transferstats.analyze`, which loads the input first.

Model (Bates et al. 2015 notation)::

    outcome ~ diversity + volume (+ diversity:volume)
              + (1 | target_task) + (1 | target_task:language) + (1 | mix)

fitted by REML; each fixed term is tested by an ML likelihood-ratio test; intervals come from a
bootstrap that resamples languages and mixes (crossed units) and seeds within cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from transferstats.analysis import descriptives
from transferstats.analysis.bootstrap import crossed_bootstrap
from transferstats.analysis.design import SEPARABLE_CORRELATION, design_check
from transferstats.analysis.derive import (DIVERSITY_MEASURES, LOWER_IS_BETTER, OUTCOMES,
                                           ROW_OUTCOMES, mix_table, model_frame, select_metric)
from transferstats.analysis.mixed import fit_crossed, likelihood_ratio_test
from transferstats.analysis.result import CONTRAST, PROBLEM_COLUMNS, AnalysisResult
from transferstats.analysis.spec import AnalysisSpec
from transferstats.loading import LoadedResults
from transferstats.problems import Problem, ResultsError
from transferstats.results import SIMULATION_FILE

INTERACTION = "diversity:volume"
DIVERSITY_UNITS = {
    "n_tasks": "points per doubling of the number of tasks",
    "n_formats": "points per doubling of the number of task formats",
    "effective_tasks": "points per doubling of the effective number of tasks",
}


def minimum_detectable_difference(standard_error: float, level: float, power: float) -> float:
    """Smallest true difference detected with probability ``power`` by a two-sided test at
    1 - ``level``: (z_{1-α/2} + z_{power}) × SE (Cohen 1988; Bloom 1995, "Minimum detectable
    effects")."""
    alpha = 1 - level
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * standard_error)


MAX_FAILED_SHARE = 0.05


def decide(comparison: dict, design: dict, failed_share: float = 0.0) -> tuple[str, str]:
    """The verdict and a one-sentence reason. When more than ``MAX_FAILED_SHARE`` of the
    bootstrap resamples cannot be fitted (too few mixes or languages to resample), the intervals
    are conditional on the lucky resamples, so no direction is claimed."""
    if design["confounded"]:
        return "confounded", design["reason"]
    if failed_share > MAX_FAILED_SHARE:
        return "inconclusive", (f"{failed_share:.0%} of the bootstrap resamples could not be fitted "
                                "(too few mixes or languages to resample), so the intervals are "
                                "not trustworthy; the grid needs more mixes")
    low, high = comparison["ci_low"], comparison["ci_high"]
    interval = f"[{low:.2f}, {high:.2f}]"
    if low > 0:
        return "supported", (f"diversity's benefit exceeds volume's: the interval of the difference "
                             f"{interval} lies above zero")
    if high < 0:
        return "refuted", (f"volume's benefit exceeds diversity's: the interval of the difference "
                           f"{interval} lies below zero")
    return "inconclusive", (f"the interval of the difference {interval} includes zero; the grid "
                            f"could detect a difference of {comparison['minimum_detectable_difference']:.2f} "
                            "points with the stated power")


def _source(path: str | Path) -> dict:
    path = Path(path)
    truth_file = path / SIMULATION_FILE if path.is_dir() else None
    if truth_file is not None and truth_file.is_file():
        return {"path": str(path), "simulated": True, "truth": json.loads(truth_file.read_text())}
    return {"path": str(path), "simulated": False}


def _random_factors(data: pd.DataFrame, outcome: str) -> tuple[list[str], list[str]]:
    """Random-intercept factors with at least two levels, and notes on those dropped."""
    candidates = ["target_task", "target_language", "mix"] if outcome in ROW_OUTCOMES else ["target_task", "mix"]
    kept, notes = [], []
    for factor in candidates:
        if data[factor].nunique() >= 2:
            kept.append(factor)
        else:
            notes.append(f"random intercept for {factor} dropped: it has a single level")
    return kept, notes


def _interaction_estimable(data: pd.DataFrame) -> bool:
    """Whether intercept, diversity, volume and their product are linearly independent across
    mixes (they are constant within a mix, so the mixes alone decide)."""
    per_mix = data.drop_duplicates("mix")
    design = np.column_stack([np.ones(len(per_mix)), per_mix["diversity"], per_mix["volume"],
                              per_mix[INTERACTION]])
    return np.linalg.matrix_rank(design) == design.shape[1]


def _centre(data: pd.DataFrame, interaction: bool) -> tuple[pd.DataFrame, dict]:
    """Centre diversity and volume at their mean over mixes, so main effects are at the design
    centre even with the interaction in the model."""
    per_mix = data.drop_duplicates("mix")
    centre = {"diversity": float(per_mix["diversity"].mean()), "volume": float(per_mix["volume"].mean())}
    data = data.assign(diversity=data["diversity"] - centre["diversity"],
                       volume=data["volume"] - centre["volume"])
    if interaction:
        data[INTERACTION] = data["diversity"] * data["volume"]
    return data, centre


def analyze_loaded(loaded: LoadedResults, spec: AnalysisSpec = AnalysisSpec(), *,
                   n_jobs: int | None = None, progress: bool = True) -> AnalysisResult:
    """Run the whole analysis on loaded results. Raises :class:`ResultsError` when the data cannot
    answer the question (every reason listed); warnings travel in ``estimates["warnings"]``."""
    if loaded.errors:
        raise ResultsError(loaded.problems)
    problems: list[Problem] = list(loaded.problems)
    scores = loaded.scores
    models = sorted(scores["model"].unique())
    if spec.model:
        if spec.model not in models:
            raise ResultsError([Problem(loaded.source, "model", "error",
                                        f"model {spec.model!r} not in the results ({', '.join(models)})")])
        scores = scores[scores["model"] == spec.model]
    elif len(models) > 1:
        raise ResultsError([Problem(loaded.source, "model", "error",
                                    f"the results hold several models ({', '.join(models)}); "
                                    "pick one with --model")])
    scores, metric_problems = select_metric(scores, spec.headline_metric, spec.split)
    problems += metric_problems
    data, derive_problems = model_frame(scores, outcome=spec.outcome, diversity=spec.diversity,
                                        include_english=spec.include_english)
    problems += derive_problems
    if data.empty or data["mix"].nunique() < 2:
        raise ResultsError(problems + [Problem(loaded.source, "", "error",
                                               "fewer than two intermediate mixes with usable scores: "
                                               "nothing to compare")])

    mixes = mix_table(scores)
    mixes = mixes[mixes["mix"].isin(data["mix"])]
    design = design_check(mixes, spec.diversity, spec.max_correlation)
    data, centre = _centre(data, spec.interaction)
    design["centre_log2"] = centre
    random, notes = _random_factors(data, spec.outcome)
    fixed = ["diversity", "volume"]
    if spec.interaction:
        if _interaction_estimable(data):
            fixed.append(INTERACTION)
        else:
            note = ("the diversity x volume interaction is not estimable from this grid's "
                    f"{data['mix'].nunique()} mixes (too few distinct design points); it was left "
                    "out of the model")
            notes.append(note)
            problems.append(Problem(loaded.source, "interaction", "warning", note))
    units = [u for u in spec.units if u in data.columns and data[u].nunique() >= 2]
    direction = -1.0 if spec.outcome in LOWER_IS_BETTER else 1.0
    contrast_weights = {"diversity": direction, "volume": -direction}

    identifiable = design["correlation"] is not None and abs(design["correlation"]) < SEPARABLE_CORRELATION
    if identifiable:
        try:
            fit = fit_crossed(data, spec.outcome, fixed, random, reml=True)
        except (np.linalg.LinAlgError, ValueError) as error:
            raise ResultsError(problems + [Problem(loaded.source, "model", "error",
                                                   f"the mixed model could not be fitted: {error}")]) from error
        tests = {term: likelihood_ratio_test(data, spec.outcome, fixed, random, term) for term in fixed}
        boot = crossed_bootstrap(data, spec.outcome, fixed, random, units=tuple(units),
                                 contrasts={CONTRAST: contrast_weights}, n_resamples=spec.resamples,
                                 seed=spec.seed, n_jobs=n_jobs, progress=progress)
        intervals = boot.intervals(level=spec.level, kind=spec.interval).set_index("term")
        percentile = boot.intervals(level=spec.level, kind="percentile").set_index("term")
        if boot.n_failed:
            problems.append(Problem(loaded.source, "bootstrap", "warning",
                                    f"{boot.n_failed} of {boot.n_resamples} resamples failed to fit "
                                    "and are not in the intervals"))
        data = data.assign(fitted=fit.fitted, residual=fit.residuals)
        draws = boot.draws
    else:
        fit, tests, boot, intervals, percentile = None, {}, None, None, None
        data = data.assign(fitted=np.nan, residual=np.nan)
        draws = pd.DataFrame(columns=[*fixed, CONTRAST])

    units_text = {"diversity": DIVERSITY_UNITS[spec.diversity],
                  "volume": "points per doubling of intermediate examples",
                  INTERACTION: "points per doubling of both"}
    wald = fit.summary_frame().set_index("term") if fit is not None else None
    effects = []
    for term in fixed:
        effect = {"term": term, "unit": units_text[term], "estimate": None, "se": None,
                  "p_value": None, "p_value_wald": None, "chi2": None}
        if fit is not None:
            effect |= {"estimate": float(wald.at[term, "estimate"]), "se": float(wald.at[term, "se"]),
                       "p_value_wald": float(wald.at[term, "p_value"]),
                       "p_value": float(tests[term]["p_value"]), "chi2": float(tests[term]["chi2"])}
        effects.append(effect | _interval_fields(term, intervals, percentile))

    comparison = {"contrast": CONTRAST, "weights": contrast_weights,
                  "direction": "higher is better" if direction > 0 else
                               "lower is better: the contrast is -(diversity) - (-(volume)), so "
                               "positive still favours diversity",
                  "estimate": float(boot.estimate[CONTRAST]) if boot is not None else None}
    comparison |= _interval_fields(CONTRAST, intervals, percentile)
    comparison["minimum_detectable_difference"] = None if boot is None else \
        minimum_detectable_difference(comparison["bootstrap_se"], spec.level, spec.power)
    failed_share = boot.n_failed / boot.n_resamples if boot is not None else 0.0
    verdict, reason = decide(comparison, design, failed_share)

    model_info = {"formula": _formula(spec.outcome, fixed, random), "random": random, "fixed": fixed,
                  "notes": notes}
    if fit is not None:
        model_info |= {"method": fit.method, "converged": bool(fit.converged),
                       "variance_components": {k: float(v) for k, v in fit.variance_components.items()},
                       "residual_variance": float(fit.residual_variance), "on_boundary": list(fit.on_boundary),
                       "reml_log_likelihood": float(fit.llf)}
        if not fit.converged:
            problems.append(Problem(loaded.source, "model", "warning", "the REML fit did not converge"))
    improvement_table = descriptives.improvement_table(scores, spec, mixes)
    estimates = {
        "outcome": spec.outcome,
        "outcome_description": OUTCOMES[spec.outcome],
        "diversity_measure": spec.diversity,
        "diversity_description": DIVERSITY_MEASURES[spec.diversity],
        "n_rows": int(len(data)),
        "n_runs": int(data["run_id"].nunique()),
        "n_mixes": int(data["mix"].nunique()),
        "targets": sorted(data["target_task"].unique()),
        "languages": sorted(data["language"].unique()) if "language" in data else [],
        "effects": effects,
        "comparison": comparison,
        "verdict": verdict,
        "verdict_reason": reason,
        "minimum_detectable_difference": comparison["minimum_detectable_difference"],
        "bootstrap": {"resamples": spec.resamples,
                      "method": "crossed cluster, " + ("BCa" if spec.interval == "bca" else "percentile"),
                      "seed": spec.seed, "level": spec.level, "units": units,
                      "replicates": "seeds resampled within (mix, target)",
                      "failed_resamples": int(boot.n_failed) if boot is not None else None},
        "model": model_info,
        "design": design,
        "descriptives": descriptives.omnibus(data, spec.outcome),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(spec).items()
                     if k != "tasks"} | {"tasks": [task.id for task in spec.tasks]},
        "runs": {"complete": int((loaded.runs["status"] == "complete").sum()),
                 "failed": int((loaded.runs["status"] == "failed").sum())},
        "warnings": [str(p) for p in problems if p.severity == "warning"],
        "source": _source(loaded.source),
    }
    return AnalysisResult(
        estimates=estimates,
        model_data=data,
        bootstrap_draws=draws,
        improvement_table=improvement_table,
        language_table=descriptives.language_table(data, spec),
        pairwise=descriptives.pairwise_mixes(data, spec.outcome),
        interaction_table=descriptives.interaction_table(data, spec),
        problems=pd.DataFrame([vars(p) for p in problems], columns=PROBLEM_COLUMNS),
        settings=spec,
    )


def _interval_fields(name: str, intervals: pd.DataFrame | None, percentile: pd.DataFrame | None) -> dict:
    """The bootstrap interval (chosen kind), its standard error and the percentile interval of
    one term or contrast; all None when nothing was fitted."""
    if intervals is None:
        return dict.fromkeys(("ci_low", "ci_high", "bootstrap_se", "percentile_ci_low",
                              "percentile_ci_high"))
    return {"ci_low": float(intervals.at[name, "ci_low"]), "ci_high": float(intervals.at[name, "ci_high"]),
            "bootstrap_se": float(intervals.at[name, "se"]),
            "percentile_ci_low": float(percentile.at[name, "ci_low"]),
            "percentile_ci_high": float(percentile.at[name, "ci_high"])}


def _formula(outcome: str, fixed: list[str], random: list[str]) -> str:
    return f"{outcome} ~ {' + '.join(fixed)} + " + " + ".join(f"(1 | {factor})" for factor in random)
