"""Parametric bootstrap of the crossed mixed model, for models with task identity effects.

Why not the crossed cluster bootstrap there. Resampling mixes with replacement keeps about 63% of
them distinct (1 - 1/e). With a few mix-level coefficients (the plain model's diversity, volume
and interaction) that costs little, but a model with task identity effects has one coefficient
per task: 13 mix-level coefficients on the 36 mixes of the default grid. The resampled designs
then carry much less information than the real one, and the bootstrap variance overshoots the
estimator's: this is the pairs bootstrap's known failure when the number of coefficients is a
sizeable fraction of the resampled units (El Karoui & Purdom 2018, "Can we trust the bootstrap in
high dimensions? The case of linear models", JMLR 19(5):1-66). Measured on composition-confounded
grids of 36 mixes, the crossed cluster intervals of diversity - volume were 2.2 times wider than
the spread of the estimate over repeated grids (coverage 30 of 30), whereas the model's
own standard error matched that spread (0.132 against 0.130 over 100 grids).

The parametric bootstrap keeps the design -- every mix, task share, language and seed -- fixed
and redraws the random parts from the fitted model (Davison & Hinkley 1997, "Bootstrap Methods
and their Application", section 2.2; lme4's ``bootMer``, Bates et al. 2015)::

    y* = X beta_hat + sum_k Z_k u_k* + e*,   u_k* ~ N(0, sigma_k_hat^2 I),   e* ~ N(0, sigma_hat^2 I)

and refits each draw by REML with the fast solver (:func:`~transferstats.analysis.mixed.fit_theta`,
warm-started at the fitted variance ratios, each scaled by how far the draw's moment estimate
lies from the data's).

Draws come in antithetic pairs (Hall 1989, "Antithetic resampling for the bootstrap",
Biometrika 76(4):713-724): each refit of y* = X beta_hat + delta also gives the draw of its mirror
image X beta_hat - delta, exactly and without a second refit. The REML criterion depends on the
response only through its residuals from the fixed-effect fit, and is even in them, so the mirror
image has the same variance estimates; beta is then the GLS estimate at those variances, linear
in y, so the mirror's beta is 2 beta_hat - beta* (Kackar & Harville 1981, "Unbiasedness of
two-stage estimation and prediction procedures for mixed linear models", Commun. Stat. Theory
Methods 10(13):1249-1261: estimators built from even, translation-invariant variance estimates
are symmetric about the true beta). ``n_resamples`` draws thus cost ``n_resamples / 2`` refits,
and the draws are symmetric about the estimate by construction. For the tail quantiles an
interval needs, n draws in n / 2 mirrored pairs are as precise as n independent draws: the
2.5% and 97.5% quantiles of a symmetric law are minus and plus the 95% quantile of
|beta* - beta_hat|, whose n / 2 independent values estimate it with variance
0.95 x 0.05 / ((n / 2) (2 f)^2) = 0.0238 / (n f^2), against 0.975 x 0.025 / (n f^2) =
0.0244 / (n f^2) for either quantile from n independent draws (f the density there). Pair ``j``
uses ``default_rng(SeedSequence(seed).spawn(m)[j])`` (m pairs), so the draws depend on the seed
only.

Intervals (:meth:`ParametricBootstrap.interval`): percentile intervals, widened by
t_{(1+level)/2, df} / z_{(1+level)/2} about the estimate. BCa's two corrections are both zero
here: the bias correction because the draws are symmetric about the estimate, the acceleration
because in a Gaussian linear mixed model a fixed effect's standard error does not change with its
value (Efron 1987), so ``kind="bca"`` gives the percentile interval. The draws reproduce the
sampling spread at the estimated variances, so their quantiles give a normal-theory interval; the
widening turns it into the t interval with ``df`` = mixes minus the rank of the per-mix design,
the degrees of freedom left for the mix variance that scales every mix-level effect (the
"containment" degrees of freedom of mixed-model software; Pinheiro & Bates 2000, "Mixed-Effects
Models in S and S-PLUS", section 2.4.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import ndtri
from threadpoolctl import threadpool_limits

from transferstats.analysis.bootstrap import output_matrix
from transferstats.analysis.mixed import (
    REFIT_TOLERANCE,
    START_FLOOR,
    CrossedFit,
    CrossProducts,
    cross_products,
    fit_crossed,
    fit_theta,
    model_arrays,
    moment_start,
    with_response,
)
from transferstats.parallel import parallel_map

#: What ``estimates["bootstrap"]`` and the report call this resampling.
RESAMPLING = "parametric"


@dataclass
class ParametricBootstrap:
    """Draws of every fixed term (the intercept left out) and every contrast.

    ``draws`` has one row per resample, in antithetic pairs (rows 2j and 2j + 1 lie either side
    of the estimate; both NaN where the pair's refit failed, counted in ``n_failed``);
    ``df`` is the degrees of freedom of the t widening of the intervals.
    """

    estimate: pd.Series
    draws: pd.DataFrame
    n_resamples: int
    seed: int
    n_failed: int
    df: float
    resampling: str = RESAMPLING

    def interval(self, term: str, level: float = 0.95, kind: str = "bca") -> tuple[float, float]:
        """The ``level`` interval of one term or contrast: percentile, t-widened (``"bca"`` is
        the same interval, its corrections being zero here; see the module docstring)."""
        if kind not in ("bca", "percentile"):
            raise ValueError(f"kind must be 'bca' or 'percentile', not {kind!r}")
        draws = self.draws[term].to_numpy(dtype=float)
        low, high = np.percentile(draws[np.isfinite(draws)], [50 * (1 - level), 50 * (1 + level)])
        return t_widened(float(self.estimate[term]), (float(low), float(high)), level, self.df)


def t_widened(estimate: float, interval: tuple[float, float], level: float,
              df: float) -> tuple[float, float]:
    """An interval widened about the estimate by t_{(1+level)/2, df} / z_{(1+level)/2}: a
    normal-theory interval made a t interval on ``df`` degrees of freedom (the "containment"
    degrees of freedom of Pinheiro & Bates 2000, section 2.4.2)."""
    widen = float(stats.t.ppf((1 + level) / 2, df) / ndtri((1 + level) / 2))
    low, high = interval
    return float(estimate - (estimate - low) * widen), float(estimate + (high - estimate) * widen)


@dataclass
class _Simulator:
    """What a worker needs to draw and refit: compact arrays only."""

    X: np.ndarray
    beta: np.ndarray              # the fitted fixed effects; mean = X beta
    mean: np.ndarray
    codes: list[np.ndarray]
    n_levels: list[int]
    sds: np.ndarray
    sigma: float
    outputs: np.ndarray
    theta: np.ndarray             # the fitted relative standard deviations
    moments: np.ndarray           # moment_start of the data: theta's moment estimate
    #: Per component: whether the start follows the draw's moment estimate (set from pilot
    #: draws by :func:`moment_followers`).
    follows_moments: np.ndarray | None = None

    @cached_property
    def design(self) -> CrossProducts:
        """The cross-products of the design (at y = X beta_hat). The design is the same in every
        draw: they are computed once, and each draw only puts its own response in
        (:func:`~transferstats.analysis.mixed.with_response`)."""
        return cross_products(self.X, self.mean, self.codes, self.n_levels)

    def response(self, seed: np.random.SeedSequence) -> np.ndarray:
        """One draw of y from the fitted model, minus its mean X beta_hat (the draw of a pair)."""
        rng = np.random.default_rng(seed)
        deviation = self.sigma * rng.standard_normal(len(self.mean))
        for code, n_levels, sd in zip(self.codes, self.n_levels, self.sds, strict=True):
            deviation = deviation + sd * rng.standard_normal(n_levels)[code]
        return deviation

    def draws(self, seeds: Sequence[np.random.SeedSequence]) -> np.ndarray:
        """Two rows per seed: the outputs refitted on X beta_hat + delta and those of its mirror
        image X beta_hat - delta, which are the estimate minus the first's deviation from it."""
        out = np.full((2 * len(seeds), len(self.outputs)), np.nan)
        estimate = self.outputs @ self.beta
        for i, seed in enumerate(seeds):
            try:
                cp = with_response(self.design, self.X, self.mean + self.response(seed),
                                   self.codes)
                state = fit_theta(cp, reml=True, start=self.start(cp),
                                  tolerance=REFIT_TOLERANCE, average=True)
            except (np.linalg.LinAlgError, ValueError):
                continue
            if state.converged:
                deviation = self.outputs @ state.beta - estimate
                out[2 * i], out[2 * i + 1] = estimate + deviation, estimate - deviation
        return out

    def start(self, cp: CrossProducts) -> np.ndarray:
        """Where to start a draw's fit: the fitted theta, the components that follow their
        moment estimate (``follows_moments``) each scaled by how far the draw's moment
        estimate (:func:`~transferstats.analysis.mixed.moment_start`) lies from the data's. A
        factor of few levels (five targets) varies widely from draw to draw, and its REML
        estimate follows its moment estimate closely, so the fit starts near its optimum (6
        draws of a 1,100-mix grid's identity model: 4.2 evaluations of the derivatives per draw
        instead of 6.3). Where either moment estimate is at its floor the ratio says nothing:
        1 there."""
        moments = moment_start(cp)
        informative = (moments > START_FLOOR) & (self.moments > START_FLOOR)
        if self.follows_moments is not None:
            informative &= self.follows_moments
        ratio = np.where(informative, moments / np.where(informative, self.moments, 1.0), 1.0)
        return self.theta * ratio


def moment_followers(simulator: _Simulator, seeds: Sequence[np.random.SeedSequence]
                     ) -> np.ndarray:
    """Which components' REML optima follow their moment estimates from draw to draw.

    On the draws from ``seeds`` (pilots, refitted from the fitted theta), a component follows
    where scaling its start by the moment ratio lands closer to the optimum, in log scale
    (root mean square), than not scaling it. Where a factor's moment estimate cannot tell it
    from another (the mixes of a 1,100-mix grid, whose mix-by-target cells are nested in them
    1.6 to a mix), the ratio is mostly noise: there it scattered 0.16 in log scale where the
    optima moved 0.02, while the targets' and languages' ratios predicted their optima to
    0.009 and 0.002 (40 draws). Starting only those from their ratios took 1.82 evaluations of
    the derivatives per draw instead of 2.30.
    """
    predicted, fitted = [], []
    for seed in seeds:
        cp = with_response(simulator.design, simulator.X, simulator.mean + simulator.response(seed),
                           simulator.codes)
        try:
            state = fit_theta(cp, reml=True, start=simulator.theta, tolerance=REFIT_TOLERANCE,
                              average=True)
        except (np.linalg.LinAlgError, ValueError):
            continue
        if state.converged:
            predicted.append(moment_start(cp))
            fitted.append(state.theta)
    if not fitted:
        return np.ones(len(simulator.theta), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):   # components at zero: NaN, not used
        log_predicted = np.log(np.array(predicted) / simulator.moments)
        log_fitted = np.log(np.array(fitted) / simulator.theta)
        scaled_error = np.sqrt(np.mean((log_predicted - log_fitted) ** 2, axis=0))
        unscaled_error = np.sqrt(np.mean(log_fitted ** 2, axis=0))
    return scaled_error < unscaled_error


#: Pilot draws from which :func:`moment_followers` decides which starts follow the moments.
PILOTS = 5


def _draw_pair(simulator: _Simulator, seed: np.random.SeedSequence) -> np.ndarray:
    return simulator.draws([seed])


def fitted_simulator(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                     random: Sequence[str], contrasts: Mapping[str, Mapping[str, float]] | None,
                     fit: CrossedFit | None = None) -> tuple[list[str], _Simulator]:
    """The REML fit of the model (``fit`` if it is that) as a simulator of draws, and the
    names of its outputs."""
    fixed, random = list(fixed), list(random)
    arrays = model_arrays(data, outcome, fixed, random)
    if fit is None or not fit.reml or not fit.fits(fixed, random, len(arrays.y)):
        fit = fit_crossed(data, outcome, fixed, random, reml=True)
    names, outputs = output_matrix(fit.terms, dict(contrasts or {}))
    beta = fit.params.to_numpy()
    sigma = float(np.sqrt(fit.residual_variance))
    sds = np.sqrt(np.array([fit.variance_components[f] for f in random]))
    n_levels = [len(levels) for levels in arrays.levels]
    moments = moment_start(cross_products(arrays.X, arrays.y, arrays.codes, n_levels))
    return names, _Simulator(arrays.X, beta, arrays.X @ beta, arrays.codes, n_levels, sds, sigma,
                             outputs, sds / sigma if sigma > 0 else np.ones(len(random)), moments)


def parametric_bootstrap(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                         random: Sequence[str], *, df: float,
                         contrasts: Mapping[str, Mapping[str, float]] | None = None,
                         n_resamples: int = 1000, seed: int = 0,
                         n_jobs: int | None = None, progress: bool = False,
                         scheduler: str | None = None,
                         fit: CrossedFit | None = None) -> ParametricBootstrap:
    """Parametric bootstrap of the fixed terms and ``contrasts`` of the crossed mixed model.

    ``df`` sets the t widening of the intervals (mixes minus the rank of the per-mix design).
    The ``n_resamples`` draws come from ``n_resamples / 2`` refits, in antithetic pairs (see the
    module docstring). They depend on ``seed`` only, not on ``n_jobs`` (default: the cores
    available) nor on ``scheduler`` (a Dask scheduler's address:
    :func:`transferstats.parallel.parallel_map`). ``fit``: the REML fit of this model to these
    data, if the caller has it.
    """
    n_pairs = (n_resamples + 1) // 2
    seeds = np.random.SeedSequence(seed).spawn(n_pairs)
    with threadpool_limits(1):   # as in the workers: small matrices
        names, simulator = fitted_simulator(data, outcome, fixed, random, contrasts, fit)
        # Decided before the draws are shared out, so that they do not depend on n_jobs.
        simulator.follows_moments = moment_followers(simulator, seeds[:PILOTS])
    beta, outputs = simulator.beta, simulator.outputs
    pairs = parallel_map(_draw_pair, seeds, simulator, jobs=n_jobs, scheduler=scheduler,
                         largest_chunk=10, progress=progress, label="parametric bootstrap")
    # An odd number of resamples leaves the last pair's mirror image out.
    draws = np.vstack(pairs)[:n_resamples] if pairs else np.zeros((0, len(names)))
    return ParametricBootstrap(
        estimate=pd.Series(outputs @ beta, index=names, name="estimate"),
        draws=pd.DataFrame(draws, columns=names), n_resamples=n_resamples, seed=seed,
        n_failed=int(np.isnan(draws).any(axis=1).sum()), df=float(df))
