"""Simulation-based power of a grid before it is run: will it answer diversity against volume?

``transferstats plan`` says what a grid costs; this module says whether it can answer the
question. It simulates the grid's exact design many times under a generative model with known
variance components, analyses every simulated grid, and counts how often the analysis would give
the verdict ``supported`` (Green & MacLeod 2016; Kumle, Võ & Draschkow 2021). Crossed designs
(targets x languages x mixes) need their own power analysis: the precision of a mix-level effect
is set by the number of mixes and the variation between them, not by the number of rows
(Westfall, Kenny & Judd 2014).

The design
    The grid as ``transferstats plan`` expands it (:class:`GridDesign`): its mixes with their
    number of tasks and total examples, its targets with the non-English languages each
    evaluates, its seeds. One row per (mix, target, language, seed), as the analysis models the
    default outcome (``improvement``, zero-shot languages only).

The generative model (:class:`Components`), for mix ``m`` (``d_m`` = log2 tasks, ``v_m`` =
log2 examples, centred over the mixes), target ``t``, language ``l`` and seed ``s``::

    y = b0 + (b_d + s_dt) d_m + (b_v + s_vt) v_m + a_t + c_tl + u_m + w_tm + e_mtls
    a_t ~ N(0, target²)        c_tl ~ N(0, target_language²)    u_m ~ N(0, mix²)
    w_tm ~ N(0, target_mix²)   e ~ N(0, seed²)
    (s_dt, s_vt) ~ N(0, [[sd_d², r sd_d sd_v], [r sd_d sd_v, sd_v²]])

``w_tm`` is the target-by-mix component: a mix helps some targets more than others (Phang et al.
2020). ``s_dt`` and ``s_vt`` are target ``t``'s deviations from the population's slopes (issue
25: in real grids the effects differ a great deal between targets), drawn around the population
average, not centred over the sampled targets. The true difference ``b_d - b_v`` (the
population's) is the ``difference`` asked about; for a grid where only one of diversity and
volume varies, the varied factor's effect is planned for instead.

The analysis of each simulated grid
    Where ``analyze``'s model has target-specific slopes (its own rule,
    :func:`transferstats.analysis.model.slope_plan`: at least 3 targets), its verdict is the
    Wald t interval of the question on Satterthwaite's degrees of freedom, and each simulated
    grid is analysed by exactly that (:data:`STAND_IN_SLOPES`: ``fit_slopes_model``, reduced only
    where singular); there is nothing to calibrate. Otherwise the verdict of ``analyze`` comes
    from a bootstrap interval of ``diversity - volume`` (1,000
    resamples: the crossed bootstrap's BCa interval, or for a model with task identity effects
    a parametric bootstrap's with t widening). Refitting a thousand bootstrap resamples for each of a
    thousand simulated grids is out of reach, so each simulated grid is analysed by an honest
    stand-in (:data:`STAND_IN`): the model ``analyze`` fits (``fit_crossed``'s solver, REML, the
    same fixed and random terms, task-identity shares where analyze would use them, centred as
    the pipeline centres), with the Wald standard error of the contrast, and an interval whose
    width is *calibrated on analyze itself*: a few further grids of the same design are
    analysed by ``analyze_loaded`` (its default settings, the primary model), and each simulated
    analysis borrows the distances of the verdict's interval from the estimate, in Wald standard
    errors, of one of them. The
    stand-in also reproduces the bootstrap's other way to withhold a verdict: when more than 5%
    of the resamples cannot be fitted (too few mixes: a resample loses a design point) the
    verdict is ``inconclusive``; the probability that a resample loses rank is measured on the
    design by resampling its mixes, and each simulated analysis draws its number of failed
    resamples from it. ``tests/test_power.py``, ``benchmarks/power_speed.py --validate`` and
    ``docs/power.md`` validate the stand-in against full ``analyze`` runs and against the
    bootstrap on the same grids.

Shift equivariance
    Adding ``D`` times a fixed-effect column to every outcome leaves the REML variance components
    unchanged (REML depends on the data only through residual contrasts) and moves the GLS
    estimate by exactly ``D``, so one fit per simulated grid gives the verdict at every true
    difference: the simulated grids are drawn once, at difference 0, and the power curve, the
    false-positive rate and the minimum detectable difference are read from the same fits
    (common random numbers; exact, not an approximation). The bootstrap intervals shift the same
    way: their refits (or parametric draws) move by D and their bias corrections and
    accelerations do not change; so does the slopes model's t interval (its variance
    parameters, hence its standard error and Satterthwaite df, do not move).

References
----------
Green, P. & MacLeod, C. J. (2016). SIMR: an R package for power analysis of generalized linear
mixed models by simulation. Methods in Ecology and Evolution 7(4), 493-498.

Kumle, L., Võ, M. L.-H. & Draschkow, D. (2021). Estimating power in (generalized) linear mixed
models: An open introduction and tutorial in R. Behavior Research Methods 53, 2528-2543.

Westfall, J., Kenny, D. A. & Judd, C. M. (2014). Statistical power and optimal design in
experiments in which samples of participants respond to samples of stimuli. Journal of
Experimental Psychology: General 143(5), 2020-2045.

Phang, J. et al. (2020). English intermediate-task training improves zero-shot cross-lingual
transfer too. AACL-IJCNLP. arXiv:2005.13013.

Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference.
JASA 22(158), 209-212. (The Monte Carlo interval of a rejection rate.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from transferstats.analysis.design import (
    SEPARABLE_CORRELATION,
    diversity_volume_correlation,
    varying_factor,
)
from transferstats.analysis.fitting import fit_slopes_model
from transferstats.analysis.formula import random_terms
from transferstats.analysis.members import TASK_WORDS
from transferstats.analysis.mixed import (
    cross_products,
    derivatives,
    factorise,
    fit_crossed,
    fit_theta,
)
from transferstats.analysis.model import (
    CONTRAST,
    FACTOR_NOTATION,
    INTERACTION,
    MIX_TARGET,
    fixed_terms,
    identity_plan,
    random_factors,
    slope_plan,
)
from transferstats.analysis.profiled import design as lmm_design
from transferstats.analysis.profiled import evaluate, products, theta_layout
from transferstats.analysis.spec import AnalysisSpec
from transferstats.parallel import LOCAL, parallel_map

#: The variance components of the generative model, in this order (standard deviations, points).
COMPONENTS = ("target", "target_language", "mix", "target_mix", "seed")

#: Defaults when no pilot is given. They are guesses, not estimates; see ``docs/power.md``.
DEFAULT_SD = {"target": 1.0, "target_language": 1.0, "mix": 0.5, "target_mix": 0.5, "seed": 1.0}
DEFAULT_SOURCES = {
    "target": "transferstats simulate's default target_sd (a guess)",
    "target_language": "transferstats simulate's language_sd 0.8 and target_language_sd 0.6 "
                       "combined, sqrt(0.8² + 0.6²) (a guess)",
    "mix": "transferstats simulate's default mix_sd (a guess)",
    "target_mix": "the target-by-mix SD of issue 14's independent generator (a guess; "
                  "Phang et al. 2020 show mixes helping some targets and hurting others)",
    "seed": "transferstats simulate's default seed_sd (a guess)",
}

#: The factors whose effect may differ between targets: each target's slope deviates from the
#: population's by a draw of a bivariate normal (:class:`Components`' ``slope_sd`` and
#: ``slope_correlation``).
SLOPES = ("diversity", "volume")
#: Defaults when no pilot is given: guesses, not estimates (``docs/power.md``). The only grid
#: with measured slope variation (issue 25's public 1,079-mix grid, lme4's correlated fit) has
#: slope SDs of 5.9 (diversity) and 3.1 (volume) beside a target-intercept SD of 5.6; scaled to
#: the default target SD of 1.0 they are 1.05 and 0.55, with that grid's correlation.
DEFAULT_SLOPE_SD = {"diversity": 1.05, "volume": 0.55}
DEFAULT_SLOPE_CORRELATION = -0.98
DEFAULT_SLOPE_SOURCES = {
    "diversity_slope": "issue 25's public grid, diversity-slope SD 5.9 over its target SD 5.6, "
                       "times the default target SD 1.0 (a guess)",
    "volume_slope": "issue 25's public grid, volume-slope SD 3.1 over its target SD 5.6, times "
                    "the default target SD 1.0 (a guess)",
    "slope_correlation": "issue 25's public grid, lme4's correlated fit (a guess)",
}

#: Whether ``analyze``'s model has ``(1 | target_task:mix)``: the ``target_mix`` setting's default,
#: so the stand-in fits the model ``analyze`` fits (``analysis_target_mix`` overrides).
ANALYSIS_TARGET_MIX = AnalysisSpec().target_mix

#: How each simulated grid is analysed where analyze's model has target-specific slopes: its
#: own verdict method, nothing to calibrate.
STAND_IN_SLOPES = ("analyze's own verdict method: the slopes model fitted by REML and reduced "
                   "only where singular (fit_slopes_model), and the Wald t interval of the "
                   "question on Satterthwaite's degrees of freedom; no bootstrap, so no "
                   "calibration")
#: How each simulated grid is analysed (see the module docstring).
STAND_IN = ("REML fit of analyze's model (fit_crossed's solver) with the Wald standard error "
            "of the question; interval estimate - lower x SE, estimate + upper x SE, with "
            "(lower, upper) the distances, in Wald SEs, of the interval analyze itself gives on "
            "a calibration grid drawn at random (analyze run on simulated grids of the same "
            "design); verdict withheld when more than 5% of the bootstrap resamples would fail "
            "(rate measured on the design)")

#: The verdict rules of ``analyze`` (``transferstats.analysis.pipeline``) the stand-in follows.
LEVEL = 0.95
RESAMPLES = 1000
MAX_FAILED_SHARE = 0.05
MAX_CORRELATION = 0.9



class PowerError(ValueError):
    """A power analysis that cannot be run: the message says why and what to change."""


# --------------------------------------------------------------------------------------------
# The design


@dataclass(frozen=True)
class GridDesign:
    """The rows an analysis of a grid would model, as ``transferstats plan`` expands the grid.

    Attributes
    ----------
    name : str
        Names the design in tables and figures.
    mixes : tuple of (str, tuple of (str, int))
        Each intermediate mix: its name and its tasks with their examples. The baseline is not
        a mix.
    languages : dict of str to tuple of str
        Each target and the non-English languages it is evaluated in (the model's rows).
    seeds : int
        Seeds (replicates) per (mix, target).
    gpu_hours : float, optional
        What the grid costs (``transferstats.grid.estimate``), carried for tables.
    settings : dict
        What distinguishes the design in a search (levels, draws, seeds...), for tables and JSON.
    """

    name: str
    mixes: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
    languages: Mapping[str, tuple[str, ...]]
    seeds: int
    gpu_hours: float | None = None
    settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.languages)

    @property
    def n_rows(self) -> int:
        return len(self.mixes) * self.seeds * self.n_target_languages

    @property
    def n_target_languages(self) -> int:
        return sum(len(v) for v in self.languages.values())

    @property
    def n_tasks(self) -> np.ndarray:
        return np.array([len(tasks) for _, tasks in self.mixes], dtype=float)

    @property
    def examples(self) -> np.ndarray:
        return np.array([sum(n for _, n in tasks) for _, tasks in self.mixes], dtype=float)

    def log2_levels(self) -> tuple[np.ndarray, np.ndarray]:
        """log2 number of tasks and log2 examples of each mix, centred over the mixes (each mix
        counted once), as the pipeline centres them."""
        d, v = np.log2(self.n_tasks), np.log2(self.examples)
        return d - d.mean(), v - v.mean()

    def shares(self) -> pd.DataFrame:
        """Each task's share of each mix's examples (rows: mixes; columns: tasks, sorted)."""
        rows = {name: {task: n / sum(c for _, c in tasks) for task, n in tasks}
                for name, tasks in self.mixes}
        table = pd.DataFrame.from_dict(rows, orient="index").fillna(0.0)
        return table.reindex(index=[name for name, _ in self.mixes],
                             columns=sorted(table.columns))


@dataclass(frozen=True)
class DesignRows:
    """Row-level codes of a design: one row per (mix, seed, target, language), mixes outermost.

    ``language`` codes the language itself (shared across targets: the bootstrap resamples
    languages), ``target_language`` the (target, language) pair.
    """

    mix: np.ndarray
    seed: np.ndarray
    target: np.ndarray
    language: np.ndarray
    target_language: np.ndarray
    target_mix: np.ndarray
    n_levels: dict[str, int]

    @property
    def n(self) -> int:
        return len(self.mix)


def design_rows(design: GridDesign) -> DesignRows:
    """Codes of every row of the design."""
    targets = design.targets
    n_mixes = len(design.mixes)
    pairs = [(t, code) for t, target in enumerate(targets) for code in design.languages[target]]
    codes = sorted({code for _, code in pairs})
    target_of_pair = np.array([t for t, _ in pairs], dtype=np.int64)
    language_of_pair = np.array([codes.index(code) for _, code in pairs], dtype=np.int64)
    n_pairs = len(pairs)
    mix = np.repeat(np.arange(n_mixes), design.seeds * n_pairs)
    seed = np.tile(np.repeat(np.arange(design.seeds), n_pairs), n_mixes)
    pair = np.tile(np.arange(n_pairs), n_mixes * design.seeds)
    target = target_of_pair[pair]
    return DesignRows(mix=mix, seed=seed, target=target, language=language_of_pair[pair],
                      target_language=pair, target_mix=target * n_mixes + mix,
                      n_levels={"target": len(targets), "target_language": n_pairs,
                                "mix": n_mixes, "target_mix": len(targets) * n_mixes,
                                "language": len(codes)})


# --------------------------------------------------------------------------------------------
# Variance components


@dataclass(frozen=True)
class Components:
    """Standard deviations (points) of the generative model's random effects and residual.

    Attributes
    ----------
    sd : dict of str to float
        One value per name in :data:`COMPONENTS`.
    source : str
        ``"defaults"`` or ``"pilot"``.
    sources : dict of str to str
        Where each value comes from.
    notes : tuple of str
        Caveats (guesses, components the pilot could not estimate, a small pilot).
    pilot : dict
        For a pilot: its size and the fit's fixed effects.
    """

    sd: Mapping[str, float]
    source: str = "defaults"
    sources: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pilot: Mapping[str, object] = field(default_factory=dict)
    #: SD (points per doubling) of each target's slope around the population's, by factor of
    #: :data:`SLOPES`; 0: every target has the population's slope.
    slope_sd: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(SLOPES, 0.0))
    #: Correlation of a target's diversity and volume slopes.
    slope_correlation: float = 0.0

    def __post_init__(self):
        missing = [c for c in COMPONENTS if c not in self.sd]
        if missing:
            raise PowerError(f"variance components missing: {', '.join(missing)}")
        for name, value in self.sd.items():
            if name not in COMPONENTS:
                raise PowerError(f"unknown variance component {name!r}; known: {', '.join(COMPONENTS)}")
            _check_sd(f"variance component {name!r}", value)
        if self.sd["seed"] <= 0:
            raise PowerError("the seed (residual) standard deviation must be positive")
        if set(self.slope_sd) != set(SLOPES):
            raise PowerError(f"slope_sd needs one SD for each of {', '.join(SLOPES)}, got "
                             f"{sorted(self.slope_sd)}")
        for name, value in self.slope_sd.items():
            _check_sd(f"the {name}-slope SD", value)
        rho = self.slope_correlation
        if not (isinstance(rho, int | float) and -1 <= rho <= 1):
            raise PowerError(f"slope_correlation must lie in [-1, 1], got {rho!r}")

    @property
    def has_slopes(self) -> bool:
        """Whether the targets' slopes differ (a slope SD above zero)."""
        return any(value > 0 for value in self.slope_sd.values())

    def slope_factor(self) -> np.ndarray:
        """A lower-triangular L with L L' the covariance of a target's (diversity, volume)
        slopes; written out rather than by Cholesky, which fails at a zero SD or |r| = 1."""
        sd_d, sd_v = (float(self.slope_sd[s]) for s in SLOPES)
        rho = float(self.slope_correlation)
        return np.array([[sd_d, 0.0], [rho * sd_v, math.sqrt(1 - rho ** 2) * sd_v]])

    def to_dict(self) -> dict:
        return {"sd": {c: float(self.sd[c]) for c in COMPONENTS},
                "slope_sd": {s: float(self.slope_sd[s]) for s in SLOPES},
                "slope_correlation": float(self.slope_correlation), "source": self.source,
                "sources": dict(self.sources), "notes": list(self.notes), "pilot": dict(self.pilot)}


def _check_sd(name: str, value: object) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise PowerError(f"{name} must be a standard deviation >= 0, got {value!r}")


def default_components(*, diversity_slope: float | None = None, volume_slope: float | None = None,
                       slope_correlation: float | None = None, **overrides: float) -> Components:
    """The documented default components (:data:`DEFAULT_SD`, :data:`DEFAULT_SLOPE_SD`,
    :data:`DEFAULT_SLOPE_CORRELATION`), guesses, with any overridden."""
    sd = DEFAULT_SD | {k: float(v) for k, v in overrides.items()}
    sources = {c: ("given" if c in overrides else DEFAULT_SOURCES[c]) for c in COMPONENTS}
    given = {"diversity_slope": diversity_slope, "volume_slope": volume_slope,
             "slope_correlation": slope_correlation}
    sources |= {k: ("given" if v is not None else DEFAULT_SLOPE_SOURCES[k]) for k, v in given.items()}
    slope_sd = {"diversity": DEFAULT_SLOPE_SD["diversity"] if diversity_slope is None
                else float(diversity_slope),
                "volume": DEFAULT_SLOPE_SD["volume"] if volume_slope is None else float(volume_slope)}
    rho = DEFAULT_SLOPE_CORRELATION if slope_correlation is None else float(slope_correlation)
    return Components(sd=sd, source="defaults", sources=sources, slope_sd=slope_sd,
                      slope_correlation=rho,
                      notes=("no pilot: the variance components are documented guesses, not "
                             "estimates; power depends most on the target-slope SDs (with "
                             "slopes in the model) or on the mix and target-by-mix SDs, so run "
                             "a pilot (--pilot) before trusting the numbers",))


def pilot_components(results, *, model: str | None = None) -> Components:
    """Variance components estimated from a pilot's results.

    The pilot is loaded and validated as ``analyze`` loads it; the rows the default analysis
    models are derived (``improvement``, each target's headline metric, non-English languages);
    and the model is built by ``analyze``'s own builder (no identity effects):
    ``outcome ~ diversity + volume (+ diversity:volume) + (1 | target_task)
    + (1 | target_task:language) + (1 | mix) + (1 | target_task:mix)``, with the
    target-specific slopes ``(1 + diversity + volume | target_task)`` wherever analyze would fit
    them (at least 3 targets, the factor varying within 3 of them). With slopes it is fitted as
    analyze fits it (``fit_slopes_model``: REML, reduced only where singular) and the slope SDs
    and their correlation are estimated with the other components; without, by REML with
    ``fit_crossed``, and the slopes keep their documented defaults with a note saying why. A
    component the pilot cannot estimate (a single target, a single mix) keeps its default, with
    a note.

    Parameters
    ----------
    results : str, pathlib.Path or pandas.DataFrame
        A results folder or flat table (anything ``transferstats.analyze`` reads).
    model : str, optional
        The model to use when the pilot holds several.

    Returns
    -------
    Components
        The estimated standard deviations, their sources, notes and the pilot fit's summary.

    Raises
    ------
    transferstats.problems.ResultsError
        The pilot cannot be loaded (every problem listed).
    PowerError
        It loads but holds nothing to estimate from (no baseline, fewer than two mixes).
    """
    from transferstats import loading

    pilot = _pilot_model(loading.load_results(results), model)
    notes, sources, sd = list(pilot.notes), {}, dict(DEFAULT_SD)
    for component, column in PILOT_FACTORS.items():
        if column not in pilot.random:
            notes.append(f"the pilot's model has no {component} variance (see the notes above): "
                         f"the default SD {DEFAULT_SD[component]} is used (a guess)")
            sources[component] = DEFAULT_SOURCES[component]
    fit = _pilot_fit(pilot)
    for component, column in PILOT_FACTORS.items():
        if column in pilot.random:
            sd[component] = float(math.sqrt(max(fit.variances[column], 0.0)))
            sources[component] = f"pilot ({fit.method})"
    sd["seed"] = fit.sigma
    sources["seed"] = f"pilot ({fit.method}, residual)"
    slope_sd, rho = _pilot_slopes(pilot, fit, notes, sources)
    data = pilot.data
    n_mixes = int(data["mix"].nunique())
    if n_mixes - (1 + len(pilot.fixed)) < 10:
        notes.append(f"the pilot has {n_mixes} mixes: its mix and target-by-mix SDs rest on "
                     f"{max(n_mixes - 1 - len(pilot.fixed), 0)} degrees of freedom and are "
                     "imprecise (a relative standard error of about 1/sqrt(2 df))")
    if pilot.slopes:
        n_targets = int(data["target_task"].nunique())
        notes.append(f"the slope SDs rest on the pilot's {n_targets} targets and are imprecise "
                     f"(a relative standard error of about 1/sqrt(2 x {n_targets - 1}))")
    if fit.on_boundary:
        notes.append(f"estimated at zero in the pilot: {', '.join(fit.on_boundary)}")
    if data.groupby(["mix", "target_task"])["seed"].nunique().max() < 2:
        notes.append("the pilot has one seed per (mix, target): its residual holds seed noise "
                     "and language-by-mix variation together")
    summary = {"n_rows": int(len(data)), "n_mixes": n_mixes,
               "targets": sorted(data["target_task"].unique()),
               "n_target_languages": int(data["target_language"].nunique()),
               "formula": fit.formula,
               "fixed_effects": {t: {"estimate": fit.fixed_effects[t][0],
                                     "se": fit.fixed_effects[t][1]} for t in pilot.fixed},
               "method": fit.method, "converged": fit.converged,
               "on_boundary": list(fit.on_boundary), "slopes": list(pilot.slopes),
               "slopes_reason": pilot.slopes_reason}
    return Components(sd=sd, source="pilot", sources=sources, notes=tuple(notes), pilot=summary,
                      slope_sd=slope_sd, slope_correlation=rho)


#: Variance components the pilot estimates -> the analysis's random factor of each.
PILOT_FACTORS = {"target": "target_task", "target_language": "target_language", "mix": "mix",
                 "target_mix": MIX_TARGET}


@dataclass(frozen=True)
class _Pilot:
    """A pilot's rows and the model analyze would fit on them (no identity effects)."""

    data: pd.DataFrame
    fixed: list[str]
    random: list[str]
    slopes: tuple[str, ...]
    slopes_reason: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _PilotFit:
    """What the pilot's REML fit says, whichever solver made it."""

    variances: dict[str, float]            # random factor -> intercept variance
    sigma: float
    fixed_effects: dict[str, tuple[float, float]]
    method: str
    converged: bool
    on_boundary: tuple[str, ...]
    formula: str
    slopes: pd.DataFrame | None = None     # covariance of the target effects, with slopes
    correlated_slopes: bool = False        # both slopes in one term, correlated


def _pilot_model(loaded, model: str | None) -> _Pilot:
    """The pilot's rows, fixed terms, random factors and target-specific slopes, described and
    built as ``analyze`` builds its plain model of the improvement (no identity effects)."""
    from transferstats.analysis.description import describe
    from transferstats.analysis.model import build_model
    from transferstats.problems import ResultsError
    from transferstats.results import BASELINE_MIX

    if not (loaded.scores["mix"] == BASELINE_MIX).any():
        raise PowerError("pilot: no baseline runs (mix 'none'), so the improvement the analysis "
                         "models cannot be computed")
    spec = AnalysisSpec(outcome="improvement", model=model or "", identity="off")
    try:
        described = describe(loaded, spec)
        data, structure = build_model(described.description, described.data, described.mixes,
                                      interaction=True, target_mix=True, identity="off",
                                      random_slopes="auto")
    except (ResultsError, ValueError) as error:
        problems = getattr(error, "problems", None)
        message = next((p.message for p in problems if p.severity == "error"), str(error)) \
            if problems else str(error)
        raise PowerError(f"pilot: {message}") from None
    return _Pilot(data, structure.fixed, list(structure.random), structure.slopes,
                  structure.slopes_reason, structure.notes)


def _pilot_fit(pilot: _Pilot) -> _PilotFit:
    """The pilot's model fitted as analyze fits it: with slopes by ``fit_slopes_model``, else
    by ``fit_crossed`` (REML)."""
    if pilot.slopes:
        try:
            slopes = fit_slopes_model(pilot.data, "improvement", pilot.fixed, pilot.random,
                                      {"target_task": pilot.slopes}, {}, LEVEL, "satterthwaite")
        except (np.linalg.LinAlgError, ValueError) as error:
            raise PowerError(f"pilot: the model with target-specific slopes could not be fitted: "
                             f"{error}") from None
        fit = slopes.fit
        variances = {f: _covariance(fit.covariance(f), "Intercept", "Intercept")
                     for f in pilot.random}
        table = slopes.table[["estimate", "se"]].astype(float)
        return _PilotFit(
            variances=variances, sigma=float(fit.sigma),
            fixed_effects={t: (float(table["estimate"][t]), float(table["se"][t]))
                           for t in pilot.fixed},
            method="REML with target-specific slopes, fit_slopes_model",
            converged=bool(fit.converged), on_boundary=tuple(str(c) for c in fit.singular),
            formula="improvement ~ " + " + ".join(pilot.fixed or ["1"]) + " + "
                    + slopes.reduction.structure,
            slopes=fit.covariance("target_task"),
            correlated_slopes=any(term.factor == "target_task" and set(SLOPES) <= set(term.columns)
                                  for term in fit.terms))
    with threadpool_limits(1):
        crossed = fit_crossed(pilot.data, "improvement", pilot.fixed, pilot.random, reml=True)
    frame = crossed.summary_frame()
    effects = {str(term): (float(estimate), float(se)) for term, estimate, se
               in zip(frame["term"], frame["estimate"], frame["se"], strict=True)}
    return _PilotFit(
        variances={f: float(crossed.variance_components[f]) for f in pilot.random},
        sigma=float(math.sqrt(crossed.residual_variance)), fixed_effects=effects,
        method="REML, fit_crossed", converged=bool(crossed.converged),
        on_boundary=tuple(crossed.on_boundary),
        formula="improvement ~ " + " + ".join(pilot.fixed or ["1"]) + " + "
                + " + ".join(f"(1 | {FACTOR_NOTATION[f]})" for f in pilot.random))


def _covariance(cov: pd.DataFrame, first: str, second: str) -> float:
    """One entry of a covariance matrix labelled by its effects."""
    return float(cov.to_numpy(dtype=float)[list(cov.index).index(first),
                                           list(cov.columns).index(second)])


def _pilot_slopes(pilot: _Pilot, fit: _PilotFit, notes: list[str], sources: dict[str, str]
                  ) -> tuple[dict[str, float], float]:
    """The target-slope SDs and correlation the pilot's slopes fit estimates; the defaults,
    with a note saying why, for what it cannot estimate."""
    slope_sd, rho = dict(DEFAULT_SLOPE_SD), DEFAULT_SLOPE_CORRELATION
    source = f"pilot ({fit.method})"
    if fit.slopes is None:
        notes.append(f"the pilot cannot estimate how the slopes differ between targets "
                     f"({pilot.slopes_reason}): the default slope SDs and correlation are used "
                     "(guesses)")
        sources |= {k: DEFAULT_SLOPE_SOURCES[k] for k in DEFAULT_SLOPE_SOURCES}
        return slope_sd, rho
    cov = fit.slopes
    for factor in SLOPES:
        key = f"{factor}_slope"
        if factor not in pilot.slopes:
            notes.append(f"the pilot has no {factor} slope by target ({pilot.slopes_reason}): "
                         f"the default {factor}-slope SD {DEFAULT_SLOPE_SD[factor]} is used (a "
                         "guess)")
            sources[key] = DEFAULT_SLOPE_SOURCES[key]
        elif factor not in cov.index:
            slope_sd[factor] = 0.0
            sources[key] = f"{source}: its variance was at zero and the slope was dropped"
        else:
            slope_sd[factor] = math.sqrt(max(_covariance(cov, factor, factor), 0.0))
            sources[key] = source
    if fit.correlated_slopes and min(slope_sd.values()) > 0:
        rho = _covariance(cov, *SLOPES) / (slope_sd["diversity"] * slope_sd["volume"])
        sources["slope_correlation"] = source
    elif set(SLOPES) <= set(pilot.slopes):
        rho = 0.0
        sources["slope_correlation"] = (f"{source}: the correlated fit was singular and was "
                                        "reduced to uncorrelated slopes, so 0 as in that fit")
    else:
        notes.append("the pilot cannot estimate the correlation of the diversity and volume "
                     f"slopes (it has not both): the default {DEFAULT_SLOPE_CORRELATION} is used "
                     "(a guess)")
        sources["slope_correlation"] = DEFAULT_SLOPE_SOURCES["slope_correlation"]
    return slope_sd, max(-1.0, min(1.0, rho))


# --------------------------------------------------------------------------------------------
# The analysis the verdict comes from, for one design


@dataclass(frozen=True)
class AnalysisModel:
    """What ``analyze`` would fit on a design, and what the power is about.

    ``question`` is ``"diversity - volume"`` when both vary, else the varied factor's name.
    ``fixed`` are the model's fixed terms after the intercept (diversity, volume, maybe their
    interaction, maybe the task shares of the identity model) and ``mix_columns`` their value
    for each mix; ``weights`` is the question as weights on (intercept, *fixed) and ``core`` the
    outputs a bootstrap resample must estimate to count. ``blocked`` says why no verdict can be
    reached (a confounded design), else ``""``.
    """

    question: str
    fixed: tuple[str, ...]
    random: tuple[str, ...]
    weights: np.ndarray
    mix_columns: np.ndarray
    core: np.ndarray
    identity: Mapping[str, object]
    correlation: float | None
    blocked: str
    resample_failure: float
    notes: tuple[str, ...]
    #: How analyze bootstraps this model: "parametric", "crossed cluster", or "none" where
    #: its verdict is the slopes model's Wald t interval.
    bootstrap: str = "crossed cluster"
    #: Factors with a random slope by target (:func:`transferstats.analysis.model.slope_plan`,
    #: before any reduction of a singular fit), and why these or none.
    slopes: tuple[str, ...] = ()
    slopes_reason: str = ""
    #: Targets of the design: the search's screen of a slopes model reads its t quantile on
    #: targets - 1 degrees of freedom.
    n_targets: int = 0

    @property
    def formula(self) -> str:
        names = {"target": "target_task", "target_language": "target_task:language",
                 "mix": "mix", "target_mix": "target_task:mix"}
        shares = [t for t in self.fixed if t.startswith("share[")]
        shown = [t for t in self.fixed if not t.startswith("share[")]
        if shares:
            shown.append(f"{len(shares)} task shares (reference {self.identity.get('reference')})")

        def term(factor: str) -> str:
            columns = ["1", *self.slopes] if factor == "target" else ["1"]
            return f"({' + '.join(columns)} | {names[factor]})"

        return ("improvement ~ " + " + ".join(shown or ["1"]) + " + "
                + " + ".join(term(r) for r in self.random))

    @property
    def stand_in(self) -> str:
        """How each simulated grid is analysed."""
        return STAND_IN_SLOPES if self.slopes else STAND_IN


def analysis_model(design: GridDesign, *, interaction: bool = True, identity: str = "auto",
                   analysis_target_mix: bool = ANALYSIS_TARGET_MIX,
                   max_correlation: float = MAX_CORRELATION, seed: int = 0,
                   draws: int = 2000, random_slopes: str = "auto") -> AnalysisModel:
    """The model ``analyze`` fits on this design and the question its verdict answers.

    Follows ``transferstats.analysis.pipeline``: diversity and volume centred over the mixes, the
    interaction when the mixes can estimate it, the task-identity shares when
    ``transferstats.analysis.identity`` finds them estimable (``identity="auto"``, analyze's
    default), random factors with at least two levels, target-specific slopes of the varied
    factors where analyze's own rule gives them (:func:`transferstats.analysis.model.slope_plan`
    on the design's rows; ``random_slopes`` is analyze's setting), and the design check (``|r| >=
    max_correlation``, or fewer than 3 mixes, is ``confounded``). Where only one of diversity and
    volume varies, the question is that factor's effect (issue 13). ``resample_failure`` is the
    probability that a crossed-bootstrap resample of the mixes cannot estimate the core outputs
    (effects and contrast), estimated from ``draws`` resamples of the mixes; 0 with slopes,
    whose verdict does not resample.
    """
    d, v = design.log2_levels()
    n_mixes = len(design.mixes)
    per_mix = pd.DataFrame({"mix": [name for name, _ in design.mixes], "diversity": d,
                            "volume": v})
    # The same rules as analyze's design check (a split budget's rounding is no variation) and
    # its model builder.
    varied = varying_factor(np.asarray(design.n_tasks, float), np.asarray(design.examples, float))
    if varied == "neither":
        raise PowerError("neither diversity nor volume varies across the grid's mixes: there is "
                         "no effect to plan for")
    fixed, notes = fixed_terms(per_mix, varied, interaction)
    per_mix[INTERACTION] = d * v
    columns = [per_mix[term].to_numpy() for term in fixed]
    question = _question(design, varied, max_correlation)
    notes = list(question.notes) or notes
    mix_terms = list(fixed)
    # Task identity effects where analyze would fit them, whichever factors vary (issue 13).
    identity_info = _identity(design, per_mix, mix_terms, identity, question.separable)
    if identity_info["used"]:
        _add_identity_shares(design, identity_info["reference"], fixed, columns)
        notes.append(f"analyze's primary model has task identity effects on this grid "
                     f"({identity_info['reason']}); the stand-in fits them too")
    weights, core_matrix = _core_outputs(question.question, len(fixed), len(mix_terms))
    random = _random(design, analysis_target_mix, notes)
    mix_columns = np.column_stack(columns)
    slopes, slopes_reason = ((), "no model is fitted on a design that cannot give a verdict") \
        if question.blocked else _slopes(design, per_mix, mix_terms, random_slopes)
    failure = 0.0 if slopes else resample_failure(mix_columns, core_matrix, seed=seed,
                                                  draws=draws)
    notes.append(f"analyze's primary model has target-specific slopes ({slopes_reason}); its "
                 "verdict is the Wald t interval on Satterthwaite's df, which the simulations "
                 "compute as analyze does" if slopes else slopes_reason)
    if failure > 0.005:
        notes.append(f"{failure:.1%} of bootstrap resamples of these {n_mixes} mixes cannot "
                     f"estimate the effects (a resample loses a design point); analyze "
                     f"withholds the verdict when more than {MAX_FAILED_SHARE:.0%} of its "
                     f"{RESAMPLES} resamples fail")
    identity_info["mode"] = identity
    bootstrap = "none" if slopes else "parametric" if identity_info["used"] else "crossed cluster"
    return AnalysisModel(question=question.question, fixed=tuple(fixed), random=random,
                         weights=weights, mix_columns=mix_columns, core=core_matrix,
                         identity=identity_info, correlation=question.correlation,
                         blocked=question.blocked, resample_failure=failure, notes=tuple(notes),
                         bootstrap=bootstrap, slopes=slopes, slopes_reason=slopes_reason,
                         n_targets=len(design.targets))


@dataclass(frozen=True)
class _Question:
    """What a design's verdict answers and whether it can: the contrast where both factors vary
    (blocked when they are confounded), else the one varied factor's effect (with the note that
    replaces the model builder's)."""

    question: str
    correlation: float | None
    blocked: str
    separable: bool
    notes: tuple[str, ...] = ()


def _question(design: GridDesign, varied: str, max_correlation: float) -> _Question:
    n_mixes = len(design.mixes)
    if varied == "both":
        r = diversity_volume_correlation(design.n_tasks.tolist(), design.examples.tolist())
        correlation = None if math.isnan(r) else r
        threshold = min(max_correlation, SEPARABLE_CORRELATION)
        blocked = ""
        if n_mixes < 3:
            blocked = f"confounded: {n_mixes} mixes cannot separate diversity from volume"
        elif correlation is not None and abs(correlation) >= threshold:
            blocked = (f"confounded: diversity and volume correlate at r = {correlation:.3f} "
                       f"across mixes (|r| >= {threshold})")
        separable = correlation is not None and abs(correlation) < SEPARABLE_CORRELATION
        return _Question(CONTRAST, correlation, blocked, separable)
    other = "volume" if varied == "diversity" else "diversity"
    level = (f"{int(design.n_tasks[0])} task(s)" if varied == "volume"
             else f"{int(design.examples[0]):,} examples")
    note = (f"only {varied} varies ({other} is fixed at {level}): the power is for the {varied} "
            "effect (points per doubling), which is what such a grid can answer; --difference "
            "is read as that effect")
    blocked = (f"{n_mixes} mixes cannot estimate the {varied} effect and its variance"
               if n_mixes < 3 else "")
    return _Question(varied, None, blocked, True, (note,))


def _add_identity_shares(design: GridDesign, reference: str, fixed: list[str],
                         columns: list[np.ndarray]) -> None:
    """Append every task's share but the reference's to the fixed terms and their columns."""
    shares = design.shares()
    for task in shares.columns:
        if task != reference:
            fixed.append(f"share[{task}]")
            columns.append(shares[task].to_numpy())


def _core_outputs(question: str, n_fixed: int, n_mix_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """The question's weights on the coefficients (intercept first) and the core outputs a
    resample must estimate: each mix-level effect and the contrast, or the one effect."""
    weights = np.zeros(1 + n_fixed)
    if question != CONTRAST:
        weights[1] = 1.0
        return weights, np.array([weights])
    weights[1], weights[2] = 1.0, -1.0
    unit = np.eye(1 + n_fixed)
    return weights, np.array([unit[1 + i] for i in range(n_mix_terms)] + [weights])


def _slopes(design: GridDesign, per_mix: pd.DataFrame, mix_terms: list[str], mode: str
            ) -> tuple[tuple[str, ...], str]:
    """analyze's target-specific slopes on this design: its own rule
    (:func:`transferstats.analysis.model.slope_plan`) applied to the design's rows."""
    rows = design_rows(design)
    frame = pd.DataFrame({"target_task": rows.target,
                          "diversity": per_mix["diversity"].to_numpy()[rows.mix],
                          "volume": per_mix["volume"].to_numpy()[rows.mix]})
    try:
        return slope_plan(frame, mix_terms, mode)
    except ValueError as error:
        raise PowerError(str(error)) from None


def _identity(design: GridDesign, per_mix: pd.DataFrame, mix_terms: list[str], mode: str,
              separable: bool) -> dict:
    """Whether analyze's primary model would have task identity effects on this design."""
    plan = identity_plan(per_mix, design.shares(), mix_terms, mode, separable, TASK_WORDS)
    return {"used": plan.used, "reason": plan.reason, "reference": plan.reference,
            "mix_df": plan.estimability.get("mix_df")}


#: The solver's names of analyze's random factors (``design_rows``' codes).
_ROW_CODES = {"target_task": "target", "target_language": "target_language", "mix": "mix",
              MIX_TARGET: "target_mix"}


def _random(design: GridDesign, target_mix: bool, notes: list[str]) -> tuple[str, ...]:
    """analyze's random factors for this design (:func:`transferstats.analysis.model.random_factors`),
    named by their row codes."""
    levels = design_rows(design).n_levels
    per_cell = design.seeds * max(len(v) for v in design.languages.values())
    factors, factor_notes, warnings = random_factors(
        {"target_task": levels["target"], "target_language": levels["target_language"],
         "mix": levels["mix"]}, row_outcome=True, target_mix=target_mix,
        cells_replicated=per_cell > 1)
    notes += warnings
    return tuple(_ROW_CODES[f] for f in factors)


def _estimable(gram: np.ndarray, outputs: np.ndarray, tolerance: float = 1e-10) -> np.ndarray:
    """Which outputs (rows of weights on the columns) stay estimable when the columns of a
    rank-deficient design (``gram`` = X'X) are kept greedily in model order: an output c'beta is
    estimable when c is orthogonal to the null space of X'X (Searle 1971, "Linear Models",
    ch. 5). Columns are compared on the correlation scale."""
    p = len(gram)
    scale = np.sqrt(np.clip(np.diag(gram), 0, None))
    scale[scale == 0] = 1.0
    g = gram / np.outer(scale, scale)
    kept: list[int] = []
    null = []
    for j in range(p):
        a = np.linalg.lstsq(g[np.ix_(kept, kept)], g[kept, j], rcond=None)[0] if kept \
            else np.zeros(0)
        if g[j, j] - g[kept, j] @ a > tolerance:
            kept.append(j)
            continue
        vector = np.zeros(p)
        vector[j] = 1.0
        vector[kept] = -a
        null.append(vector / scale)
    if not null:
        return np.ones(len(outputs), dtype=bool)
    basis = np.array(null).T
    size = np.linalg.norm(outputs, axis=1)[:, None] * np.linalg.norm(basis, axis=0)[None, :]
    return np.all(np.abs(outputs @ basis) <= 1e-8 * size, axis=1)


_FAILURE_CACHE: dict[tuple, float] = {}


def resample_failure(mix_columns: np.ndarray, core: np.ndarray, *, seed: int = 0,
                     draws: int = 2000) -> float:
    """Share of with-replacement resamples of the mixes on which some core output is not
    estimable (the crossed bootstrap's failed resamples; ``bootstrap.refit`` drops dependent
    columns greedily in model order and fails the outputs that need them)."""
    key = (mix_columns.tobytes(), mix_columns.shape, core.tobytes(), seed, draws)
    if key in _FAILURE_CACHE:
        return _FAILURE_CACHE[key]
    n = len(mix_columns)
    design = np.column_stack([np.ones(n), mix_columns])
    p = design.shape[1]
    rng = np.random.default_rng([seed, 7])
    drawn = rng.integers(n, size=(draws, n))
    present = np.zeros((draws, n))
    np.put_along_axis(present, drawn, 1.0, axis=1)
    # X'X of the distinct drawn mixes (multiplicity does not change the rank), all at once.
    grams = np.einsum("bi,ij,ik->bjk", present, design, design)
    deficient = np.flatnonzero(np.linalg.matrix_rank(grams) < p)
    if np.linalg.matrix_rank(core[:, 1:]) == p - 1:
        # Every column but the intercept is a core output: any dependent column fails.
        failed = len(deficient)
    else:
        failed = sum(not _estimable(grams[b], core).all() for b in deficient)
    _FAILURE_CACHE[key] = failed / draws
    return failed / draws


# --------------------------------------------------------------------------------------------
# Simulating and analysing grids

@dataclass
class _Simulator:
    """What a worker needs to simulate and analyse one grid: compact arrays only."""

    X: np.ndarray                          # analysis fixed-effect design (n, p)
    fixed: tuple[str, ...]
    weights: np.ndarray                    # the question as weights on beta
    core: np.ndarray
    generative_codes: list[np.ndarray]     # target, target_language, mix, target_mix
    generative_levels: list[int]
    generative_sd: np.ndarray              # the four random SDs
    seed_sd: float
    random: tuple[str, ...]
    fit_codes: list[np.ndarray]            # the analysis model's random factors
    fit_levels: list[int]
    start: np.ndarray                      # relative SDs to start the optimiser from
    resample_failure: float
    resamples: int
    level: float
    language: np.ndarray                   # language code of each row
    seed_code: np.ndarray
    question: str = CONTRAST
    names: Mapping[str, list] = field(default_factory=dict)   # for the calibration's results
    identity: str = "auto"                                      # analyze's identity setting
    slope_columns: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # centred
    # (diversity, volume) of each row
    slope_factor: np.ndarray | None = None    # L with L L' the targets' slope covariance
    slopes: tuple[str, ...] = ()              # the analysis model's slopes by target
    frame: pd.DataFrame | None = None         # its rows for the slopes fit, outcome aside


def _simulator(design: GridDesign, components: Components, model: AnalysisModel,
               resamples: int = RESAMPLES, level: float = LEVEL) -> _Simulator:
    rows = design_rows(design)
    X = np.column_stack([np.ones(rows.n), model.mix_columns[rows.mix]])
    codes = {"target": rows.target, "target_language": rows.target_language, "mix": rows.mix,
             "target_mix": rows.target_mix}
    sd = components.sd
    generative = list(COMPONENTS[:4])
    # The analysis model without target:mix sees that variance in its residual.
    residual = math.sqrt(sd["seed"] ** 2 + (0.0 if "target_mix" in model.random
                                            else sd["target_mix"] ** 2))
    # A start away from zero: Newton steps from a tiny positive start stall.
    start = np.array([max(sd[r] / residual, 0.05) for r in model.random])
    d, v = design.log2_levels()
    return _Simulator(
        X=X, fixed=model.fixed, weights=model.weights, core=model.core,
        generative_codes=[codes[c] for c in generative],
        generative_levels=[rows.n_levels[c] for c in generative],
        generative_sd=np.array([sd[c] for c in generative]), seed_sd=float(sd["seed"]),
        random=model.random, fit_codes=[codes[r] for r in model.random],
        fit_levels=[rows.n_levels[r] for r in model.random], start=start,
        resample_failure=model.resample_failure, resamples=resamples, level=level,
        language=rows.language, seed_code=rows.seed, question=model.question,
        names=_names(design), identity=str(model.identity.get("mode", "auto")),
        slope_columns=np.column_stack([d[rows.mix], v[rows.mix]]),
        slope_factor=components.slope_factor() if components.has_slopes else None,
        slopes=model.slopes, frame=_slopes_frame(rows, model) if model.slopes else None)


#: analyze's names of the random factors (``design_rows``' codes -> the fitted columns).
_FIT_FACTORS = {code: factor for factor, code in _ROW_CODES.items()}


def _slopes_frame(rows: DesignRows, model: AnalysisModel) -> pd.DataFrame:
    """The design's rows as the slopes model reads them: its random factors' codes under
    analyze's names and its fixed terms' columns (an interaction is their product)."""
    codes = {"target": rows.target, "target_language": rows.target_language, "mix": rows.mix,
             "target_mix": rows.target_mix}
    frame = {_FIT_FACTORS[r]: codes[r] for r in model.random}
    frame |= {term: model.mix_columns[rows.mix, k] for k, term in enumerate(model.fixed)
              if term != INTERACTION}
    return pd.DataFrame(frame)


def _names(design: GridDesign) -> dict[str, list]:
    """Names of a design's levels, in the order of :func:`design_rows`' codes."""
    from transferstats.results import format_mix_tasks
    from transferstats.tasks import get_task

    pairs = [(target, code) for target in design.targets for code in design.languages[target]]
    return {"mixes": [name for name, _ in design.mixes],
            "mix_tasks": [format_mix_tasks(dict(tasks)) for _, tasks in design.mixes],
            "targets": list(design.targets),
            "metrics": [get_task(target).metric for target in design.targets],
            "languages": [code for _, code in pairs]}


def simulate_outcome(sim: _Simulator, rng: np.random.Generator) -> np.ndarray:
    """One simulated grid's outcomes at true difference 0 (fixed effects 0: the estimates are
    shift-equivariant, so the difference is added afterwards)."""
    n = len(sim.X)
    y = sim.seed_sd * rng.standard_normal(n)
    for codes, n_levels, sd in zip(sim.generative_codes, sim.generative_levels,
                                   sim.generative_sd, strict=True):
        effects = rng.standard_normal(n_levels)
        if sd > 0:
            y += sd * effects[codes]
    if sim.slope_factor is not None:
        # Each target's deviation from the population slopes (drawn after the intercepts, so
        # that components without slope variation keep their draws).
        deviation = rng.standard_normal((sim.generative_levels[0], 2)) @ sim.slope_factor.T
        y += np.einsum("ij,ij->i", deviation[sim.generative_codes[0]], sim.slope_columns)
    return y


def _analyse(sim: _Simulator, y: np.ndarray) -> tuple[float, float]:
    """The question's REML estimate and Wald standard error; NaN when the fit fails."""
    try:
        cp = cross_products(sim.X, y, sim.fit_codes, sim.fit_levels)
        state = fit_theta(cp, reml=True, start=sim.start)
        if not state.converged:
            state = fit_theta(cp, reml=True, start=None)
        if not state.converged:
            return math.nan, math.nan
        p = cp.p
        hessian = derivatives(state.psi, state.beta, cp, reml=True).hessian
        cov = np.linalg.inv(-hessian)[:p, :p]
    except (np.linalg.LinAlgError, ValueError):
        return math.nan, math.nan
    variance = float(sim.weights @ cov @ sim.weights)
    if not variance > 0:
        return math.nan, math.nan
    return float(sim.weights @ state.beta), math.sqrt(variance)


def _analyse_slopes(sim: _Simulator, y: np.ndarray) -> tuple[float, float, float]:
    """The question's estimate, standard error and Satterthwaite df as analyze's verdict reads
    them from the slopes model (``fit_slopes_model``); NaN when the fit fails. Where the
    reduction drops every slope, analyze bootstraps the model of random intercepts instead:
    that model's estimate and Wald standard error, with df ``inf`` (a z interval, uncalibrated)."""
    if sim.frame is None:
        raise ValueError("the simulator has no rows for a slopes fit")
    contrasts = {CONTRAST: {"diversity": 1.0, "volume": -1.0}} if sim.question == CONTRAST else {}
    try:
        model = fit_slopes_model(sim.frame.assign(improvement=y), "improvement", list(sim.fixed),
                                 [_FIT_FACTORS[r] for r in sim.random],
                                 {_FIT_FACTORS["target"]: sim.slopes}, contrasts, sim.level,
                                 "satterthwaite")
    except (np.linalg.LinAlgError, ValueError):
        return math.nan, math.nan, math.nan
    if all(term.columns == ("Intercept",) for term in model.fit.terms):
        return (*_analyse(sim, y), math.inf)
    values = model.table.loc[sim.question, ["estimate", "se", "df"]].to_numpy(float)
    return float(values[0]), float(values[1]), float(values[2])


def _one(sim: _Simulator, seed: np.random.SeedSequence) -> list[float]:
    rng = np.random.default_rng(seed)
    y = simulate_outcome(sim, rng)
    if sim.slopes:
        estimate, se, df = _analyse_slopes(sim, y)
    else:
        (estimate, se), df = _analyse(sim, y), math.nan
    failed = int(rng.binomial(sim.resamples, sim.resample_failure)) \
        if sim.resample_failure > 0 else 0
    return [estimate, se, failed, df]


def results_table(sim: _Simulator, y: np.ndarray) -> pd.DataFrame:
    """A simulated grid as a flat results table (the contract's columns): every run of the
    design with its scores, baselines included. The baselines score a constant, so the
    improvement ``analyze`` derives is exactly ``y``."""
    names = sim.names
    base = 50.0
    mix = np.asarray(names["mixes"], dtype=object)
    target = np.asarray(names["targets"], dtype=object)
    language = np.asarray(names["languages"], dtype=object)
    metric = np.asarray(names["metrics"], dtype=object)
    seed = sim.seed_code + 1
    m, t = sim.generative_codes[2], sim.generative_codes[0]
    trained = pd.DataFrame({
        "run_id": [f"{a}.{b}.s{c}" for a, b, c in zip(mix[m], target[t], seed, strict=True)],
        "model": "simulated", "mix": mix[m], "mix_tasks": np.asarray(names["mix_tasks"],
                                                                     dtype=object)[m],
        "target_task": target[t], "seed": seed, "language": language[sim.generative_codes[1]],
        "metric": metric[t], "split": "test", "value": base + y})
    baseline = trained.drop_duplicates(["target_task", "language", "seed"]).assign(
        mix=BASELINE, mix_tasks="", value=base)
    baseline["run_id"] = (BASELINE + "." + baseline["target_task"] + ".s"
                          + baseline["seed"].astype(str))
    return pd.concat([trained, baseline], ignore_index=True)


BASELINE = "none"


def _calibrate_one(sim: _Simulator, seed: np.random.SeedSequence, index: int,
                   resamples: int) -> list[float]:
    """One calibration grid: the stand-in's estimate and Wald SE, and the interval the verdict
    comes from, by ``analyze`` itself (``analyze_loaded`` on the simulated results, its default
    settings but ``resamples`` and no slopes; the primary model only, as the verdict needs)."""
    import warnings

    from transferstats import loading
    from transferstats.analysis.pipeline import analyze_loaded
    from transferstats.analysis.spec import AnalysisSpec
    from transferstats.problems import ResultsError

    rng = np.random.default_rng(seed)
    y = simulate_outcome(sim, rng)
    estimate, se = _analyse(sim, y)
    failed_row = [estimate, se, math.nan, math.nan, math.nan, math.nan]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = loading.load_results(results_table(sim, y))
            # Already on a worker: its bootstrap runs right there. Only a model without slopes
            # is calibrated, so analyze is held to that model (its own "auto" would give slopes
            # where power was asked for none).
            spec = AnalysisSpec(resamples=resamples, seed=index, identity=sim.identity,
                                scheduler=LOCAL, random_slopes="off")
            result = analyze_loaded(loaded, spec,
                                    n_jobs=1, progress=False, companions=False)
    except (ResultsError, np.linalg.LinAlgError, ValueError):
        return failed_row
    estimates = result.estimates
    if sim.question == CONTRAST:
        found = estimates.get("comparison") or {}
    else:
        found = next((e for e in estimates.get("effects", []) if e.get("term") == sim.question),
                     {})
    values = [math.nan if found.get(key) is None else float(found[key])
              for key in ("estimate", "bootstrap_se", "ci_low", "ci_high")]
    if not all(math.isfinite(v) for v in values):
        return failed_row
    failed = (estimates.get("bootstrap") or {}).get("failed_resamples")
    return [values[0], se, values[1], values[2], values[3],
            math.nan if failed is None else float(failed)]


def _do(sim: _Simulator, job: tuple) -> list[float]:
    """One job: a simulated grid analysed by the stand-in, or a calibration grid by analyze."""
    if job[0] == "simulate":
        return _one(sim, job[1])
    return _calibrate_one(sim, job[1], job[2], job[3])


# --------------------------------------------------------------------------------------------
# Results


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927)."""
    if trials == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level,
                                                                    method="wilson")
    return float(ci.low), float(ci.high)


@dataclass
class Calibration:
    """``analyze`` run on simulated grids of the design, beside the stand-in.

    Per grid: the estimate, the Wald SE of the stand-in, analyze's bootstrap SE, the interval
    the verdict comes from (``low``, ``high``: the crossed bootstrap's BCa interval, or the
    parametric bootstrap's with its t widening where the model has task identity effects) and
    the failed resamples. ``lower`` and ``upper`` are that interval's distances from the estimate
    in Wald standard errors: the stand-in's interval on a simulated grid is
    ``estimate - lower * se, estimate + upper * se`` with the pair of one calibration grid drawn
    at random, which carries the interval's width, its asymmetry and its spread from grid to
    grid.
    """

    estimate: np.ndarray
    wald_se: np.ndarray
    boot_se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    failed: np.ndarray
    resamples: int

    @property
    def usable(self) -> np.ndarray:
        return np.isfinite(self.low) & np.isfinite(self.high) & np.isfinite(self.wald_se)

    @property
    def lower(self) -> np.ndarray:
        return ((self.estimate - self.low) / self.wald_se)[self.usable]

    @property
    def upper(self) -> np.ndarray:
        return ((self.high - self.estimate) / self.wald_se)[self.usable]

    def summary(self, level: float = LEVEL) -> dict:
        z = float(stats.norm.ppf((1 + level) / 2))
        ratio = (self.boot_se / self.wald_se)[self.usable]
        return {"grids": int(len(self.estimate)), "usable": int(self.usable.sum()),
                "resamples": self.resamples,
                "bootstrap_se_over_wald_se": _stats(ratio),
                "lower_over_z": _stats(self.lower / z), "upper_over_z": _stats(self.upper / z),
                "coverage_of_zero": float(np.mean((self.low < 0) & (self.high > 0))),
                "failed_share_mean": float(np.mean(self.failed / self.resamples))}


def _stats(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"mean": None, "sd": None}
    return {"mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else None}


@dataclass
class Simulations:
    """The stand-in's analyses of ``n`` simulated grids at true difference 0.

    ``estimate`` and ``se`` are the question's estimate and Wald standard error (NaN for a failed
    fit), ``failed_resamples`` the bootstrap resamples that would not have fitted. The interval
    of analysis ``i`` is ``estimate - lower[i] * se, estimate + upper[i] * se``: the t quantile
    on its Satterthwaite ``df`` where analyze's model has slopes, else the z quantile without
    calibration, a calibration grid's distances with it. The verdict at any true difference
    ``D`` follows exactly (shift equivariance).
    """

    estimate: np.ndarray
    se: np.ndarray
    failed_resamples: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    resamples: int = RESAMPLES
    level: float = LEVEL
    blocked: str = ""
    calibration: Calibration | None = None
    assignment: np.ndarray | None = None
    #: Resampled calibration sets, to carry the calibration's own error into the intervals.
    replicate_lower: np.ndarray | None = None
    replicate_upper: np.ndarray | None = None
    #: Satterthwaite df of each analysis where the verdict is the slopes model's Wald t.
    df: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.estimate)

    @property
    def fit_failed(self) -> np.ndarray:
        return ~(np.isfinite(self.estimate) & np.isfinite(self.se))

    @property
    def withheld(self) -> np.ndarray:
        """Analyses that give no directional verdict whatever the difference."""
        vetoed = self.failed_resamples / self.resamples > MAX_FAILED_SHARE
        return self.fit_failed | vetoed | bool(self.blocked)

    def threshold(self, lower: np.ndarray | None = None) -> np.ndarray:
        """The smallest true difference at which each analysis says ``supported`` (minus its
        lower interval end at difference 0); ``inf`` where it never does."""
        lower = self.lower if lower is None else lower
        with np.errstate(invalid="ignore"):
            value = lower * self.se - self.estimate
        return np.where(self.withheld | ~np.isfinite(value), np.inf, value)

    def supported(self, difference: float) -> np.ndarray:
        return self.threshold() < difference

    def refuted(self, difference: float, upper: np.ndarray | None = None) -> np.ndarray:
        upper = self.upper if upper is None else upper
        with np.errstate(invalid="ignore"):
            high = self.estimate + difference + upper * self.se
        return ~self.withheld & (high < 0)

    def _replicates(self):
        if self.replicate_lower is None or self.replicate_upper is None:
            return []
        return list(zip(self.replicate_lower, self.replicate_upper, strict=True))

    def _widen(self, value: float, interval: tuple[float, float], replicates: list[float]
               ) -> tuple[float, float]:
        """The Monte Carlo interval widened, in quadrature, by the calibration's own error
        (the spread of the value over resampled calibration sets)."""
        low, high = interval
        if len(replicates) < 2:
            return low, high
        spread = 1.96 * float(np.std(replicates, ddof=1))
        return (max(0.0, value - math.hypot(value - low, spread)),
                min(1.0, value + math.hypot(high - value, spread)))

    def power(self, difference: float) -> tuple[float, tuple[float, float]]:
        """Share of analyses saying ``supported`` at this true difference, and its 95% Monte
        Carlo interval (Wilson, widened by the calibration's error)."""
        k = int(self.supported(difference).sum())
        value = k / self.n
        replicates = [float(np.mean(self.threshold(lower) < difference))
                      for lower, _ in self._replicates()]
        return value, self._widen(value, wilson_interval(k, self.n), replicates)

    def false_positive_rate(self) -> tuple[float, tuple[float, float]]:
        """Share of directional verdicts (``supported`` or ``refuted``) at true difference 0."""
        k = int((self.supported(0.0) | self.refuted(0.0)).sum())
        value = k / self.n
        replicates = [float(np.mean((self.threshold(lower) < 0) | self.refuted(0.0, upper)))
                      for lower, upper in self._replicates()]
        return value, self._widen(value, wilson_interval(k, self.n), replicates)

    def minimum_detectable(self, power: float) -> tuple[float | None, tuple[float | None, float | None]]:
        """The smallest true difference with power at least ``power``, and a 95% interval for
        it (order statistics of the per-analysis thresholds, widened by the calibration's
        error)."""
        n = self.n
        k = math.ceil(power * n)

        def quantile(thresholds: np.ndarray) -> float:
            return float(np.sort(thresholds)[k - 1])

        thresholds = np.sort(self.threshold())
        value = quantile(thresholds)
        low_index = max(int(stats.binom.ppf(0.025, n, power)), 1)
        high_index = int(stats.binom.ppf(0.975, n, power)) + 1
        low = float(thresholds[low_index - 1])
        high = float(thresholds[high_index - 1]) if high_index <= n else math.inf
        replicates = [quantile(self.threshold(lower)) for lower, _ in self._replicates()]
        finite = [r for r in replicates if math.isfinite(r)]
        if math.isfinite(value) and len(finite) >= 2:
            spread = 1.96 * float(np.std(finite, ddof=1))
            low = value - math.hypot(value - low, spread)
            high = value + math.hypot(high - value, spread) if math.isfinite(high) else high

        def finite_or_none(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return finite_or_none(value), (finite_or_none(low), finite_or_none(high))

    def curve(self, differences: np.ndarray) -> pd.DataFrame:
        rows = []
        for difference in differences:
            power, (low, high) = self.power(float(difference))
            rows.append({"difference": float(difference), "power": power, "ci_low": low,
                         "ci_high": high})
        return pd.DataFrame(rows)


#: Calibration defaults: simulated grids analysed by analyze itself, and its resamples on them.
CALIBRATION_GRIDS = 20
CALIBRATION_RESAMPLES = 200
#: Resampled calibration sets for the calibration's share of the Monte Carlo error.
CALIBRATION_REPLICATES = 200


def simulate_analyses(design: GridDesign, components: Components, *, simulations: int = 1000,
                      seed: int = 0, n_jobs: int | None = None, progress: bool = False,
                      model: AnalysisModel | None = None, resamples: int = RESAMPLES,
                      level: float = LEVEL, calibration_grids: int = CALIBRATION_GRIDS,
                      calibration_resamples: int = CALIBRATION_RESAMPLES,
                      label: str = "power simulations", scheduler: str | None = None
                      ) -> Simulations:
    """Simulate ``simulations`` grids of this design and analyse each with the stand-in,
    calibrated on ``calibration_grids`` further simulated grids analysed by ``analyze`` itself
    (0: no calibration, plain Wald z intervals). Where analyze's model has target-specific
    slopes each grid is analysed by analyze's own verdict method (the slopes model's Wald t
    interval on Satterthwaite df) and nothing is calibrated.

    Simulation ``i`` uses ``default_rng(SeedSequence(seed).spawn(simulations)[i])``, calibration
    grid ``k`` ``SeedSequence([seed, 1]).spawn(...)[k]``: the result depends on ``seed`` only,
    never on ``n_jobs`` (default: every core available) nor on ``scheduler`` (a Dask
    scheduler's address: :func:`transferstats.parallel.parallel_map`).
    """
    if simulations < 10:
        raise PowerError(f"simulations must be at least 10, got {simulations}")
    model = model or analysis_model(design, seed=seed)
    z = float(stats.norm.ppf((1 + level) / 2))
    if model.blocked:
        nan = np.full(simulations, np.nan)
        return Simulations(nan, nan, np.zeros(simulations), np.full(simulations, z),
                           np.full(simulations, z), resamples, level, model.blocked)
    sim = _simulator(design, components, model, resamples, level)
    if model.slopes:
        calibration_grids = 0
    calibration_seeds = np.random.SeedSequence([seed, 1]).spawn(calibration_grids)
    jobs: list[tuple] = [("calibrate", s, k, calibration_resamples)
                         for k, s in enumerate(calibration_seeds)]
    jobs += [("simulate", s) for s in np.random.SeedSequence(seed).spawn(simulations)]
    # A calibration job is a whole bootstrap: one per chunk, first.
    out = np.array(parallel_map(_do, jobs, sim, jobs=n_jobs, scheduler=scheduler,
                                largest_chunk=25, alone=calibration_grids, progress=progress,
                                label=label), dtype=object)
    main = np.array([list(r) for r in out[calibration_grids:]], dtype=float)
    result = Simulations(main[:, 0], main[:, 1], main[:, 2], np.full(simulations, z),
                         np.full(simulations, z), resamples, level)
    if model.slopes:
        result.df = main[:, 3]
        with np.errstate(invalid="ignore"):
            quantile = stats.t.ppf((1 + level) / 2, np.where(main[:, 3] > 0, main[:, 3], np.nan))
        result.lower, result.upper = quantile, quantile.copy()
    if calibration_grids:
        values = np.array([list(r) for r in out[:calibration_grids]], dtype=float)
        calibration = Calibration(estimate=values[:, 0], wald_se=values[:, 1],
                                  boot_se=values[:, 2], low=values[:, 3], high=values[:, 4],
                                  failed=values[:, 5], resamples=calibration_resamples)
        lower, upper = calibration.lower, calibration.upper
        if len(lower):
            rng = np.random.default_rng([seed, 2])
            assignment = rng.integers(len(lower), size=simulations)
            replicate_sets = rng.integers(len(lower), size=(CALIBRATION_REPLICATES, len(lower)))
            result.lower, result.upper = lower[assignment], upper[assignment]
            result.assignment = assignment
            result.replicate_lower = lower[replicate_sets][:, assignment]
            result.replicate_upper = upper[replicate_sets][:, assignment]
        result.calibration = calibration
    return result


def expected_standard_error(design: GridDesign, components: Components,
                            model: AnalysisModel | None = None) -> float:
    """The question's standard error in expectation: the GLS standard error at the true
    components under the generative model (its fixed effects are the analysis model's). Used to
    screen designs before simulating them and as a check on the simulations."""
    model = model or analysis_model(design)
    sim = _simulator(design, components, model)
    if components.has_slopes:
        cov = _covariance_with_slopes(sim, components)
        return float(math.sqrt(model.weights @ cov @ model.weights))
    sigma2 = components.sd["seed"] ** 2
    psi = np.array([components.sd[c] ** 2 / sigma2 for c in COMPONENTS[:4]])
    keep = [i for i, level in enumerate(sim.generative_levels) if level >= 2]
    cp = cross_products(sim.X, np.zeros(len(sim.X)), [sim.generative_codes[i] for i in keep],
                        [sim.generative_levels[i] for i in keep])
    with threadpool_limits(1):
        fact = factorise(psi[keep], cp)
        p = cp.p
        cov = sigma2 * np.linalg.inv(fact.A_xy[:p, :p])
    return float(math.sqrt(model.weights @ cov @ model.weights))


def _covariance_with_slopes(sim: _Simulator, components: Components) -> np.ndarray:
    """sigma^2 (X'V^-1X)^-1 under the generative model with target-specific slopes: lme4's
    model with the target term ``(1 + diversity + volume | target)`` at the true relative
    covariance factors (the slopes independent of the target intercept, as drawn)."""
    sigma = float(components.sd["seed"])
    names = [f"x{k}" for k in range(1, sim.X.shape[1])]
    frame = pd.DataFrame(sim.X[:, 1:], columns=names)
    frame = frame.assign(y=0.0, diversity=sim.slope_columns[:, 0],
                         volume=sim.slope_columns[:, 1],
                         **dict(zip(COMPONENTS[:4], sim.generative_codes, strict=True)))
    factor = np.zeros((3, 3))
    factor[0, 0] = components.sd["target"]
    factor[1:, 1:] = components.slope_factor()
    factors = {"target": factor / sigma}
    factors |= {c: np.array([[components.sd[c] / sigma]]) for c in COMPONENTS[1:4]
                if components.sd[c] > 0}
    terms = random_terms(list(factors), {"target": list(SLOPES)})
    theta = np.array([factors[terms[t].factor][i, j] for t, i, j in theta_layout(terms)])
    with threadpool_limits(1):
        cp = products(lmm_design(frame, "y", names, terms))
        return sigma ** 2 * np.linalg.inv(evaluate(theta, cp).XVX)


def approximate_power(difference: float, standard_error: float, model: AnalysisModel,
                      level: float = LEVEL, resamples: int = RESAMPLES,
                      inflation: float = 1.0) -> float:
    """Normal-approximation power from an expected standard error (times ``inflation``, the
    bootstrap's width relative to it where known), times the chance that the bootstrap does not
    withhold the verdict; for a model with target-specific slopes, a t approximation on
    targets - 1 degrees of freedom. A screen, not a result."""
    if model.blocked:
        return 0.0
    if model.slopes:
        # The Satterthwaite df of an average slope over k targets is at most about k - 1.
        df = max(model.n_targets - 1, 1)
        quantile = stats.t.ppf((1 + level) / 2, df)
        return float(stats.t.cdf(difference / standard_error - quantile * inflation, df))
    z = stats.norm.ppf((1 + level) / 2)
    allowed = stats.binom.cdf(math.floor(MAX_FAILED_SHARE * resamples), resamples,
                              model.resample_failure)
    return float(stats.norm.cdf(difference / standard_error - z * inflation) * allowed)


@dataclass
class PowerResult:
    """The power of one design at one true difference, and everything behind it."""

    design: GridDesign
    model: AnalysisModel
    components: Components
    difference: float
    target_power: float
    simulations: Simulations
    seed: int
    expected_se: float
    curve: pd.DataFrame
    designs: list[dict] = field(default_factory=list)

    @property
    def power(self) -> float:
        return self.simulations.power(self.difference)[0]

    @property
    def power_ci(self) -> tuple[float, float]:
        return self.simulations.power(self.difference)[1]

    @property
    def false_positive_rate(self) -> float:
        return self.simulations.false_positive_rate()[0]

    @property
    def false_positive_ci(self) -> tuple[float, float]:
        return self.simulations.false_positive_rate()[1]

    @property
    def minimum_detectable_difference(self) -> float | None:
        return self.simulations.minimum_detectable(self.target_power)[0]

    @property
    def minimum_detectable_ci(self) -> tuple[float | None, float | None]:
        return self.simulations.minimum_detectable(self.target_power)[1]

    def to_dict(self) -> dict:
        """Everything, JSON-ready."""
        sims = self.simulations
        calibration = sims.calibration.summary(sims.level) if sims.calibration is not None else None
        return {
            "power": self.power,
            "power_ci": list(self.power_ci),
            "false_positive_rate": self.false_positive_rate,
            "false_positive_rate_ci": list(self.false_positive_ci),
            "supported_at_zero": float(sims.supported(0.0).mean()),
            "minimum_detectable_difference": self.minimum_detectable_difference,
            "minimum_detectable_difference_ci": list(self.minimum_detectable_ci),
            "components": self.components.to_dict(),
            "designs": self.designs,
            "difference": self.difference,
            "target_power": self.target_power,
            "question": self.model.question,
            "blocked": self.model.blocked or None,
            "simulations": sims.n,
            "seed": self.seed,
            "failed_fits": int(sims.fit_failed.sum()) if not self.model.blocked else 0,
            "withheld_by_bootstrap_failures": int((sims.failed_resamples / sims.resamples
                                                   > MAX_FAILED_SHARE).sum()),
            "resample_failure_rate": self.model.resample_failure,
            "expected_se": self.expected_se,
            "mean_wald_se": _finite_mean(sims.se),
            "sd_of_estimates": _finite_sd(sims.estimate),
            "mean_satterthwaite_df": None if sims.df is None else _finite_mean(sims.df),
            "every_slope_dropped": None if sims.df is None else int(np.isinf(sims.df).sum()),
            "analysis": {"formula": self.model.formula, "stand_in": self.model.stand_in,
                         "slopes": list(self.model.slopes),
                         "slopes_reason": self.model.slopes_reason,
                         "level": sims.level, "resamples": sims.resamples,
                         "identity": dict(self.model.identity),
                         "calibration": calibration, "notes": list(self.model.notes)},
            "generative_model": GENERATIVE_MODEL,
            "design": design_summary(self.design, self.model),
            "curve": self.curve.to_dict("records"),
        }


GENERATIVE_MODEL = ("improvement ~ b_d diversity + b_v volume + (1 | target_task) + "
                    "(0 + diversity + volume | target_task) + (1 | target_task:language) + "
                    "(1 | mix) + (1 | target_task:mix), b_d - b_v = difference; the slopes by "
                    "target have SDs slope_sd and correlation slope_correlation")


def _finite_mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _finite_sd(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.std(ddof=1)) if len(values) > 1 else None


def design_summary(design: GridDesign, model: AnalysisModel | None = None) -> dict:
    """A design as a JSON-ready dict."""
    summary = {"name": design.name, "mixes": len(design.mixes),
               "targets": list(design.targets), "target_languages": design.n_target_languages,
               "seeds": design.seeds, "rows": design.n_rows, "gpu_hours": design.gpu_hours,
               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in design.settings.items()}}
    if model is not None:
        summary["correlation"] = model.correlation
        summary["identity_model"] = bool(model.identity.get("used"))
    return summary


def curve_differences(difference: float, simulations: Simulations, power: float,
                      points: int = 61) -> np.ndarray:
    """Differences for the power curve: from 0 past the larger of the asked difference and the
    minimum detectable one."""
    mdd = simulations.minimum_detectable(power)[0]
    top = max(abs(difference) * 1.5, (mdd or 0.0) * 1.3, 1e-3)
    if mdd is None:
        thresholds = simulations.threshold()
        finite = thresholds[np.isfinite(thresholds)]
        if len(finite):
            top = max(top, float(np.quantile(finite, 0.99)) * 1.2)
    grid = np.linspace(0.0, top, points)
    return np.unique(np.concatenate([grid, [abs(difference)]]))


def power_analysis(design: GridDesign, difference: float, *, components: Components | None = None,
                   power: float = 0.8, simulations: int = 1000, seed: int = 0,
                   n_jobs: int | None = None, progress: bool = False,
                   calibration_grids: int = CALIBRATION_GRIDS,
                   calibration_resamples: int = CALIBRATION_RESAMPLES,
                   identity: str = "auto",
                   analysis_target_mix: bool = ANALYSIS_TARGET_MIX,
                   scheduler: str | None = None, random_slopes: str = "auto") -> PowerResult:
    """Power of the design to give the verdict ``supported`` at a true ``difference``.

    Parameters
    ----------
    design : GridDesign
        The grid's rows (``transferstats power`` builds it from a grid specification).
    difference : float
        True diversity effect minus volume effect, points per doubling (for a grid where one of
        them is fixed: the varied factor's effect).
    components : Components, optional
        Variance components; default :func:`default_components` (guesses).
    power : float, default 0.8
        The power the minimum detectable difference is computed for.
    simulations : int, default 1000
        Simulated grids, each analysed once by the stand-in.
    seed : int, default 0
        Everything is deterministic given it.
    n_jobs : int, optional
        Worker processes (default: every core).
    progress : bool, default False
        Show a progress bar.
    calibration_grids, calibration_resamples : int
        Simulated grids analysed by ``analyze`` itself to calibrate the stand-in's
        interval (0: plain Wald z intervals), and resamples per bootstrap.
    identity : {"auto", "on", "off"}
        As analyze's setting: whether the analysed model has task identity effects.
    analysis_target_mix : bool
        Whether the analysed model has ``(1 | target_task:mix)`` (default: as ``analyze``).
    scheduler : str, optional
        A Dask scheduler's address to run the simulations on (``"local"``: local processes;
        default: dask's ``scheduler-address`` if set, else local processes). The result is the
        same wherever they run.
    random_slopes : {"auto", "on", "off"}
        As analyze's setting: whether the analysed model has target-specific slopes (``auto``:
        where the design allows them); with them every simulated grid is analysed by analyze's
        own Wald t interval on Satterthwaite df, and nothing is calibrated.

    Returns
    -------
    PowerResult
        ``power``, ``power_ci``, ``false_positive_rate``, ``minimum_detectable_difference``,
        ``curve`` and ``to_dict()``.
    """
    if not (isinstance(difference, int | float) and math.isfinite(difference)):
        raise PowerError(f"the difference must be a number, got {difference!r}")
    if not 0 < power < 1:
        raise PowerError(f"power must be between 0 and 1, got {power!r}")
    components = components or default_components()
    model = _with_slope_warning(analysis_model(
        design, identity=identity, analysis_target_mix=analysis_target_mix, seed=seed,
        random_slopes=random_slopes), components)
    sims = simulate_analyses(design, components, simulations=simulations, seed=seed,
                             n_jobs=n_jobs, progress=progress, model=model,
                             calibration_grids=calibration_grids,
                             calibration_resamples=calibration_resamples, scheduler=scheduler)
    expected = expected_standard_error(design, components, model)
    curve = sims.curve(curve_differences(difference, sims, power))
    result = PowerResult(design=design, model=model, components=components,
                         difference=float(difference), target_power=power, simulations=sims,
                         seed=seed, expected_se=expected, curve=curve)
    result.designs = [design_row(design, sims, difference, power, role="grid", model=model)]
    return result


def _with_slope_warning(model: AnalysisModel, components: Components) -> AnalysisModel:
    """The model, with a note where the simulated targets' slopes differ and the analysis
    model has no slopes to carry that variation."""
    if not components.has_slopes or model.slopes or model.blocked:
        return model
    from dataclasses import replace

    return replace(model, notes=(*model.notes, (
        "the simulated targets' slopes differ (slope SDs "
        + ", ".join(f"{s} {components.slope_sd[s]:g}" for s in SLOPES)
        + "), and analyze's model on this design has no target-specific slopes to carry that "
          "variation: its intervals are too narrow for the average over targets like these, and "
          "the false-positive rate shows by how much")))


def design_row(design: GridDesign, sims: Simulations, difference: float, power: float,
               role: str, screen: float | None = None, model: AnalysisModel | None = None) -> dict:
    """One design's line of a search table (JSON-ready)."""
    value, (low, high) = sims.power(difference)
    mdd = sims.minimum_detectable(power)[0]
    return {**design_summary(design, model), "role": role, "power": value,
            "power_ci": [low, high], "minimum_detectable_difference": mdd,
            "screen_power": screen, "reaches_power": bool(value >= power)}


# --------------------------------------------------------------------------------------------
# Design search


@dataclass
class SearchResult:
    """Designs of a search: every candidate screened, the promising ones simulated."""

    rows: list[dict]               # every candidate, cheapest first
    chosen: list[dict]             # simulated designs reaching the power, cheapest first
    simulated: int
    inflation: float


def search_designs(candidates: Sequence[GridDesign], difference: float, components: Components,
                   *, power: float = 0.8, simulations: int = 1000, seed: int = 0,
                   n_jobs: int | None = None, progress: bool = False, top: int = 3,
                   max_simulated: int = 6, margin: float = 0.15, inflation: float = 1.0,
                   inflation_identity: bool | None = None,
                   calibration_grids: int = 8,
                   calibration_resamples: int = CALIBRATION_RESAMPLES, identity: str = "auto",
                   analysis_target_mix: bool = ANALYSIS_TARGET_MIX,
                   scheduler: str | None = None, random_slopes: str = "auto") -> SearchResult:
    """The cheapest designs that reach ``power``.

    Every candidate (each with ``gpu_hours``) is screened by :func:`approximate_power` from its
    expected standard error, scaled by ``inflation`` (the bootstrap's width relative to it,
    measured on the grid itself) where the candidate's model has task identity effects as the
    grid's has (``inflation_identity``; other candidates are screened unscaled, optimistically);
    candidates whose screen is within ``margin`` of ``power`` are then simulated and calibrated
    like the grid, cheapest first, until ``top`` of them reach ``power`` in simulation or
    ``max_simulated`` have been simulated. Every simulation uses the same ``seed`` (common random
    numbers across designs). ``n_jobs``, ``scheduler`` and ``random_slopes``: as in
    :func:`power_analysis`.
    """
    rows: list[dict[str, Any]] = []
    for design in candidates:
        model = analysis_model(design, identity=identity, analysis_target_mix=analysis_target_mix,
                               seed=seed, draws=500, random_slopes=random_slopes)
        scale = inflation if (inflation_identity is None
                              or bool(model.identity.get("used")) == inflation_identity) else 1.0
        screen = 0.0 if model.blocked else approximate_power(
            difference, expected_standard_error(design, components, model), model,
            inflation=scale)
        rows.append({"design": design, "model": model, "screen": screen})
    rows.sort(key=lambda r: (r["design"].gpu_hours or 0.0, -r["screen"]))
    chosen: list[dict] = []
    simulated = 0
    for row in (r for r in rows if r["screen"] >= power - margin):
        if len(chosen) >= top or simulated >= max_simulated:
            break
        simulated += 1
        model = analysis_model(row["design"], identity=identity,
                               analysis_target_mix=analysis_target_mix, seed=seed,
                               random_slopes=random_slopes)
        sims = simulate_analyses(row["design"], components, simulations=simulations, seed=seed,
                                 n_jobs=n_jobs, progress=progress, model=model,
                                 calibration_grids=calibration_grids,
                                 calibration_resamples=calibration_resamples,
                                 label=f"design {simulated}", scheduler=scheduler)
        row["result"] = design_row(row["design"], sims, difference, power, "candidate",
                                   row["screen"], model)
        if row["result"]["reaches_power"]:
            chosen.append(row["result"])
    out = [row.get("result") or {**design_summary(row["design"], row["model"]),
                                 "role": "screened", "power": None, "power_ci": None,
                                 "minimum_detectable_difference": None,
                                 "screen_power": row["screen"], "reaches_power": None}
           for row in rows]
    return SearchResult(rows=out, chosen=chosen, simulated=simulated, inflation=inflation)


# --------------------------------------------------------------------------------------------
# Figures


def power_curve_figure(result: PowerResult):
    """Power to get ``supported`` against the true difference, with its Monte Carlo band, the
    requested power and the minimum detectable difference."""
    import matplotlib as mpl

    from transferstats.report.figures import OKABE_ITO, PAPER_STYLE, SINGLE_COLUMN

    blue, orange, _, vermillion = OKABE_ITO[:4]
    with mpl.rc_context(PAPER_STYLE):
        figure, axes = _figure(SINGLE_COLUMN, 2.6)
        curve = result.curve
        axes.fill_between(curve["difference"], curve["ci_low"], curve["ci_high"], color=blue,
                          alpha=0.25, linewidth=0, label="95% Monte Carlo interval")
        axes.plot(curve["difference"], curve["power"], color=blue, label="power")
        axes.axhline(result.target_power, color="#777777", linestyle="--", linewidth=0.8)
        mdd = result.minimum_detectable_difference
        if mdd is not None:
            axes.axvline(mdd, color=vermillion, linestyle=":", linewidth=1.0,
                         label=f"MDD {mdd:.2f}")
        axes.plot([result.difference], [result.power], "o", color=orange,
                  label=f"power at {result.difference:g}: {result.power:.2f}")
        question = result.model.question
        axes.set_xlabel(f"true {question} (points per doubling)".replace(" - ", " − "))
        axes.set_ylabel("P(verdict supported)" if question == CONTRAST
                        else f"P({question} effect detected)")
        axes.set_ylim(0, 1.02)
        axes.set_xlim(left=0)
        axes.legend(loc="upper left")
    return figure


def cost_power_figure(rows: Sequence[dict], power: float, grid_row: dict | None = None):
    """GPU hours against power for the designs of a search."""
    import matplotlib as mpl

    from transferstats.report.figures import DOUBLE_COLUMN, OKABE_ITO, PAPER_STYLE

    blue, orange, _, vermillion = OKABE_ITO[:4]
    with mpl.rc_context(PAPER_STYLE):
        figure, axes = _figure(DOUBLE_COLUMN * 0.6, 2.8)
        screened = [r for r in rows if r.get("power") is None and r.get("gpu_hours")]
        axes.scatter([r["gpu_hours"] for r in screened], [r["screen_power"] for r in screened],
                     s=6, color="#BBBBBB", label="screened (normal approximation)", zorder=1)
        simulated = [r for r in rows if r.get("power") is not None and r.get("gpu_hours")]
        for group, colour, label in ((False, blue, "simulated"), (True, orange, "reaches power")):
            chosen = [r for r in simulated if bool(r["reaches_power"]) == group]
            if not chosen:
                continue
            x = np.array([r["gpu_hours"] for r in chosen])
            y = np.array([r["power"] for r in chosen])
            err = np.array([[r["power"] - r["power_ci"][0], r["power_ci"][1] - r["power"]]
                            for r in chosen]).T
            axes.errorbar(x, y, yerr=err, fmt="o", color=colour, markersize=4, capsize=2,
                          label=label, zorder=3)
        if grid_row is not None and grid_row.get("gpu_hours"):
            axes.plot([grid_row["gpu_hours"]], [grid_row["power"]], "D", color=vermillion,
                      markersize=6, label="the grid as specified", zorder=4)
        axes.axhline(power, color="#777777", linestyle="--", linewidth=0.8)
        axes.set_xscale("log")
        axes.set_xlabel("estimated GPU hours")
        axes.set_ylabel("power")
        axes.set_ylim(0, 1.02)
        axes.legend(loc="lower right")
    return figure


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def save_figures(figure, folder: str | Path, name: str) -> dict[str, Path]:
    """PNG (300 dpi) and PDF, as the report writes its figures."""
    from transferstats.report.figures import save_figure

    return save_figure(figure, Path(folder), name)


__all__ = [
    "COMPONENTS", "DEFAULT_SD", "Components", "GridDesign", "PowerError", "PowerResult",
    "Simulations", "analysis_model", "default_components", "expected_standard_error",
    "pilot_components", "power_analysis", "search_designs", "simulate_analyses",
]
