"""The whole analysis: load -> derive -> design check -> mixed model -> crossed bootstrap -> verdict,
plus the descriptive tables. :func:`analyze_loaded` returns an :class:`AnalysisResult`; it writes
nothing. Users call :func:`transferstats.analyze`, which loads the input first.

Model (Bates et al. 2015 notation)::

    outcome ~ diversity + volume (+ diversity:volume)
              + (1 | target_task) + (1 | target_task:language) + (1 | mix)

fitted by REML; each fixed term is tested by an ML likelihood-ratio test; intervals come from a
bootstrap that resamples languages and mixes (crossed units) and seeds within cells.

When the grid can estimate them (:mod:`transferstats.analysis.identity`), the *primary* model
adds each intermediate task's identity effect by its share of the mix ("diversity beyond
identity"); the plain model above is then fitted and bootstrapped as well (same seed, so the
same resamples) and reported beside it. The verdict is the primary model's. A per-target model
(one diversity and one volume slope per target) gives per-target effects and a test of their
heterogeneity. Covariates (``spec.covariates``) are centred fixed effects, outside the contrast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from transferstats.analysis import descriptives
from transferstats.analysis.bootstrap import BootstrapResult, crossed_bootstrap
from transferstats.analysis.coverage import study_coverage
from transferstats.analysis.derive import (
    AUTO_OUTCOME,
    BUILTIN_COVARIATES,
    LOWER_IS_BETTER,
    NO_BASELINE_CHOICE,
    OUTCOMES,
    ROW_OUTCOMES,
    TASK_ONLY_MEASURES,
    diversity_description,
    mix_table,
    model_frame,
    select_metric,
    target_in_mix,
)
from transferstats.analysis.design import SEPARABLE_CORRELATION, design_check
from transferstats.analysis.identity import (
    add_share_columns,
    identity_contrasts,
    identity_estimability,
    identity_output,
    per_target_columns,
    relative_output,
    share_column,
    share_table,
    target_column,
)
from transferstats.analysis.members import TASK_WORDS, MemberWords, member_words, source_kind
from transferstats.analysis.mixed import CrossedFit, fit_crossed
from transferstats.analysis.parametric import ParametricBootstrap, parametric_bootstrap
from transferstats.analysis.result import (
    CONTRAST,
    IDENTITY_COLUMNS,
    PER_TARGET_COLUMNS,
    PROBLEM_COLUMNS,
    AnalysisResult,
)
from transferstats.analysis.spec import AnalysisSpec
from transferstats.loading import LoadedResults
from transferstats.problems import Problem, ResultsError
from transferstats.results import BASELINE_MIX, SIMULATION_FILE, SOURCE_KIND_COLUMN

INTERACTION = "diversity:volume"
#: Slopes that the per-target model gives one column per target.
PER_TARGET_TERMS = ("diversity", "volume")
#: The (mix, target) cell factor of the heterogeneity test.
MIX_TARGET = "mix_target"
#: Bootstrap output -> ``{"ci_low", "ci_high", "se"}``.
Intervals = dict[str, dict[str, float]]
#: Unit of the diversity effect per measure; ``{members}`` is the members' plural ("tasks",
#: "languages").
DIVERSITY_UNITS = {
    "n_tasks": "points per doubling of the number of {members}",
    "n_formats": "points per doubling of the number of task formats",
    "effective_tasks": "points per doubling of the effective number of {members}",
}


def minimum_detectable_difference(standard_error: float, level: float, power: float) -> float:
    """Smallest true difference detected with probability ``power`` by a two-sided test at
    1 - ``level``: (z_{1-α/2} + z_{power}) × SE (Cohen 1988; Bloom 1995, "Minimum detectable
    effects")."""
    alpha = 1 - level
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * standard_error)


MAX_FAILED_SHARE = 0.05


#: The verdict values, in docs/statistics.md's words.
VERDICTS = {
    "supported": "both vary; the interval of diversity - volume lies above zero",
    "refuted": "both vary; the interval of diversity - volume lies below zero",
    "inconclusive": "both vary; the interval of diversity - volume includes zero, or too many "
                    "bootstrap resamples failed",
    "confounded": "diversity and volume cannot be separated (|r| at or above the threshold), "
                  "neither varies, or fewer than 3 mixes",
    "diversity_only": "only diversity varies (a fixed-budget grid): its effect is estimated, the "
                      "comparison with volume is not possible",
    "volume_only": "only volume varies (e.g. a single-source grid): its effect is estimated, the "
                   "comparison with diversity is not possible",
}


def _single_factor_reason(design: dict, effect: dict | None, failed_share: float) -> str:
    """The reason of a ``diversity_only`` / ``volume_only`` verdict: what varies, the effect with
    its interval, and what the grid cannot answer."""
    varied = design["single_factor"]
    other = "volume" if varied == "diversity" else "diversity"
    reason = f"{varied} varies, {other} is fixed at {design['fixed_at']}"
    if effect is not None and effect["estimate"] is not None:
        reason += (f"; the {varied} effect is {effect['estimate']:.2f} {effect['unit']} "
                   f"[{effect['ci_low']:.2f}, {effect['ci_high']:.2f}]")
    if failed_share > MAX_FAILED_SHARE:
        reason += (f" ({failed_share:.0%} of the bootstrap resamples could not be fitted, so the "
                   "interval is not trustworthy)")
    return reason + f"; comparing it with {other} needs mixes that vary both"


def decide(comparison: dict, design: dict, failed_share: float = 0.0,
           effects: list[dict] | None = None) -> tuple[str, str]:
    """The verdict (one of :data:`VERDICTS`) and a one-sentence reason.

    A grid that varies only one factor gets ``diversity_only`` or ``volume_only`` whatever its
    estimate: it cannot answer the comparison, and its reason quotes the effect of ``effects``
    it can estimate. When more than ``MAX_FAILED_SHARE`` of the bootstrap resamples cannot be
    fitted (too few mixes or languages to resample), the intervals are conditional on the lucky
    resamples, so no direction is claimed."""
    if design["confounded"]:
        return "confounded", design["reason"]
    varied = design.get("single_factor")
    if varied:
        effect = next((e for e in effects or [] if e["term"] == varied), None)
        return f"{varied}_only", _single_factor_reason(design, effect, failed_share)
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
    # A simulated flat table X.csv has its truth beside it as X.simulation.json.
    truth_file = path / SIMULATION_FILE if path.is_dir() else path.with_suffix(f".{SIMULATION_FILE}")
    if truth_file.is_file():
        return {"path": str(path), "simulated": True, "truth": json.loads(truth_file.read_text())}
    return {"path": str(path), "simulated": False}


#: Most mixes with which ``(1 | target_task:mix)`` is fitted. The mix-by-target cells are
#: eliminated and the mixes, in which they are nested, stay in the solver's remaining levels
#: (transferstats.analysis.blocks): each evaluation of the likelihood then costs
#: mixes x (target-languages)^2 (10,000 mixes by 200 target-languages: products of 4 x 10^8
#: multiply-adds, several per evaluation, in each of a thousand refits), where without the term
#: the mixes themselves are eliminated at the cost of one pass over them.
TARGET_MIX_MAX_MIXES = 2_000


def _random_factors(data: pd.DataFrame, outcome: str, target_mix: bool = True
                    ) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Random-intercept factors with at least two levels, and notes on those dropped.

    With ``target_mix``, a random intercept per (mix, target) cell (``mix_target``) joins them
    when there are two targets or more and the cells hold several rows (languages or seeds):
    a mix helps some targets more than others (Phang et al. 2020), and without the term that
    variation is counted as seed noise. With one row per cell it could not be told from the
    residual and is left out with a note. The data gain the ``mix_target`` column.
    """
    candidates = (["target_task", "target_language", "mix"] if outcome in ROW_OUTCOMES
                  else ["target_task", "mix"])
    kept, notes = [], []
    for factor in candidates:
        if data[factor].nunique() >= 2:
            kept.append(factor)
        else:
            notes.append(f"random intercept for {factor} dropped: it has a single level")
    if target_mix and data["target_task"].nunique() >= 2 and data["mix"].nunique() >= 2:
        cell = data["mix"].astype(str) + "|" + data["target_task"].astype(str)
        if cell.nunique() < len(data):
            data = data.assign(**{MIX_TARGET: cell})
            kept.append(MIX_TARGET)
        else:
            notes.append("random intercept for target_task:mix dropped: each (mix, target) cell "
                         "holds a single row, so it cannot be told from the residual")
    return data, kept, notes


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


@dataclass
class FittedModel:
    """One model, fitted by REML, its terms tested by ML likelihood-ratio tests and bootstrapped.

    ``core`` are the outputs a resample must estimate to count (the effects and the contrast):
    where one of them is missing the resample is failed for all of them, so that every core
    interval rests on the same resamples. Identity outputs may be missing on their own, in the
    resamples that hold no mix with the task (:func:`transferstats.analysis.bootstrap.refit`).
    """

    fixed: list[str]
    random: list[str]
    fit: CrossedFit
    boot: BootstrapResult | ParametricBootstrap
    intervals: Intervals
    percentile: Intervals
    tests: dict[str, dict]
    n_failed: int

    @property
    def failed_share(self) -> float:
        return self.n_failed / self.boot.n_resamples


def analyze_loaded(loaded: LoadedResults, spec: AnalysisSpec = AnalysisSpec(), *,
                   n_jobs: int | None = None, progress: bool = True,
                   companions: bool = True) -> AnalysisResult:
    """Run the whole analysis on loaded results. Raises :class:`ResultsError` when the data cannot
    answer the question (every reason listed); warnings travel in ``estimates["warnings"]``.

    ``companions=False`` fits the primary model only, without the plain model beside an
    identity model and without the per-target model (for simulation studies of the verdict,
    which depends on the primary model alone).
    """
    if loaded.errors:
        raise ResultsError(loaded.problems)
    problems: list[Problem] = list(loaded.problems)
    scores = loaded.scores.assign(score_row=np.arange(len(loaded.scores)))
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
    kind = source_kind(scores)
    if kind == "language" and spec.diversity in TASK_ONLY_MEASURES:
        raise ResultsError(problems + [Problem(
            loaded.source, "diversity", "error",
            f"diversity measure {spec.diversity!r} cannot describe language mixes: "
            f"{TASK_ONLY_MEASURES[spec.diversity]}; use n_tasks (the number of source languages) "
            "or effective_tasks")])
    spec, outcome_choice = _resolve_outcome(scores, spec, loaded.source, problems)
    scores = _covariate_columns(scores, loaded, spec, kind)
    scores, metric_problems = select_metric(scores, spec.headline_metric, spec.split)
    problems += metric_problems
    if spec.outcome not in ROW_OUTCOMES:
        _check_run_covariates(scores, loaded, spec)
    data, derive_problems = model_frame(scores, outcome=spec.outcome, diversity=spec.diversity,
                                        include_english=spec.include_english,
                                        covariates=spec.covariates)
    problems += derive_problems
    if data.empty or data["mix"].nunique() < 2:
        raise ResultsError(problems + [Problem(loaded.source, "", "error",
                                               "fewer than two intermediate mixes with usable scores: "
                                               "nothing to compare")])
    data, covariates = _check_covariates(data, loaded, spec, kind)

    mixes = mix_table(scores)
    # isin over the distinct mixes: over a million Arrow-backed strings it took 29 s (busy cores).
    mixes = mixes[mixes["mix"].isin(data["mix"].unique())]
    design = design_check(mixes, spec.diversity, spec.max_correlation)
    single = design["single_factor"]
    data, centre = _centre(data, spec.interaction and single is None)
    design["centre_log2"] = centre
    n_mixes = data["mix"].nunique()
    target_mix = spec.target_mix and n_mixes <= TARGET_MIX_MAX_MIXES
    data, random, notes = _random_factors(data, spec.outcome, target_mix)
    if spec.target_mix and not target_mix and data["target_task"].nunique() >= 2:
        note = (f"random intercept for target_task:mix left out: the grid has {n_mixes:,} mixes, "
                f"more than the {TARGET_MIX_MAX_MIXES:,} up to which it is fitted (with it every "
                "evaluation of the likelihood costs mixes x target-languages^2, too slow for a "
                "thousand bootstrap refits); the target-by-mix variation is counted as seed "
                "noise. Analyse fewer mixes at a time to include it")
        notes.append(note)
        problems.append(Problem(loaded.source, "target_mix", "warning", note))
    # A grid that varies one factor on purpose estimates that factor alone: the other is a
    # constant, absorbed by the intercept.
    fixed = [single] if single else ["diversity", "volume"]
    if single:
        notes.append(f"only {single} varies, so the model has the {single} term alone; "
                     "diversity - volume is not estimable")
    elif spec.interaction:
        if _interaction_estimable(data):
            fixed.append(INTERACTION)
        else:
            note = ("the diversity x volume interaction is not estimable from this grid's "
                    f"{data['mix'].nunique()} mixes (too few distinct design points); it was left "
                    "out of the model")
            notes.append(note)
            problems.append(Problem(loaded.source, "interaction", "warning", note))
    mix_terms = list(fixed)
    fixed += list(spec.covariates)
    units = [u for u in spec.units if u in data.columns and data[u].nunique() >= 2]
    direction = -1.0 if spec.outcome in LOWER_IS_BETTER else 1.0
    contrast_weights = {"diversity": direction, "volume": -direction}
    compared = single is None
    core = [*fixed, CONTRAST] if compared else list(fixed)
    identifiable = single is not None or (design["correlation"] is not None
                                          and abs(design["correlation"]) < SEPARABLE_CORRELATION)
    if identifiable and spec.covariates and not _full_rank(data, fixed):
        raise ResultsError(problems + [Problem(
            loaded.source, "covariates", "error",
            f"the covariates {', '.join(spec.covariates)} are linearly dependent on "
            f"{' and '.join(mix_terms)} or on each other across the rows: their effects cannot "
            "be estimated")])
    shares = share_table(mixes)
    words = member_words(kind)
    identity = _identity_decision(data, shares, mix_terms, fixed, spec, identifiable, loaded.source,
                                  problems, words)
    primary_data, primary_fixed = data, list(fixed)
    plain_contrasts = {CONTRAST: contrast_weights} if compared else {}
    contrasts = dict(plain_contrasts)
    if identity["used"]:
        primary_data, share_columns = add_share_columns(data, shares, identity["reference"])
        primary_fixed = fixed + share_columns
        contrasts |= identity_contrasts(list(shares.columns), identity["reference"],
                                        centre["diversity"] if "diversity" in fixed else None)

    def fit(frame, fixed_terms, model_contrasts, label, parametric_df=None) -> FittedModel:
        return _fit_model(frame, spec, fixed_terms, random, units, model_contrasts, core,
                          tested=fixed, n_jobs=n_jobs, progress=progress,
                          parametric_df=parametric_df,
                          failure=lambda error: ResultsError(problems + [Problem(
                              loaded.source, "model", "error",
                              f"the {label} could not be fitted: {error}")]))

    primary = plain = None
    per_target: list[dict] = []
    heterogeneity: dict = {"tested": False, "reason": "the model was not fitted"}
    if identifiable:
        mix_df = identity["estimability"]["mix_df"] if identity["used"] else None
        primary = fit(primary_data, primary_fixed, contrasts, "mixed model", mix_df)
        plain = primary if not identity["used"] else None
        if identity["used"]:
            identity["tasks"] = _identity_rows(primary, shares, identity)
            if companions:
                plain = fit(data, fixed, plain_contrasts,
                            f"plain mixed model (no {words.noun} identity)")
                identity["test"] = _nested_test(primary_data, spec.outcome, primary_fixed, fixed,
                                                random)
        heterogeneity = {"tested": False, "reason": "not fitted (companions=False)"}
        if companions:
            per_target, heterogeneity = _per_target(primary_data, spec, primary_fixed, random,
                                                    units, direction, n_jobs, progress, mix_df,
                                                    terms=[t for t in mix_terms if t != INTERACTION])
        for name, model in (("", primary), ("plain model ", plain if plain is not primary else None)):
            if model is not None and model.n_failed:
                problems.append(Problem(loaded.source, "bootstrap", "warning",
                                        f"{model.n_failed} of {model.boot.n_resamples} resamples "
                                        f"of the {name or 'primary model '}failed to fit and are "
                                        "not in the intervals"))
        if heterogeneity.get("n_failed"):
            problems.append(Problem(loaded.source, "bootstrap", "warning",
                                    f"{heterogeneity['n_failed']} of {spec.resamples} resamples of "
                                    "the per-target model failed to fit"))
        data = primary_data.assign(fitted=primary.fit.fitted, residual=primary.fit.residuals)
        draws = primary.boot.draws
    else:
        data = data.assign(fitted=np.nan, residual=np.nan)
        draws = pd.DataFrame(columns=core)

    units_text = {"diversity": DIVERSITY_UNITS[spec.diversity].format(members=words.plural),
                  "volume": f"points per doubling of {words.examples}",
                  INTERACTION: "points per doubling of both"}
    units_text |= {c["name"]: c["unit"] for c in covariates}
    effects, comparison = _effects_and_comparison(primary, fixed, units_text, contrast_weights,
                                                  direction, spec)
    verdict, reason = decide(comparison, design, primary.failed_share if primary else 0.0,
                             effects)
    plain_effects, plain_comparison = _effects_and_comparison(plain, fixed, units_text,
                                                              contrast_weights, direction, spec)
    plain_verdict, plain_reason = (decide(plain_comparison, design, plain.failed_share,
                                          plain_effects)
                                   if plain is not None else (verdict, reason))
    plain_estimates = {
        "same_as_primary": not identity["used"],
        "fitted": plain is not None,
        "formula": _formula(spec.outcome, fixed, random, words=words),
        "effects": plain_effects, "comparison": plain_comparison,
        "verdict": plain_verdict, "verdict_reason": plain_reason,
        "failed_resamples": int(plain.n_failed) if plain else None,
    }
    plain_estimates |= compare_models(effects, comparison, verdict, plain_effects,
                                      plain_comparison, plain_verdict, direction,
                                      identity["used"] and plain is not None, words)

    model_info: dict = {"formula": _formula(spec.outcome, primary_fixed, random, identity, words),
                  "random": random, "fixed": primary_fixed, "notes": notes}
    if primary is not None:
        fitted = primary.fit
        model_info |= {"method": fitted.method, "converged": bool(fitted.converged),
                       "variance_components": {k: float(v) for k, v in fitted.variance_components.items()},
                       "residual_variance": float(fitted.residual_variance),
                       "on_boundary": list(fitted.on_boundary),
                       "reml_log_likelihood": float(fitted.llf)}
        if not fitted.converged:
            problems.append(Problem(loaded.source, "model", "warning", "the REML fit did not converge"))
    bootstrap_info = _bootstrap_info(spec, units, primary, identity)
    improvement_table = descriptives.improvement_table(scores, spec, mixes)
    estimates = {
        "outcome": spec.outcome,
        "outcome_description": OUTCOMES[spec.outcome],
        "outcome_choice": outcome_choice,
        "source_kind": kind,
        "diversity_measure": spec.diversity,
        "diversity_description": diversity_description(spec.diversity, kind),
        "n_rows": int(len(data)),
        "n_runs": int(data["run_id"].nunique()),
        "n_mixes": int(data["mix"].nunique()),
        "targets": sorted(data["target_task"].unique()),
        "languages": sorted(data["language"].unique()) if "language" in data else [],
        "effects": effects,
        "comparison": comparison,
        "question": CONTRAST if compared else single,
        "verdict": verdict,
        "verdict_reason": reason,
        "verdict_values": VERDICTS,
        "minimum_detectable_difference": comparison["minimum_detectable_difference"],
        "identity": identity,
        "plain": plain_estimates,
        "per_target": per_target,
        "heterogeneity": heterogeneity,
        "covariates": covariates,
        "bootstrap": bootstrap_info,
        "coverage": _coverage(spec, primary, random, bootstrap_info, int(data["mix"].nunique())),
        "model": model_info,
        "design": design,
        "descriptives": descriptives.omnibus(data, spec.outcome),
        # Where the refits ran (a scheduler's address) changes no number: not a setting to report.
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(spec).items()
                     if k not in ("tasks", "scheduler")} | {"tasks": [task.id for task in spec.tasks]},
        "runs": {"complete": int((loaded.runs["status"] == "complete").sum()),
                 "failed": int((loaded.runs["status"] == "failed").sum())},
        "warnings": [str(p) for p in problems if p.severity == "warning"],
        "source": _source(loaded.source),
    }
    return AnalysisResult(
        estimates=estimates,
        model_data=data.drop(columns="score_row", errors="ignore"),
        bootstrap_draws=draws,
        improvement_table=improvement_table,
        language_table=descriptives.language_table(data, spec),
        pairwise=(descriptives.pairwise_mixes(data, spec.outcome)
                  if data["mix"].nunique() <= descriptives.MAX_PAIRWISE_MIXES
                  else pd.DataFrame()),
        mix_ranking=descriptives.mix_ranking(data, spec.outcome, spec.level),
        interaction_table=descriptives.interaction_table(data, spec, single),
        problems=pd.DataFrame([vars(p) for p in problems], columns=PROBLEM_COLUMNS),
        settings=spec,
        identity_table=pd.DataFrame(identity.get("tasks", []), columns=IDENTITY_COLUMNS),
        per_target_table=pd.DataFrame(per_target, columns=PER_TARGET_COLUMNS),
    )


def _resolve_outcome(scores: pd.DataFrame, spec: AnalysisSpec, source: str,
                     problems: list[Problem]) -> tuple[AnalysisSpec, str]:
    """The spec with its outcome decided, and why it is that outcome.

    ``outcome = "auto"`` (the default) is ``improvement`` when the results hold baseline runs
    (mix ``none``) and ``score`` when they hold none, which is said once, as a warning; a named
    outcome is kept as it is, but ``improvement`` without any baseline run is refused.
    """
    has_baseline = bool((scores["mix"] == BASELINE_MIX).any())
    if spec.outcome == "improvement" and not has_baseline:
        raise ResultsError(problems + [Problem(
            source, "outcome", "error",
            f"outcome 'improvement' needs baseline runs (mix {BASELINE_MIX!r}) and the results "
            "hold none; analyse the score (outcome 'score', or 'auto', the default)")])
    if spec.outcome != AUTO_OUTCOME:
        return spec, "given"
    if has_baseline:
        return replace(spec, outcome="improvement"), "auto: the results hold baseline runs"
    problems.append(Problem(source, "outcome", "warning",
                            f"no baseline runs (mix {BASELINE_MIX!r}): the outcome is the score "
                            "(outcome 'score'), not the improvement over a baseline"))
    return replace(spec, outcome="score"), NO_BASELINE_CHOICE


# --- covariates ------------------------------------------------------------------------------

#: Columns of the model data a covariate may not be named like (and names with ``[`` or ``:``,
#: which name model terms).
RESERVED_COLUMNS = frozenset({
    "Intercept", "run_id", "model", "mix", "mix_tasks", SOURCE_KIND_COLUMN, "target_task", "seed",
    "language",
    "metric", "split", "value", "n_examples", "score_row", "baseline", "target_language",
    "n_tasks", "n_formats", "effective_tasks", "examples", "diversity", "volume", "fitted",
    "residual", "english", MIX_TARGET, *OUTCOMES})


def _covariate_columns(scores: pd.DataFrame, loaded: LoadedResults, spec: AnalysisSpec,
                       kind: str) -> pd.DataFrame:
    """Check that each requested covariate exists; add the built-in ones as columns."""
    errors = []
    available = sorted(loaded.covariate_problems)
    for name in spec.covariates:
        if name in RESERVED_COLUMNS or "[" in name or ":" in name:
            errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                  f"{name!r} cannot be a covariate: it names a column or term the "
                                  "analysis derives itself"))
        elif name in BUILTIN_COVARIATES:
            if name in scores.columns:
                errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                      f"the results have a column {name!r}, which is also a "
                                      "built-in covariate; rename the column"))
            else:
                scores = scores.assign(**{name: [
                    target_in_mix(mix_tasks, target, language, kind)
                    for mix_tasks, target, language in zip(
                        scores["mix_tasks"], scores["target_task"], scores["language"],
                        strict=True)]})
        elif name not in available:
            errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                  f"no covariate {name!r}: expected a numeric column of the flat "
                                  "table, a key of run.json's 'covariates', or one of "
                                  f"{', '.join(BUILTIN_COVARIATES)} (available: "
                                  f"{', '.join(available) or 'none'})"))
    if errors:
        raise ResultsError(list(loaded.problems) + errors)
    return scores


def _value_errors(rows: pd.DataFrame, loaded: LoadedResults, name: str) -> list[Problem]:
    """The loader's problems (file and row or key) of the rows whose value of ``name`` is missing."""
    known = loaded.covariate_problems.get(name, {})
    bad = rows.loc[rows[name].isna(), "score_row"]
    found = dict.fromkeys(known[row] for row in bad if row in known)
    return list(found) or [Problem(loaded.source, f"covariates.{name}", "error",
                                   f"{len(bad)} rows have no value of covariate {name!r}")]


def _check_run_covariates(scores: pd.DataFrame, loaded: LoadedResults, spec: AnalysisSpec) -> None:
    """Run-level outcomes need each covariate once per run: present and constant in the run."""
    rows = scores[scores["mix"] != BASELINE_MIX]
    files = dict(zip(loaded.runs["run_id"], loaded.runs["file"], strict=True))
    errors = []
    for name in spec.covariates:
        if rows[name].isna().any():
            errors += _value_errors(rows, loaded, name)
            continue
        varying = rows.groupby("run_id")[name].nunique()
        for run_id in varying[varying > 1].index:
            errors.append(Problem(files.get(run_id, loaded.source), f"covariates.{name}", "error",
                                  f"covariate {name!r} takes several values in run {run_id!r}; "
                                  f"the run-level outcome {spec.outcome!r} needs one per run"))
    if errors:
        raise ResultsError(list(loaded.problems) + errors)


def _check_covariates(data: pd.DataFrame, loaded: LoadedResults, spec: AnalysisSpec,
                      kind: str) -> tuple[pd.DataFrame, list[dict]]:
    """Every modelled row needs a value of every covariate, and a covariate must vary; each is
    centred at its mean over the modelled rows, so the other effects stay at the average
    covariate value. Returns the data and a description of each covariate."""
    errors, described = [], []
    for name in spec.covariates:
        values = data[name].astype(float)
        if values.isna().any():
            errors += _value_errors(data, loaded, name)
            continue
        if np.ptp(values.to_numpy()) == 0:
            errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                  f"covariate {name!r} is {values.iloc[0]:g} in every modelled row: "
                                  "its effect cannot be estimated"))
            continue
        mean = float(values.mean())
        data = data.assign(**{name: values - mean})
        source = ("built in: " + BUILTIN_COVARIATES[name][kind] if name in BUILTIN_COVARIATES
                  else "from the results")
        described.append({"name": name, "source": source, "mean": mean,
                          "sd": float(values.std(ddof=1)), "min": float(values.min()),
                          "max": float(values.max()),
                          "unit": f"points per unit of {name} (centred at its mean {mean:.3g})"})
    if errors:
        raise ResultsError(list(loaded.problems) + errors)
    return data, described


def _full_rank(data: pd.DataFrame, fixed: list[str]) -> bool:
    X = np.column_stack([np.ones(len(data)), data[fixed].to_numpy(dtype=float)])
    return bool(np.linalg.matrix_rank(X.T @ X) == X.shape[1])


# --- identity ----------------------------------------------------------------------------------

def _identity_decision(data: pd.DataFrame, shares: pd.DataFrame, mix_terms: list[str],
                       fixed: list[str], spec: AnalysisSpec, identifiable: bool, source: str,
                       problems: list[Problem], words: MemberWords) -> dict:
    """Whether the primary model has task identity effects: ``identity = "off"`` never, ``"on"``
    always (an error when the grid cannot estimate them), ``"auto"`` when it can."""
    per_mix = data.drop_duplicates("mix")
    check = identity_estimability(per_mix, shares, mix_terms, words)
    if check["estimable"] and not _full_rank(
            add_share_columns(data, shares, check["reference"])[0],
            fixed + [share_column(t) for t in shares.columns if t != check["reference"]]):
        check |= {"estimable": False,
                  "reason": f"the {words.noun} shares are linearly dependent on the covariates"}
    info = {"used": False, "mode": spec.identity, "reference": check["reference"],
            "rule": check["rule"], "estimability": {k: v for k, v in check.items()
                                                    if k not in ("rule", "reason")},
            "tasks": [], "test": None}
    if spec.identity == "off":
        return info | {"reason": f"{words.noun} identity effects were turned off "
                                 "(identity = \"off\"); "
                                 "the primary model is the plain one"}
    if not check["estimable"]:
        if spec.identity == "on":
            raise ResultsError(problems + [Problem(
                source, "identity", "error",
                f"identity = \"on\", but this grid cannot estimate {words.noun} identity effects: "
                f"{check['reason']} ({check['rule']}); use identity = \"auto\" or \"off\"")])
        return info | {"reason": f"{words.noun} identity effects are not estimable from this grid: "
                                 f"{check['reason']}; the primary model is the plain one"}
    if not identifiable:
        return info | {"reason": "the model was not fitted (diversity and volume cannot be "
                                 "separated)"}
    return info | {"used": True,
                   "reason": (f"the grid can estimate them: every {words.noun} is in at least "
                              f"{min(check['task_mixes'].values())} mixes, the per-mix design has "
                              f"full rank ({check['rank']}) and {check['mix_df']} mixes remain for "
                              "the mix variance")}


def _identity_rows(model: FittedModel, shares: pd.DataFrame, identity: dict) -> list[dict]:
    """One row per task: its identity effect and its difference from the mean task, with
    intervals, how many mixes hold it, its mean share there, and the resamples without it."""
    rows = []
    for task in shares.columns:
        level, relative = identity_output(task), relative_output(task)
        held = shares[task][shares[task] > 0]
        rows.append({
            "task": task, "estimate": float(model.boot.estimate[level]),
            "ci_low": model.intervals[level]["ci_low"],
            "ci_high": model.intervals[level]["ci_high"],
            "bootstrap_se": model.intervals[level]["se"],
            "relative": float(model.boot.estimate[relative]),
            "relative_ci_low": model.intervals[relative]["ci_low"],
            "relative_ci_high": model.intervals[relative]["ci_high"],
            "n_mixes": int(len(held)), "mean_share": float(held.mean()),
            "resamples_without": int(model.boot.draws[level].isna().sum()),
            "reference": task == identity["reference"],
        })
    return rows


def compare_models(effects: list[dict], comparison: dict, verdict: str, plain_effects: list[dict],
                   plain_comparison: dict, plain_verdict: str, direction: float,
                   identity_used: bool, words: MemberWords = TASK_WORDS) -> dict:
    """Whether the plain model (no task identity) and the primary one disagree, and a sentence.

    They *disagree* when their verdicts differ, or when the plain model's diversity estimate
    lies outside the primary model's diversity interval (in a grid where only volume varies:
    its volume estimate and interval). Which story the sentence tells:

    - the plain estimate lies beyond the primary interval on the side of benefit: the apparent
      diversity effect is *explained by composition* (which tasks the mixes contain);
    - it lies beyond on the other side: composition was *hiding* part of the diversity effect;
    - it lies inside (only the verdicts differ): the two estimates agree and the verdicts part
      because the identity effects cost precision; that is no evidence of composition.
    """
    if not identity_used:
        return {"disagrees": False, "explained_by_composition": False,
                "disagreement_rule": DISAGREEMENT_RULE, "sentence": ""}
    term = "diversity" if any(e["term"] == "diversity" for e in effects) else "volume"
    primary = next(e for e in effects if e["term"] == term)
    plain = next(e for e in plain_effects if e["term"] == term)
    low, high = primary["ci_low"], primary["ci_high"]
    outside = plain["estimate"] < low or plain["estimate"] > high
    disagrees = bool(outside or plain_verdict != verdict)
    explained = outside and direction * plain["estimate"] > max(direction * low, direction * high)
    numbers = (f"the plain model gives {term} {plain['estimate']:.2f} "
               f"[{plain['ci_low']:.2f}, {plain['ci_high']:.2f}] and verdict {plain_verdict}, the "
               f"model with {words.noun} identity effects {primary['estimate']:.2f} "
               f"[{low:.2f}, {high:.2f}] "
               f"and verdict {verdict}")
    if not disagrees:
        sentence = f"The plain model agrees with the identity-adjusted one: {numbers}."
    elif explained:
        sentence = (f"The apparent {term} effect is explained by which {words.plural} the "
                    f"mixes contain: {numbers}.")
    elif outside:
        sentence = (f"Which {words.plural} the mixes contain hides part of the {term} effect: "
                    f"{numbers}.")
    else:
        sentence = (f"The verdicts differ, but not because of composition: {numbers}; the plain "
                    "estimate lies inside the identity-adjusted interval, which is wider because "
                    "the identity effects are estimated too.")
    return {"disagrees": disagrees, "explained_by_composition": bool(explained),
            "disagreement_rule": DISAGREEMENT_RULE.replace("diversity", term), "sentence": sentence}


DISAGREEMENT_RULE = ("their verdicts differ or the plain model's diversity estimate lies outside "
                     "the identity-adjusted model's diversity interval")


# --- per target --------------------------------------------------------------------------------

def _per_target(data: pd.DataFrame, spec: AnalysisSpec, fixed: list[str], random: list[str],
                units: list[str], direction: float, n_jobs: int | None, progress: bool,
                parametric_df: float | None = None,
                terms: list[str] | None = None) -> tuple[list[dict], dict]:
    """Diversity and volume effects (and their difference) per target, and a test of whether
    they differ between targets.

    One model replaces the common diversity and volume slopes by one slope per target
    (:func:`~transferstats.analysis.identity.per_target_columns`), everything else as in the
    primary model; one bootstrap of the primary model's kind (crossed cluster, same seed and so
    the same resamples; parametric when the model has task identity effects) gives every
    target's intervals. Heterogeneity: ML likelihood-ratio test of that model against the common-slope
    model, chi2 with 2 (T - 1) degrees of freedom. In that test both models add a random
    intercept per (mix, target) cell when the cells hold several rows: without it, a mix that
    happens to suit one target would look, through that target's many languages and seeds, like
    strong evidence of a target-specific slope, and the test would reject too often. (The
    bootstrap intervals need no such term: resampling whole mixes carries that variation.)

    ``terms`` are the slopes made per target (default: diversity and volume); with one of
    them, as in a grid that varies one factor, there is no per-target contrast.
    """
    targets = sorted(data["target_task"].unique())
    if len(targets) < 2:
        return [], {"tested": False, "reason": "a single target task: nothing to compare"}
    terms = list(terms or PER_TARGET_TERMS)
    frame, slopes = per_target_columns(data, terms)
    fixed_per_target = slopes + [f for f in fixed if f not in terms]
    if not _full_rank(frame, fixed_per_target):
        return [], {"tested": False,
                    "reason": f"some target has no variation in {' or '.join(terms)} across its "
                              "mixes, so per-target effects are not estimable"}
    compared = set(PER_TARGET_TERMS) <= set(terms)
    contrasts = {target_column(CONTRAST, t): {target_column("diversity", t): direction,
                                             target_column("volume", t): -direction}
                 for t in targets} if compared else {}
    boot = _bootstrap(frame, spec, fixed_per_target, random, units, contrasts, n_jobs, progress,
                      parametric_df)
    outputs = [*slopes, *contrasts]
    failed = boot.draws[outputs].isna().any(axis=1)
    boot.draws.loc[failed, outputs] = np.nan
    intervals = _intervals(boot, spec.level, spec.interval)
    percentile = _intervals(boot, spec.level, "percentile")
    rows = []
    for target in targets:
        for term in (*terms, CONTRAST) if compared else terms:
            name = target_column(term, target)
            rows.append({"target": target, "term": term,
                         "estimate": float(boot.estimate[name])}
                        | _interval_fields(name, intervals, percentile))
    cell = data["mix"].astype(str) + "|" + data["target_task"].astype(str)
    test_random = list(random)
    if cell.nunique() < len(data) and MIX_TARGET not in test_random:
        test_random.append(MIX_TARGET)
    tested = frame.assign(**{MIX_TARGET: cell})
    test = _nested_test(tested, spec.outcome, fixed_per_target, fixed, test_random)
    differ = test["p_value"] < 1 - spec.level
    heterogeneity = test | {"terms": terms,
        "tested": True, "targets": targets, "random": test_random,
        "formula": _formula(spec.outcome, fixed_per_target, random),
        "differ": bool(differ), "n_failed": int(failed.sum()),
        "reason": (f"likelihood-ratio test of per-target {' and '.join(terms)} slopes against "
                   "common ones" + (", both models with a random intercept per (mix, target) "
                                    "cell" if MIX_TARGET in test_random else "")),
    }
    return rows, heterogeneity


# --- fitting -----------------------------------------------------------------------------------

def _bootstrap(data: pd.DataFrame, spec: AnalysisSpec, fixed: list[str], random: list[str],
               units: list[str], contrasts: dict[str, dict[str, float]], n_jobs: int | None,
               progress: bool, parametric_df: float | None, fit: CrossedFit | None = None
               ) -> BootstrapResult | ParametricBootstrap:
    """The crossed cluster bootstrap; the parametric one (with its t widening on
    ``parametric_df`` degrees of freedom) for a model with task identity effects, whose many
    mix-level coefficients make resampling mixes badly conservative
    (:mod:`transferstats.analysis.parametric`). ``fit``: the model's REML fit, if made."""
    if parametric_df is not None:
        return parametric_bootstrap(data, spec.outcome, fixed, random, df=parametric_df,
                                    contrasts=contrasts, n_resamples=spec.resamples,
                                    seed=spec.seed, n_jobs=n_jobs, fit=fit,
                                    progress=progress, scheduler=spec.scheduler)
    return crossed_bootstrap(data, spec.outcome, fixed, random, units=tuple(units),
                             contrasts=contrasts, n_resamples=spec.resamples, seed=spec.seed,
                             n_jobs=n_jobs, progress=progress, fit=fit, scheduler=spec.scheduler)


def _fit_model(data: pd.DataFrame, spec: AnalysisSpec, fixed: list[str], random: list[str],
               units: list[str], contrasts: dict[str, dict[str, float]], core: list[str], *,
               tested: list[str], n_jobs: int | None, progress: bool, failure,
               parametric_df: float | None = None) -> FittedModel:
    """REML fit, ML likelihood-ratio tests of ``tested``, bootstrap of every output.

    The fits run on one BLAS thread, as the bootstrap's workers do: their matrices are small
    (levels of the random factors other than the largest), and several threads on them cost more
    in synchronisation than they save, badly so on shared cores (measured on the 455-mix grid of
    benchmarks/single_factor_speed.py: 0.9 s against 0.25 s for one REML fit)."""
    try:
        with threadpool_limits(1):
            fit = fit_crossed(data, spec.outcome, fixed, random, reml=True)
            tests = _term_tests(data, spec.outcome, fixed, random, tested, fit.relative_sds)
    except (np.linalg.LinAlgError, ValueError) as error:
        raise failure(error) from error
    boot = _bootstrap(data, spec, fixed, random, units, contrasts, n_jobs, progress,
                      parametric_df, fit)
    core = [c for c in core if c in boot.draws.columns]
    failed = boot.draws[core].isna().any(axis=1)
    boot.draws.loc[failed, core] = np.nan
    return FittedModel(fixed, random, fit, boot, _intervals(boot, spec.level, spec.interval),
                       _intervals(boot, spec.level, "percentile"), tests, int(failed.sum()))


def _intervals(boot: BootstrapResult | ParametricBootstrap, level: float, kind: str) -> Intervals:
    """Interval and bootstrap SE of every output (NaN where fewer than 10 resamples gave one)."""
    intervals = {}
    for name in boot.draws.columns:
        draws = boot.draws[name].to_numpy(dtype=float)
        finite = int(np.isfinite(draws).sum())
        low, high = boot.interval(name, level, kind) if finite >= 10 else (np.nan, np.nan)
        intervals[str(name)] = {"ci_low": float(low), "ci_high": float(high),
                                "se": float(np.nanstd(draws, ddof=1)) if finite >= 2 else np.nan}
    return intervals


def _term_tests(data: pd.DataFrame, outcome: str, fixed: list[str], random: list[str],
                terms: list[str], start: dict[str, float] | None = None) -> dict[str, dict]:
    """ML likelihood-ratio test of each term, chi2(1): the full model is fitted once, from
    ``start`` (the REML fit's theta), and each reduced model from the full model's optimum."""
    full = fit_crossed(data, outcome, fixed, random, reml=False, start=start)
    tests = {}
    for term in terms:
        reduced = fit_crossed(data, outcome, [f for f in fixed if f != term], random,
                              reml=False, start=full.relative_sds)
        chi2 = max(2 * (full.llf - reduced.llf), 0.0)
        tests[term] = {"chi2": float(chi2), "df": 1, "p_value": float(stats.chi2.sf(chi2, 1))}
    return tests


def _nested_test(data: pd.DataFrame, outcome: str, fixed: list[str], reduced: list[str],
                 random: list[str]) -> dict:
    """ML likelihood-ratio test of a model against a nested one with fewer fixed terms (on one
    BLAS thread, as in :func:`_fit_model`)."""
    with threadpool_limits(1):
        full_fit = fit_crossed(data, outcome, fixed, random, reml=False)
        reduced_fit = fit_crossed(data, outcome, reduced, random, reml=False,
                                  start=full_fit.relative_sds)
    chi2 = max(2 * (full_fit.llf - reduced_fit.llf), 0.0)
    df = len(fixed) - len(reduced)
    return {"chi2": float(chi2), "df": int(df), "p_value": float(stats.chi2.sf(chi2, df))}


def _effects_and_comparison(model: FittedModel | None, fixed: list[str], units_text: dict,
                            weights: dict, direction: float, spec: AnalysisSpec
                            ) -> tuple[list[dict], dict]:
    """The ``effects`` list and the ``comparison`` dict of a model (None-valued when unfitted)."""
    intervals = model.intervals if model is not None else None
    percentile = model.percentile if model is not None else None
    # A grid that varies one factor has no contrast: its comparison stays None-valued.
    compared = model is not None and CONTRAST in model.boot.estimate.index
    wald = model.fit.summary_frame().set_index("term").to_dict("index") if model is not None else None
    effects = []
    for term in fixed:
        effect = {"term": term, "unit": units_text[term], "estimate": None, "se": None,
                  "p_value": None, "p_value_wald": None, "chi2": None}
        if model is not None and wald is not None:
            test = model.tests[term]
            effect |= {"estimate": float(wald[term]["estimate"]),
                       "se": float(wald[term]["se"]),
                       "p_value_wald": float(wald[term]["p_value"]),
                       "p_value": test["p_value"], "chi2": test["chi2"]}
        effects.append(effect | _interval_fields(term, intervals, percentile))
    comparison = {"contrast": CONTRAST, "weights": weights,
                  "direction": "higher is better" if direction > 0 else
                               "lower is better: the contrast is -(diversity) - (-(volume)), so "
                               "positive still favours diversity",
                  "estimate": (float(model.boot.estimate[CONTRAST])
                               if compared and model is not None else None)}
    comparison |= _interval_fields(CONTRAST, intervals if compared else None, percentile)
    comparison["minimum_detectable_difference"] = None if not compared or intervals is None else \
        minimum_detectable_difference(intervals[CONTRAST]["se"], spec.level, spec.power)
    return effects, comparison


def _interval_fields(name: str, intervals: Intervals | None, percentile: Intervals | None) -> dict:
    """The bootstrap interval (chosen kind), its standard error and the percentile interval of
    one term or contrast; all None when nothing was fitted."""
    if intervals is None or percentile is None:
        return dict.fromkeys(("ci_low", "ci_high", "bootstrap_se", "percentile_ci_low",
                              "percentile_ci_high"))
    return {"ci_low": intervals[name]["ci_low"],
            "ci_high": intervals[name]["ci_high"],
            "bootstrap_se": intervals[name]["se"],
            "percentile_ci_low": percentile[name]["ci_low"],
            "percentile_ci_high": percentile[name]["ci_high"]}


def _formula(outcome: str, fixed: list[str], random: list[str], identity: dict | None = None,
             words: MemberWords = TASK_WORDS) -> str:
    """The model in lme4 notation; member shares are summarised (``share[<task>]`` for K
    tasks)."""
    shown = [f for f in fixed if not f.startswith("share[")]
    if identity and identity.get("used"):
        k = len(identity["estimability"]["tasks"])
        shown.append(f"share[<{words.noun}>] for {k - 1} of the {k} {words.plural} (reference: "
                     f"{identity['reference']})")
    return f"{outcome} ~ {' + '.join(shown)} + " + " + ".join(f"(1 | {factor})" for factor in random)


def _coverage(spec: AnalysisSpec, primary: FittedModel | None, random: list[str],
              bootstrap_info: dict, n_mixes: int) -> dict | None:
    """``estimates["coverage"]``: what the coverage study measured for the contrast's interval
    on the design most like this one (:mod:`transferstats.analysis.coverage`); None where the
    study does not speak to the analysis (no fit, another outcome or level, no such design)."""
    if primary is None or spec.outcome != "improvement" or spec.level != 0.95:
        return None
    in_model = MIX_TARGET in random
    variation = (not in_model or (primary.fit.variance_components[MIX_TARGET] > 0
                                  and MIX_TARGET not in primary.fit.on_boundary))
    return study_coverage(n_mixes, bootstrap_info["resampling"], spec.interval, in_model,
                          variation)


def _bootstrap_info(spec: AnalysisSpec, units: list[str], primary: FittedModel | None,
                    identity: dict) -> dict:
    """``estimates["bootstrap"]``: how the primary model's intervals were made."""
    crossed = "crossed cluster, " + ("BCa" if spec.interval == "bca" else "percentile")
    info = {"resamples": spec.resamples, "method": crossed, "seed": spec.seed,
            "level": spec.level, "units": units,
            "replicates": "seeds resampled within (mix, target)",
            "failed_resamples": int(primary.n_failed) if primary is not None else None}
    if identity.get("used"):
        df = identity["estimability"]["mix_df"]
        # Both of BCa's corrections are zero for these draws: the same interval either way.
        info |= {"method": f"parametric, antithetic pairs, percentile, t({df})",
                 "resampling": "parametric", "t_df": df,
                 "replicates": "random effects and residuals redrawn from the fitted model",
                 "plain_method": crossed}
    else:
        info |= {"resampling": "crossed cluster"}
    return info
