"""What an analysis produces: typed results beside the description of what was analysed.

An :class:`AnalysisResult` holds the :class:`~transferstats.analysis.description.Description`
(built before any fit), the :class:`~transferstats.analysis.model.ModelStructure`, and what the
fits decided and estimated: :class:`Effect` per term, the :class:`Comparison`, the
:class:`Verdict`, the :class:`FitSummary`, :class:`IntervalMethod`, :class:`IdentityResult`,
:class:`PlainModel` and :class:`Heterogeneity`, and the descriptive tables. ``to_dict()``
writes ``estimates.json``; the report and the terminal read the typed objects.

:func:`transferstats.analyze` builds it; :mod:`transferstats.report` renders it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from transferstats.analysis.description import Description
from transferstats.analysis.descriptives import MixComparisons
from transferstats.analysis.diagnostics import VarianceInflation
from transferstats.analysis.model import CONTRAST, IdentityPlan, ModelStructure
from transferstats.analysis.spec import AnalysisSpec
from transferstats.problems import Problem
from transferstats.tasks import task_scope

__all__ = ["CONTRAST", "AnalysisResult", "Comparison", "Effect", "FitSummary", "Heterogeneity",
           "IdentityResult", "IntervalMethod", "PlainModel", "SlopeStructure", "Verdict"]

#: Columns of :attr:`AnalysisResult.effects`, in order.
EFFECT_COLUMNS = ("term", "estimate", "se", "ci_low", "ci_high", "p_value", "unit", "df",
                  "bootstrap_se", "percentile_ci_low", "percentile_ci_high", "p_value_wald", "chi2")
PROBLEM_COLUMNS = ("file", "location", "severity", "message")
#: Columns of :attr:`AnalysisResult.identity_table`.
IDENTITY_COLUMNS = ("task", "estimate", "ci_low", "ci_high", "bootstrap_se", "relative",
                    "relative_ci_low", "relative_ci_high", "n_mixes", "mean_share",
                    "resamples_without", "reference")
#: Columns of :attr:`AnalysisResult.per_target_table`.
PER_TARGET_COLUMNS = ("target", "term", "estimate", "ci_low", "ci_high", "bootstrap_se",
                      "percentile_ci_low", "percentile_ci_high")
#: Columns of :attr:`AnalysisResult.mix_ranking`.
RANKING_COLUMNS = ("rank", "mix", "n_tasks", "examples", "mean", "ci_low", "ci_high",
                   "n_subjects")


class _Estimated:
    """What an effect and the contrast share: an estimate that may be missing."""

    estimate: float | None

    @property
    def estimated(self) -> bool:
        """Whether an estimate was made (not None, not NaN)."""
        return self.estimate is not None and self.estimate == self.estimate

    def to_dict(self) -> dict:
        """Return the fields as a dict (``estimates.json``'s entry)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Effect(_Estimated):
    """One fixed effect: estimate, its interval and tests (None where not estimated).

    ``se`` is the model's (Wald) standard error; ``ci_low``/``ci_high`` the interval the
    verdict reads, made as ``IntervalMethod.method`` says; ``p_value`` the ML likelihood-ratio
    test of the term, or with target-specific slopes the Wald t test on ``df`` degrees of
    freedom (Satterthwaite's or Kenward-Roger's).
    """

    term: str
    unit: str
    estimate: float | None = None
    se: float | None = None
    df: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    p_value_wald: float | None = None
    chi2: float | None = None
    bootstrap_se: float | None = None
    percentile_ci_low: float | None = None
    percentile_ci_high: float | None = None


@dataclass(frozen=True)
class Comparison(_Estimated):
    """The contrast diversity - volume (all None where the grid does not vary both)."""

    contrast: str
    weights: dict[str, float]
    direction: str
    estimate: float | None = None
    se: float | None = None
    df: float | None = None
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    bootstrap_se: float | None = None
    percentile_ci_low: float | None = None
    percentile_ci_high: float | None = None
    minimum_detectable_difference: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The verdict (one of :data:`transferstats.analysis.verdict.VERDICTS`) and why."""

    value: str
    reason: str


@dataclass(frozen=True)
class FitSummary:
    """What the REML fit of the primary model found."""

    method: str
    converged: bool
    variance_components: dict[str, float]
    residual_variance: float
    on_boundary: tuple[str, ...]
    reml_log_likelihood: float


@dataclass(frozen=True)
class IntervalMethod:
    """How the primary model's intervals were made."""

    resampling: str
    method: str
    resamples: int
    seed: int
    level: float
    units: tuple[str, ...]
    replicates: str
    failed_resamples: int | None
    t_df: float | None = None
    plain_method: str | None = None
    why: str = ""
    #: The degrees of freedom of Wald t intervals: "Satterthwaite" or "Kenward-Roger".
    df_method: str = ""


@dataclass(frozen=True)
class IdentityResult:
    """The identity plan, each member's identity effect, and the test against the plain model."""

    plan: IdentityPlan
    tasks: tuple[dict, ...] = ()
    test: dict | None = None

    def to_dict(self) -> dict:
        """Return the plan, the members' rows and the test as one dict."""
        return asdict(self.plan) | {"tasks": list(self.tasks), "test": self.test}


@dataclass(frozen=True)
class PlainModel:
    """The plain model (no identity effects) beside an identity-adjusted primary model."""

    same_as_primary: bool
    fitted: bool
    formula: str
    effects: tuple[Effect, ...]
    comparison: Comparison
    verdict: Verdict
    failed_resamples: int | None
    disagrees: bool = False
    explained_by_composition: bool = False
    disagreement_rule: str = ""
    sentence: str = ""

    def to_dict(self) -> dict:
        """Return the fields as a dict, the verdict as ``verdict`` and ``verdict_reason``."""
        values = asdict(self)
        values |= {"effects": [e.to_dict() for e in self.effects],
                   "verdict": self.verdict.value, "verdict_reason": self.verdict.reason}
        return values


@dataclass(frozen=True)
class SlopeStructure:
    """The random slopes by target: requested, why, fitted, and the steps of any reduction.

    ``fitted`` is the random part after any reduction of a singular fit, in lme4's notation.
    """

    requested: tuple[str, ...]
    reason: str
    fitted: str = ""
    steps: tuple[dict, ...] = ()

    @property
    def used(self) -> bool:
        """Whether the model has target-specific slopes."""
        return bool(self.requested)


@dataclass(frozen=True)
class Heterogeneity:
    """Whether the effects differ between targets.

    An ML likelihood-ratio test of per-target against common slopes, or with random slopes the
    REML test of their (co)variances.
    """

    tested: bool
    reason: str
    chi2: float | None = None
    df: int | None = None
    p_value: float | None = None
    differ: bool = False
    terms: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    random: tuple[str, ...] = ()
    formula: str = ""
    n_failed: int = 0


@dataclass
class AnalysisResult:
    """The outcome of one analysis.

    Attributes
    ----------
    description : Description
        What was analysed, built from the data and the settings before any fit: the model, the
        members' kind, which factors vary, the outcome and why, the languages and splits, what
        every filter left out (docs/statistics.md).
    structure : ModelStructure
        The model fitted: fixed terms, random factors, identity plan, contrasts.
    terms : tuple of Effect
        One per fixed term of the plain model's terms (design terms and covariates).
    comparison : Comparison
        The contrast diversity - volume.
    decision : Verdict
        The verdict and its reason.
    intervals : IntervalMethod
        How the intervals were made.
    fit : FitSummary or None
        The primary model's REML fit (None when the design blocked the fit).
    identity, slopes, plain, heterogeneity
        The identity effects, the random slopes by target (requested, fitted, reduced), the
        plain model beside an identity-adjusted one, the test of per-target effects.
    coverage : dict or None
        What the coverage study measured for a design like this one.
    collinearity : VarianceInflation or None
        Variance inflation factors of the fixed effects (None with fewer than two terms).
    comparisons : MixComparisons
        The repeated-measures ANOVA and the pairwise tests of the mixes, and those the design
        left out with their reason (:func:`transferstats.analysis.descriptives.compare_mixes`).
    model_data : pandas.DataFrame
        One row per observation that entered the model, with ``fitted`` and ``residual``;
        ``diversity`` and ``volume`` are log2 values centred at the design centre, covariates
        centred at their mean; with identity effects ``share[<member>]`` holds each share.
    bootstrap_draws : pandas.DataFrame
        One row per bootstrap resample of the primary model, one column per output.
    improvement_table, language_table, interaction_table, mix_ranking
        Descriptive tables (see :mod:`transferstats.analysis.descriptives`).
    problems : pandas.DataFrame
        Every warning met while loading and analysing (``file, location, severity, message``).
    settings : AnalysisSpec
        The settings the analysis ran with (tasks given for the call included).
    identity_table, per_target_table : pandas.DataFrame
        Identity effects per member; effects per target and term.
    """

    description: Description
    structure: ModelStructure
    terms: tuple[Effect, ...]
    comparison: Comparison
    decision: Verdict
    intervals: IntervalMethod
    fit: FitSummary | None
    identity: IdentityResult
    slopes: SlopeStructure
    plain: PlainModel
    heterogeneity: Heterogeneity
    coverage: dict | None
    comparisons: MixComparisons
    collinearity: VarianceInflation | None
    model_data: pd.DataFrame
    bootstrap_draws: pd.DataFrame
    improvement_table: pd.DataFrame
    language_table: pd.DataFrame
    interaction_table: pd.DataFrame
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBLEM_COLUMNS))
    settings: AnalysisSpec = field(default_factory=AnalysisSpec)
    identity_table: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=IDENTITY_COLUMNS))
    per_target_table: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=PER_TARGET_COLUMNS))
    mix_ranking: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=RANKING_COLUMNS))

    @property
    def pairwise(self) -> pd.DataFrame:
        """Holm-corrected paired t tests between every two mixes (empty where left out)."""
        return self.comparisons.pairwise

    @property
    def warnings(self) -> list[str]:
        """Every warning, one string each (the count the terminal prints is their number)."""
        rows = self.problems[self.problems["severity"] == "warning"]
        return [str(Problem(*row)) for row in
                rows[["file", "location", "severity", "message"]].itertuples(index=False)]

    def term(self, name: str) -> Effect | None:
        """Return the :class:`Effect` of one term, or None when it is not in the model."""
        return next((e for e in self.terms if e.term == name), None)

    def to_dict(self) -> dict:
        """Return the ``estimates.json`` object (docs/statistics.md describes every key)."""
        from transferstats.analysis.verdict import VERDICTS

        d = self.description
        return _lists({
            "description": d.to_dict(),
            "outcome": d.outcome, "outcome_description": d.outcome_description,
            "outcome_choice": d.outcome_reason, "source_kind": d.kind,
            "diversity_measure": d.diversity, "diversity_description": d.diversity_description,
            "n_rows": d.n_rows, "n_runs": d.n_runs, "n_mixes": len(d.mixes),
            "targets": list(d.targets), "languages": list(d.languages),
            "dropped": [asdict(x) for x in d.dropped],
            "effects": [e.to_dict() for e in self.terms],
            "comparison": self.comparison.to_dict(), "question": d.question,
            "verdict": self.decision.value, "verdict_reason": self.decision.reason,
            "verdict_values": VERDICTS,
            "minimum_detectable_difference": self.comparison.minimum_detectable_difference,
            "identity": self.identity.to_dict(), "plain": self.plain.to_dict(),
            "random_slopes": asdict(self.slopes),
            "per_target": self.per_target_table.to_dict("records"),
            "heterogeneity": asdict(self.heterogeneity),
            "covariates": [asdict(c) | {"unit": c.unit} for c in d.covariates],
            "bootstrap": asdict(self.intervals), "coverage": self.coverage,
            "model": self._model_dict(), "design": asdict(d.check),
            "descriptives": self.comparisons.to_dict(),
            "collinearity": None if self.collinearity is None else {
                "vif": self.collinearity.table.to_dict("records"),
                "limit": self.collinearity.limit, "warning": self.collinearity.warning},
            "settings": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in vars(self.settings).items()
                         # An address changes no number: the same seed gives the same draws.
                         if k not in ("tasks", "scheduler")}
                        | {"tasks": [task.id for task in self.settings.tasks]},
            "runs": {"complete": d.runs_complete, "failed": d.runs_failed},
            "warnings": self.warnings, "source": asdict(d.source),
        })

    @cached_property
    def estimates(self) -> dict:
        """:meth:`to_dict`, computed once."""
        return self.to_dict()

    def _model_dict(self) -> dict:
        structure = self.structure
        values: dict = {"formula": structure.formula(True, self.description.words,
                                                     self.slopes.fitted or None),
                        "random": list(structure.random), "fixed": structure.primary_fixed,
                        "notes": list(structure.notes)}
        if self.fit is not None:
            values |= asdict(self.fit) | {"on_boundary": list(self.fit.on_boundary)}
        return values

    @property
    def verdict(self) -> str:
        """The verdict (docs/statistics.md).

        ``supported``, ``refuted``, ``inconclusive`` or ``confounded`` when the grid varies
        diversity and volume; ``diversity_only`` or ``volume_only`` when it varies one of them.
        """
        return self.decision.value

    @property
    def verdict_reason(self) -> str:
        """One sentence saying why the verdict is what it is."""
        return self.decision.reason

    @property
    def design(self) -> dict:
        """How well the grid separates diversity from volume.

        Keys: ``n_mixes``, ``varies`` (``both``, ``diversity``, ``volume`` or ``neither``),
        ``single_factor`` (the factor a grid that varies one of them varies, else None) and
        ``fixed_at`` (the other's fixed level), ``correlation`` (Pearson r of log2 diversity and
        log2 volume across mixes; None unless both vary), ``vif``, ``confounded``, ``reason``,
        ``diversity_levels``, ``volume_levels``, ``centre_log2``.
        """
        return asdict(self.description.check)

    @property
    def effects(self) -> pd.DataFrame:
        """One row per fixed effect, then the contrast ``diversity - volume``.

        The contrast row is left out where it was not estimated (a grid that varies one factor,
        a confounded one).

        Columns: ``term, estimate, se, ci_low, ci_high, p_value, unit, df`` and the details
        ``bootstrap_se, percentile_ci_low, percentile_ci_high, p_value_wald, chi2``. With
        target-specific slopes (``intervals.resampling == "wald t"``) ``se`` is lme4's standard
        error, ``ci_low``/``ci_high`` the Wald t interval and ``p_value`` the t test, both on
        ``df`` degrees of freedom (Satterthwaite's or Kenward-Roger's); otherwise ``se`` is the
        model's (Wald) standard error for a term and the bootstrap standard error for the
        contrast, the interval the bootstrap's (BCa or percentile, as ``settings.interval``
        says), and ``p_value`` the ML likelihood-ratio test of the term (none for the contrast:
        its evidence is its interval). Missing values are NaN.
        """
        return _effect_frame(self.terms, self.comparison)

    @property
    def plain_effects(self) -> pd.DataFrame:
        """:attr:`effects` of the plain model (no task identity effects).

        The same as :attr:`effects` when the primary model is the plain one
        (``estimates["identity"]["used"]`` false).
        """
        if self.plain.same_as_primary or not self.plain.fitted:
            return self.effects
        return _effect_frame(self.plain.effects, self.plain.comparison)

    def effect(self, term: str) -> dict:
        """Return the ``estimates["effects"]`` entry of one term (``KeyError`` if not in the model)."""
        effect = self.term(term)
        if effect is None:
            raise KeyError(term)
        return effect.to_dict()

    def summary(self) -> str:
        """Return the terminal summary as text: effects with intervals, the contrast, the verdict."""
        from transferstats.report.terminal import summary_text

        return summary_text(self)

    def write_report(self, out_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
        """Write the report ``transferstats analyze`` writes.

        ``out_dir`` gets ``report.md``, ``report.html``, ``figures/``, ``tables/`` and
        ``estimates.json``; it is replaced as a whole once the new report is complete.

        Parameters
        ----------
        out_dir : str or pathlib.Path
            The report folder.
        title : str, optional
            The report's title; by default the question the toolkit answers.

        Returns
        -------
        dict of str to pathlib.Path
            Each written file, keyed by its path relative to ``out_dir``.
        """
        from transferstats.report.render import write_report

        with task_scope(self.settings.tasks):
            return write_report(self, Path(out_dir), title=title)

    def _repr_html_(self) -> str:
        from transferstats.report.notebook import result_html

        with task_scope(self.settings.tasks):
            return result_html(self)

    def __repr__(self) -> str:
        d = self.description
        return (f"<AnalysisResult {d.outcome}: verdict {self.verdict!r}, "
                f"{d.n_runs} runs, {len(d.mixes)} mixes>")


def _lists(value):
    """``value`` with every tuple a list, as JSON has them."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def _effect_frame(effects: tuple[Effect, ...], comparison: Comparison) -> pd.DataFrame:
    rows = [e.to_dict() for e in effects]
    if comparison.estimated:
        contrast = comparison.to_dict() | {
            "term": comparison.contrast,
            "se": comparison.se if comparison.se is not None else comparison.bootstrap_se,
            "unit": "points per doubling (diversity effect minus volume effect)"}
        rows.append(contrast)
    frame = pd.DataFrame([{key: row.get(key) for key in EFFECT_COLUMNS} for row in rows],
                         columns=list(EFFECT_COLUMNS))
    numeric = [c for c in EFFECT_COLUMNS if c not in ("term", "unit")]
    return frame.astype(dict.fromkeys(numeric, float))
