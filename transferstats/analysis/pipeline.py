"""The whole analysis: describe -> build the model -> fit and bootstrap -> verdict, plus the
descriptive tables. :func:`analyze_loaded` returns an :class:`AnalysisResult`; it writes
nothing. Users call :func:`transferstats.analyze`, which loads the input first.

Model (Bates et al. 2015 notation)::

    outcome ~ diversity + volume (+ diversity:volume)
              + (1 | target_task) + (1 | target_task:language) + (1 | mix)

fitted by REML; each fixed term is tested by an ML likelihood-ratio test; intervals come from a
bootstrap that resamples languages and mixes (crossed units) and seeds within cells.

The steps, each its own module: :func:`~transferstats.analysis.description.describe` (what is
analysed, every filter counted), :func:`~transferstats.analysis.model.build_model` (terms,
random factors, identity effects), :func:`~transferstats.analysis.fitting.fit_model` (REML,
tests, bootstrap), :mod:`~transferstats.analysis.verdict` (the verdict and the model
comparison), and the typed results of :mod:`~transferstats.analysis.result`.

When the grid can estimate them (:mod:`transferstats.analysis.identity`), the *primary* model
adds each member's identity effect by its share of the mix ("diversity beyond identity"); the
plain model is then fitted and bootstrapped as well (same seed, so the same resamples) and
reported beside it. The verdict is the primary model's. A per-target model gives per-target
effects and a test of their heterogeneity (:mod:`transferstats.analysis.per_target`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from transferstats.analysis import descriptives
from transferstats.analysis.coverage import slopes_coverage, study_coverage
from transferstats.analysis.description import Described, Description, describe
from transferstats.analysis.diagnostics import VarianceInflation, variance_inflation
from transferstats.analysis.fitting import (
    OUTPUT_COLUMNS,
    BootstrapSettings,
    FittedModel,
    SlopesModel,
    fit_model,
    fit_slopes_model,
    nested_test,
    output_table,
)
from transferstats.analysis.identity import identity_output, relative_output, share_table
from transferstats.analysis.model import (
    CONTRAST,
    INTERACTION,
    MIX_TARGET,
    ModelStructure,
    build_model,
    lme4_notation,
)
from transferstats.analysis.per_target import per_target
from transferstats.analysis.resampling import ResamplingPlan, resampling_plan
from transferstats.analysis.result import (
    IDENTITY_COLUMNS,
    PER_TARGET_COLUMNS,
    PROBLEM_COLUMNS,
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
from transferstats.analysis.slopes import slope_heterogeneity, slopes_fit_summary, wald_interval_method
from transferstats.analysis.spec import AnalysisSpec
from transferstats.analysis.verdict import compare_models, decide, minimum_detectable_difference
from transferstats.loading import LoadedResults
from transferstats.problems import Problem, ResultsError

#: Unit of the diversity effect per measure; ``{members}`` is the members' plural ("tasks",
#: "languages").
DIVERSITY_UNITS = {
    "n_tasks": "points per doubling of the number of {members}",
    "n_formats": "points per doubling of the number of task formats",
    "effective_tasks": "points per doubling of the effective number of {members}",
}


#: A fitted model: random intercepts bootstrapped, or target-specific slopes with Wald t.
Model = FittedModel | SlopesModel


@dataclass
class Fits:
    """The fitted models of one analysis (None where not fitted)."""

    primary: Model | None = None
    plain: Model | None = None
    identity_test: dict | None = None
    per_target_table: pd.DataFrame | None = None
    heterogeneity: Heterogeneity | None = None


def analyze_loaded(loaded: LoadedResults, spec: AnalysisSpec = AnalysisSpec(), *,
                   n_jobs: int | None = None, progress: bool = True,
                   companions: bool = True) -> AnalysisResult:
    """Run the whole analysis on loaded results. Raises :class:`ResultsError` when the data cannot
    answer the question (every reason listed); warnings travel in ``result.problems``.

    ``companions=False`` fits the primary model only, without the plain model beside an
    identity model and without the per-target model (for simulation studies of the verdict,
    which depends on the primary model alone).
    """
    described = describe(loaded, spec)
    problems = described.problems
    data, structure = _build(described, spec)
    problems += [Problem(loaded.source, "model", "warning", w) for w in structure.warnings]
    settings = BootstrapSettings(structure.outcome, spec.resamples, spec.seed, spec.level,
                                 spec.interval, _units(data, spec), n_jobs, progress,
                                 spec.scheduler, spec.df_method)
    collinearity = _collinearity(data, structure, problems, loaded.source)
    slopes, sloped = _slopes(data, structure, settings, described, problems)
    if slopes.used and not slopes.fitted:
        structure = replace(structure, slopes=())
    # With slopes the intervals are Wald t: nothing is resampled.
    plan = (resampling_plan(data, structure, described.description, settings.units)
            if sloped is None else ResamplingPlan(None, None, "", None))
    if plan.why:
        problems.append(Problem(loaded.source, "bootstrap", "warning", plan.why))
    fits = _fit_all(data, structure, settings, plan, companions, described, problems, sloped)
    return _result(described, structure, fits, data, settings, spec, problems, slopes,
                   _interval_method(settings, structure, fits.primary, plan,
                                    described.description),
                   collinearity)


def _collinearity(data: pd.DataFrame, structure: ModelStructure, problems: list[Problem],
                  source: str) -> VarianceInflation | None:
    """Variance inflation of the fixed effects, a warning past the limit."""
    if len(structure.fixed) < 2 or structure.blocked:
        return None
    vif = variance_inflation(data, structure.fixed)
    if vif.warning:
        problems.append(Problem(source, "model", "warning", vif.warning))
    return vif


def _build(described: Described, spec: AnalysisSpec) -> tuple[pd.DataFrame, ModelStructure]:
    """The model of the described design; a refusal names the setting at fault."""
    try:
        return build_model(described.description, described.data, described.mixes,
                           interaction=spec.interaction, target_mix=spec.target_mix,
                           identity=spec.identity, random_slopes=spec.random_slopes)
    except ValueError as error:
        location = next((key for key in ("identity", "random_slopes") if key in str(error)),
                        "covariates")
        raise ResultsError(described.problems + [Problem(
            described.description.source.path, location, "error", str(error))]) from None


def _units(data: pd.DataFrame, spec: AnalysisSpec) -> tuple[str, ...]:
    return tuple(u for u in spec.units if u in data.columns and data[u].nunique() >= 2)


def _slopes(data: pd.DataFrame, structure: ModelStructure, settings: BootstrapSettings,
            described: Described, problems: list[Problem]
            ) -> tuple[SlopeStructure, SlopesModel | None]:
    """The random slopes by target, reduced where the fit is singular, and the primary model
    with them. Where the reduction leaves no slope, the model is one of random intercepts,
    bootstrapped (``fitted`` empty, no model returned)."""
    if not structure.slopes or structure.blocked:
        return SlopeStructure(structure.slopes, structure.slopes_reason), None
    model = _fit(data, structure, structure.primary_fixed, structure.contrasts, settings,
                 "mixed model", None, problems, described.description.source.path)
    assert isinstance(model, SlopesModel), "a structure with slopes is fitted with them"
    steps = tuple(model.reduction.steps_frame().to_dict("records"))
    if not any(len(t.columns) > 1 or t.columns[0] != "Intercept" for t in model.fit.terms):
        return SlopeStructure(structure.slopes, structure.slopes_reason + "; every slope was "
                              "estimated at zero and dropped, so the model has random intercepts "
                              "only, bootstrapped", "", steps), None
    return SlopeStructure(structure.slopes, structure.slopes_reason,
                          lme4_notation(model.reduction.structure), steps), model


def _fit_all(data: pd.DataFrame, structure: ModelStructure, settings: BootstrapSettings,
             plan: ResamplingPlan, companions: bool, described: Described,
             problems: list[Problem], sloped: SlopesModel | None = None) -> Fits:
    """The primary model, and with ``companions`` the plain model beside identity effects and
    the per-target model; every failed resample counted in ``problems``."""
    if structure.blocked:
        return Fits()
    source = described.description.source.path
    words = described.description.words
    fits = Fits(primary=sloped or _fit(data, structure, structure.primary_fixed,
                                       structure.contrasts, settings, "mixed model",
                                       plan.primary_df, problems, source))
    if structure.identity.used and not structure.slopes:
        fits.identity_test = nested_test(data, structure.outcome, structure.primary_fixed,
                                         structure.fixed, list(structure.random))
    fits.plain = fits.primary if not structure.identity.used else None
    if companions and structure.identity.used:
        fits.plain = _fit(data, structure, structure.fixed, structure.plain_contrasts, settings,
                          f"plain mixed model (no {words.noun} identity)", plan.plain_df, problems,
                          source)
    if companions and isinstance(fits.primary, SlopesModel):
        fits.per_target_table, fits.heterogeneity = slope_heterogeneity(
            data, structure, fits.primary, settings.level)
    elif companions:
        fits.per_target_table, fits.heterogeneity = per_target(data, structure, settings,
                                                               plan.primary_df)
    _note_failures(fits, settings, problems, source)
    return fits


def _fit(data: pd.DataFrame, structure: ModelStructure, fixed: list[str],
         contrasts: dict[str, dict[str, float]], settings: BootstrapSettings, label: str,
         parametric_df: float | None, problems: list[Problem], source: str) -> Model:
    try:
        if structure.slopes:
            return fit_slopes_model(data, structure.outcome, fixed, list(structure.random),
                                    {"target_task": structure.slopes}, contrasts, settings.level,
                                    settings.df_method)
        return fit_model(data, settings, fixed, list(structure.random), contrasts,
                         structure.core, tested=structure.fixed, parametric_df=parametric_df)
    except (np.linalg.LinAlgError, ValueError) as error:
        raise ResultsError(problems + [Problem(source, "model", "error",
                                               f"the {label} could not be fitted: {error}")]
                           ) from error


def _note_failures(fits: Fits, settings: BootstrapSettings, problems: list[Problem],
                   source: str) -> None:
    models = [("primary model", fits.primary)]
    if fits.plain is not fits.primary:
        models.append(("plain model", fits.plain))
    for name, model in models:
        if isinstance(model, SlopesModel):
            problems += [Problem(source, "model", "warning", f"{name}: {note}")
                         for note in model.notes]
        if isinstance(model, FittedModel) and model.n_failed:
            problems.append(Problem(source, "bootstrap", "warning",
                                    f"{model.n_failed} of {model.boot.n_resamples} resamples of "
                                    f"the {name} failed to fit and are not in the intervals"))
    if fits.heterogeneity is not None and fits.heterogeneity.n_failed:
        problems.append(Problem(source, "bootstrap", "warning",
                                f"{fits.heterogeneity.n_failed} of {settings.resamples} resamples "
                                "of the per-target model failed to fit"))


def _result(described: Described, structure: ModelStructure, fits: Fits, data: pd.DataFrame,
            settings: BootstrapSettings, spec: AnalysisSpec, problems: list[Problem],
            slopes: SlopeStructure,
            intervals: IntervalMethod, collinearity: VarianceInflation | None) -> AnalysisResult:
    """Wrap the fits in the typed result, with the descriptive tables."""
    description = described.description
    units = _unit_texts(description)
    terms, comparison = _effects(fits.primary, structure, units, spec)
    failed = fits.primary.failed_share if fits.primary else 0.0
    verdict = decide(comparison, description.check, failed, terms)
    plain = _plain(fits, structure, description, terms, verdict, units, spec)
    if fits.primary is not None:
        data = data.assign(fitted=fits.primary.fit.fitted, residual=fits.primary.fit.residuals)
        draws = (fits.primary.boot.draws if isinstance(fits.primary, FittedModel)
                 else pd.DataFrame(columns=structure.core))
        if not fits.primary.fit.converged:
            problems.append(Problem(description.source.path, "model", "warning",
                                    "the REML fit did not converge"))
    else:
        data = data.assign(fitted=np.nan, residual=np.nan)
        draws = pd.DataFrame(columns=structure.core)
    resolved = replace(spec, outcome=description.outcome,
                       include_english=description.language_rule.english_kept)
    tables = _descriptive_tables(described, data, resolved)
    identity = _identity(fits, structure, described)
    return AnalysisResult(
        description=description, structure=structure, terms=terms, comparison=comparison,
        decision=verdict, intervals=intervals, collinearity=collinearity,
        fit=_fit_summary(fits.primary), identity=identity,
        slopes=slopes,
        plain=plain, heterogeneity=fits.heterogeneity or Heterogeneity(
            False, "the model was not fitted" if fits.primary is None
            else "not fitted (companions=False)"),
        coverage=_coverage(spec, fits.primary, structure, description),
        comparisons=descriptives.compare_mixes(data, description.outcome),
        model_data=data.drop(columns="score_row", errors="ignore"), bootstrap_draws=draws,
        problems=pd.DataFrame([vars(p) for p in problems], columns=PROBLEM_COLUMNS),
        settings=spec, per_target_table=(fits.per_target_table if fits.per_target_table is not None
                                         else pd.DataFrame(columns=PER_TARGET_COLUMNS)),
        identity_table=pd.DataFrame(list(identity.tasks), columns=IDENTITY_COLUMNS),
        **tables)


def _descriptive_tables(described: Described, data: pd.DataFrame, spec: AnalysisSpec) -> dict:
    outcome = spec.outcome
    return {
        "improvement_table": (descriptives.improvement_table if described.description.has_baselines
                              else descriptives.score_table)(described.scores, spec,
                                                            described.mixes),
        "language_table": descriptives.language_table(data, spec),
        "mix_ranking": descriptives.mix_ranking(data, outcome, spec.level),
        "interaction_table": descriptives.interaction_table(data, spec,
                                                            described.description.single_factor),
    }


def _unit_texts(description: Description) -> dict[str, str]:
    words = description.words
    units = {"diversity": DIVERSITY_UNITS[description.diversity].format(members=words.plural),
             "volume": f"points per doubling of {words.examples}",
             INTERACTION: "points per doubling of both"}
    return units | {c.name: c.unit for c in description.covariates}


def _effects(model: Model | None, structure: ModelStructure, units: dict[str, str],
             spec: AnalysisSpec) -> tuple[tuple[Effect, ...], Comparison]:
    """The effects of the plain model's terms and the contrast, from a fitted model (None-valued
    when unfitted)."""
    table = _outputs(model)
    effects = tuple(Effect(term, units[term], **_fields(table, term)) for term in structure.fixed)
    direction = ("higher is better" if structure.direction > 0 else
                 "lower is better: the contrast is -(diversity) - (-(volume)), so positive still "
                 "favours diversity")
    comparison = Comparison(CONTRAST, structure.contrast_weights, direction)
    if model is not None and structure.compared:
        fields = _fields(table, CONTRAST)
        comparison = replace(comparison, **{k: v for k, v in fields.items()
                                            if k not in ("p_value_wald", "chi2")},
                             minimum_detectable_difference=_detectable(fields, spec))
    return effects, comparison


def _outputs(model: Model | None) -> pd.DataFrame:
    if model is None:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    return model.table if isinstance(model, SlopesModel) else output_table(model)


def _fields(table: pd.DataFrame, name: str) -> dict:
    """One output's row as Effect fields (None where not computed)."""
    if name not in table.index:
        return {}
    return {key: (None if pd.isna(value) else float(value))
            for key, value in table.loc[name].items()}


def _detectable(fields: dict, spec: AnalysisSpec) -> float | None:
    """The minimum detectable difference: z quantiles on the bootstrap SE, t quantiles on the
    Wald SE and its degrees of freedom where the interval is a t interval."""
    if fields.get("df") is not None:
        alpha = 1 - spec.level
        quantiles = stats.t.ppf(1 - alpha / 2, fields["df"]) + stats.t.ppf(spec.power, fields["df"])
        return float(quantiles * fields["se"])
    se = fields.get("bootstrap_se")
    return None if se is None else minimum_detectable_difference(se, spec.level, spec.power)


def _plain(fits: Fits, structure: ModelStructure, description: Description,
           terms: tuple[Effect, ...], verdict: Verdict, units: dict[str, str],
           spec: AnalysisSpec) -> PlainModel:
    """The plain model beside the primary one (the primary itself without identity effects)."""
    used = structure.identity.used
    plain_terms, plain_comparison = _effects(fits.plain, structure, units, spec)
    plain_verdict = (decide(plain_comparison, description.check, fits.plain.failed_share,
                            plain_terms) if fits.plain is not None else verdict)
    comparison: dict = {}
    if used and fits.plain is not None:
        comparison = compare_models(terms, verdict, plain_terms, plain_verdict,
                                    structure.direction, description.words)
    return PlainModel(same_as_primary=not used, fitted=fits.plain is not None,
                      formula=structure.formula(False), effects=plain_terms,
                      comparison=plain_comparison, verdict=plain_verdict,
                      failed_resamples=fits.plain.n_failed if fits.plain else None, **comparison)


def _identity(fits: Fits, structure: ModelStructure, described: Described) -> IdentityResult:
    """The identity plan, each member's identity effect with its interval, and the test."""
    plan, model = structure.identity, fits.primary
    if not plan.used or model is None:
        return IdentityResult(plan)
    shares = share_table(described.mixes)
    table = _outputs(model)
    rows = []
    for task in shares.columns:
        level, relative = table.loc[identity_output(task)], table.loc[relative_output(task)]
        held = shares[task][shares[task] > 0]
        without = (int(model.boot.draws[identity_output(task)].isna().sum())
                   if isinstance(model, FittedModel) else 0)
        rows.append({
            "task": task, "estimate": level["estimate"], "ci_low": level["ci_low"],
            "ci_high": level["ci_high"],
            "bootstrap_se": level["bootstrap_se"] if pd.notna(level["bootstrap_se"])
            else level["se"],
            "relative": relative["estimate"], "relative_ci_low": relative["ci_low"],
            "relative_ci_high": relative["ci_high"],
            "n_mixes": int(len(held)), "mean_share": float(held.mean()),
            "resamples_without": without, "reference": task == plan.reference})
    return IdentityResult(plan, tuple(rows), fits.identity_test)


def _fit_summary(model: Model | None) -> FitSummary | None:
    if model is None:
        return None
    if isinstance(model, SlopesModel):
        return slopes_fit_summary(model)
    fit = model.fit
    return FitSummary(method=fit.method, converged=bool(fit.converged),
                      variance_components={k: float(v) for k, v in fit.variance_components.items()},
                      residual_variance=float(fit.residual_variance),
                      on_boundary=tuple(fit.on_boundary), reml_log_likelihood=float(fit.llf))


def _interval_method(settings: BootstrapSettings, structure: ModelStructure,
                     primary: Model | None, plan: ResamplingPlan,
                     description: Description) -> IntervalMethod:
    """How the primary model's intervals were made, and why that way."""
    if isinstance(primary, SlopesModel):
        return wald_interval_method(primary, settings, description)
    crossed = "crossed cluster, " + ("BCa" if settings.interval == "bca" else "percentile")
    failed = int(primary.n_failed) if primary is not None else None
    method = IntervalMethod(resampling="crossed cluster", method=crossed,
                            resamples=settings.resamples, seed=settings.seed,
                            level=settings.level, units=settings.units,
                            replicates="seeds resampled within (mix, target)",
                            failed_resamples=failed)
    if plan.primary_df is None:
        return replace(method, why=plan.why)
    df = plan.primary_df
    plain = (crossed if plan.plain_df is None
             else f"parametric, antithetic pairs, percentile, t({plan.plain_df:g})")
    # Both of BCa's corrections are zero for these draws: the same interval either way.
    return replace(method, resampling="parametric",
                   method=f"parametric, antithetic pairs, percentile, t({df:g})",
                   replicates="random effects and residuals redrawn from the fitted model",
                   t_df=df, plain_method=plain if structure.identity.used else None,
                   why=plan.why or ("the model has identity effects: resampling mixes "
                                    "overstates the uncertainty of a model with a coefficient "
                                    "per member (El Karoui & Purdom 2018)"))


def _coverage(spec: AnalysisSpec, primary: Model | None, structure: ModelStructure,
              description: Description) -> dict | None:
    """What the coverage study measured for the contrast's interval on the design most like this
    one (:mod:`transferstats.analysis.coverage`); None where the study does not speak to the
    analysis (no fit, another outcome or level, no such design)."""
    if isinstance(primary, SlopesModel) and spec.level == 0.95:
        term = "diversity - volume" if description.compared else description.single_factor
        return slopes_coverage(len(description.targets), len(description.mixes), str(term))
    if (not isinstance(primary, FittedModel) or not description.compared
            or description.outcome != "improvement" or spec.level != 0.95):
        return None
    in_model = MIX_TARGET in structure.random
    variation = (not in_model or (primary.fit.variance_components[MIX_TARGET] > 0
                                  and MIX_TARGET not in primary.fit.on_boundary))
    resampling = "parametric" if structure.identity.used else "crossed cluster"
    return study_coverage(len(description.mixes), resampling, spec.interval, in_model, variation)
