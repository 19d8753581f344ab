"""Confidence intervals for mixed-model effects from a bootstrap that resamples the crossed units.

Rows of a results grid are not independent: every row of a language shares that language's
random effect, every row of a mix shares the mix's. Resampling rows would ignore this and give
intervals far too narrow. :func:`crossed_bootstrap` resamples the crossed units themselves
(languages and mixes), as the pigeonhole bootstrap does for crossed random effects (Owen 2007,
"The pigeonhole bootstrap", Ann. Appl. Stat. 1(2):386-411), and within each resampled cell the
seeds, the level nested in it (Field & Welsh 2007, "Bootstrapping clustered data", JRSS-B
69(3):369-390). Each resample is refitted with the fast path of :mod:`.mixed`, warm-started from
pilot resamples' fits (:func:`pilot_start`), in parallel processes that receive only compact
arrays.

Intervals are percentile or BCa (bias-corrected and accelerated; Efron & Tibshirani 1993,
"An Introduction to the Bootstrap", ch. 14; DiCiccio & Efron 1996, "Bootstrap confidence
intervals", Stat. Sci. 11(3):189-228), the acceleration estimated from a grouped (delete-d)
jackknife over each unit's levels: at most ``JACKKNIFE_GROUPS`` refits per unit, however many
mixes or languages the grid has (:func:`acceleration`).

A resample is a set of index arrays into the compact arrays of a :class:`ResamplingDesign`,
which reaches each worker process once; no resample copies the data frame, and building one
costs time and memory in proportion to its rows, not to the product of the unit sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri
from threadpoolctl import threadpool_limits

from transferstats.analysis.mixed import (
    REFIT_TOLERANCE,
    CrossedFit,
    ThetaFit,
    cross_products_of,
    fit_crossed,
    fit_theta,
    model_arrays,
)
from transferstats.parallel import parallel_map

#: What is resampled; the interval (BCa or percentile) is chosen later, in ``intervals``.
RESAMPLING = "crossed cluster"

#: Groups of levels per unit in the grouped jackknife of the BCa acceleration. Left out one
#: group at a time, they cost at most 50 refits per unit, 5% of 1,000 resamples, whatever the
#: number of levels. The grouping adds an error of about sqrt(15) / (6 G) ~ 0.013 to the
#: acceleration (the spread of a sum of G cubed group influences, for near-normal influences:
#: ``acceleration``); a BCa endpoint moves by about (z0 + z)^2 ~ 3.8 times that in normal
#: quantile units, ~0.05 standard errors of the draws, ~1.3% of a 95% interval's width. That is
#: below the Monte Carlo error of a 2.5% quantile of 1,000 draws (~0.085 standard errors), so
#: more groups would buy accuracy the resamples do not have.
JACKKNIFE_GROUPS = 50

# --------------------------------------------------------------------------------------------
# Intervals from draws


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of the bootstrap draws.

    Efron & Tibshirani (1993), section 13.3. Missing draws (failed refits) are ignored.
    """
    draws = _finite(draws)
    alpha = (1 - level) / 2
    low, high = np.percentile(draws, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def bias_correction(estimate: float, draws: np.ndarray) -> float:
    """z0: the normal quantile of the share of draws below the estimate (ties count half).

    Efron & Tibshirani (1993), eq. 14.14; ties are split as in ``scipy.stats.bootstrap``.
    """
    draws = _finite(draws)
    share = (np.count_nonzero(draws < estimate) + np.count_nonzero(draws <= estimate)) \
        / (2 * len(draws))
    return float(ndtri(share))


def acceleration(jackknife_values: np.ndarray, groups: np.ndarray | None = None,
                 sizes: np.ndarray | None = None) -> float:
    """a: the skewness of the jackknife influence values, over 6 (the BCa acceleration).

    The acceleration is the rate at which the standard error of the estimate changes with the
    parameter on the normalised scale; to second order it is one sixth of the skewness of the
    estimate's influence function, a = sum I^3 / (6 (sum I^2)^(3/2)) (Efron 1987, "Better
    bootstrap confidence intervals", JASA 82:171-185, eq. 6.7; Efron & Tibshirani 1993,
    eq. 14.15), the influence values I estimated by a jackknife.

    Parameters
    ----------
    jackknife_values : array of float
        The estimate refitted without one group of levels of one unit, one value per group;
        NaN where that refit failed (left out).
    groups : array, optional
        The unit each value leaves levels out of (e.g. "language" or "mix"); default one unit.
        With several crossed units, each unit's influence values are centred and scaled within
        the unit and the third and second moments are summed over units: the multi-sample form
        of Efron & Tibshirani (1993, ch. 14.3) that ``scipy.stats.bootstrap`` uses, in which
        unit k with n_k levels adds sum I^3 / n_k^3 and sum I^2 / n_k^2.
    sizes : array of int, optional
        How many levels each value leaves out; default 1, the exact leave-one-out jackknife.

    Returns
    -------
    float
        The acceleration a; 0 when no unit has two successful jackknife fits.

    Notes
    -----
    Grouped (delete-d) jackknife. The levels of a unit are split at random into G groups of
    sizes d_g (n = sum d_g), and group g is left out in turn (Efron & Tibshirani 1993, ch. 11.5;
    Shao & Wu 1989, "A general theory for jackknife variance estimation", Ann. Stat.
    17:1176-1197). The influence of group g -- the sum of its levels' influence values -- is
    estimated by its pseudo-value, scaled for unequal sizes as in Busing, Meijer & van der
    Leeden (1999, "Delete-m jackknife for unequal m", Stat. Comput. 9:3-8):

        L_g = (n - d_g) (centre - estimate without group g),

    the centre being the mean of the leave-group-out values weighted by n - d_g. With d_g = 1
    this is the leave-one-out I_i = (n - 1)(mean - estimate without i) of eq. 14.15, and for a
    mean L_g is exactly the sum of the group's I_i. A random group's sum has, over the random
    partition, E[sum_g L_g^2] = sum_i I_i^2 sum_g d_g (n - d_g) / (n (n - 1)) and
    E[sum_g L_g^3] = sum_i I_i^3 sum_g d_g (n - d_g)(n - 2 d_g) / (n (n - 1)(n - 2)) (moments of
    a sample sum drawn without replacement), so the group sums of squares and cubes are divided
    by these factors: each is then unbiased for the leave-one-out sum it replaces, and with
    d_g = 1 they equal it. Two groups carry no third moment (L_1 = -L_2); that unit adds none.
    """
    values = np.asarray(jackknife_values, dtype=float)
    groups = np.zeros(len(values)) if groups is None else np.asarray(groups)
    sizes = np.ones(len(values)) if sizes is None else np.asarray(sizes, dtype=float)
    third, second = 0.0, 0.0
    for group in pd.unique(groups):
        fitted = (groups == group) & np.isfinite(values)
        unit_second, unit_third = influence_moments(values[fitted], sizes[fitted])
        second += unit_second
        third += unit_third
    return float(third / (6 * second ** 1.5)) if second > 0 else 0.0


def influence_moments(jackknife_values: np.ndarray, sizes: np.ndarray) -> tuple[float, float]:
    """One unit's sum I^2 / n^2 and sum I^3 / n^3 of the leave-one-level-out influence values
    I, estimated from leave-group-out values (``sizes``: levels in each group), as
    :func:`acceleration` describes; (0, 0) with fewer than two values."""
    values, d = np.asarray(jackknife_values, dtype=float), np.asarray(sizes, dtype=float)
    if len(values) < 2:  # fewer than two successful jackknife fits carry no skewness
        return 0.0, 0.0
    n = d.sum()
    weight = n - d
    influence = weight * (weight @ values / weight.sum() - values)
    second = n * (n - 1) / np.sum(d * weight) * np.sum(influence ** 2) / n ** 2
    cubes = np.sum(d * weight * (n - 2 * d))
    third = n * (n - 1) * (n - 2) / cubes * np.sum(influence ** 3) / n ** 3 if cubes > 0 else 0.0
    return float(second), float(third)


def bca_interval(estimate: float, draws: np.ndarray, jackknife_values: np.ndarray,
                 level: float = 0.95, groups: np.ndarray | None = None,
                 sizes: np.ndarray | None = None) -> tuple[float, float]:
    """Bias-corrected and accelerated interval (Efron & Tibshirani 1993, eq. 14.10).

    The percentile interval's quantile levels are moved to
    Phi(z0 + (z0 + z) / (1 - a (z0 + z))) for z = Phi^-1((1 -/+ level) / 2), which corrects for
    median bias (z0) and for a standard error that changes with the parameter (a). It is
    second-order accurate where the percentile interval is first-order (DiCiccio & Efron 1996).
    ``groups`` and ``sizes`` describe the jackknife values as in :func:`acceleration`.
    """
    draws = _finite(draws)
    z0 = bias_correction(estimate, draws)
    a = acceleration(jackknife_values, groups, sizes)
    quantiles = []
    for z in (ndtri((1 - level) / 2), ndtri((1 + level) / 2)):
        shifted = z0 + z
        quantiles.append(ndtr(z0 + shifted / (1 - a * shifted)))
    low, high = np.percentile(draws, [100 * quantiles[0], 100 * quantiles[1]])
    return float(low), float(high)


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


# --------------------------------------------------------------------------------------------
# The result


@dataclass
class BootstrapResult:
    """Bootstrap draws of every fixed term (the intercept left out) and every contrast.

    ``draws`` has one row per resample; a resample whose refit failed is a row of NaN, counted
    in ``n_failed`` and left out of the intervals. ``jackknife`` has one row per group of unit
    levels left out (columns ``unit``, ``left_out``: the tuple of levels, then the estimates),
    used for the BCa acceleration (:func:`acceleration`).
    """

    estimate: pd.Series
    draws: pd.DataFrame
    jackknife: pd.DataFrame
    n_resamples: int
    seed: int
    resampling: str
    n_failed: int

    def interval(self, term: str, level: float = 0.95, kind: str = "bca") -> tuple[float, float]:
        """The ``level`` interval of one term or contrast, ``kind`` "bca" or "percentile"."""
        estimate = float(self.estimate[term])
        if kind == "percentile":
            interval = percentile_interval(self.draws[term].to_numpy(), level)
        elif kind == "bca":
            interval = bca_interval(estimate, self.draws[term].to_numpy(),
                                    self.jackknife[term].to_numpy(), level,
                                    groups=self.jackknife["unit"].to_numpy(),
                                    sizes=self.jackknife["left_out"].map(len).to_numpy())
        else:
            raise ValueError(f"kind must be 'bca' or 'percentile', not {kind!r}")
        return interval

    def intervals(self, level: float = 0.95, kind: str = "bca") -> pd.DataFrame:
        """One row per term and contrast: estimate, interval and bootstrap standard error."""
        rows = []
        for term in self.draws.columns:
            low, high = self.interval(term, level, kind)
            rows.append({"term": term, "estimate": float(self.estimate[term]), "ci_low": low,
                         "ci_high": high, "se": float(np.nanstd(self.draws[term], ddof=1))})
        return pd.DataFrame(rows, columns=["term", "estimate", "ci_low", "ci_high", "se"])


# --------------------------------------------------------------------------------------------
# The resampling design: compact arrays shipped once to each worker


@dataclass
class ResamplingDesign:
    """What a worker needs to draw and refit a resample, and nothing else (no DataFrames).

    ``factor_nesting[f]`` lists, for random factor f, each unit u whose levels contain f's
    levels (or equal them) as ``(u, unit level of each level of f)``; ``cell_nesting`` does the
    same for the replicate cells. A copy of a drawn unit level is a new level of exactly these
    factors and cells.
    """

    Xy: np.ndarray                # [X y], row-major: a resample gathers whole rows
    factor_codes: list[np.ndarray]
    unit_codes: list[np.ndarray]
    unit_n_levels: np.ndarray
    factor_nesting: list[list[tuple[int, np.ndarray]]]
    cell: np.ndarray              # replicate cell of each row (original unit levels)
    cell_nesting: list[tuple[int, np.ndarray]]
    replicate_position: np.ndarray  # the row's replicate, numbered within its cell; -1: none
    cell_n_replicates: np.ndarray   # per cell; empty when replicates are not resampled
    outputs: np.ndarray           # (n_outputs, p): each term/contrast as a combination of beta
    start: np.ndarray             # relative standard deviations of the full-data fit
    #: Where resamples' refits start (jackknife refits start at ``start``): see
    #: :func:`pilot_start`. None: at ``start``.
    resample_start: np.ndarray | None = None

    @property
    def X(self) -> np.ndarray:
        return self.Xy[:, :-1]

    @property
    def y(self) -> np.ndarray:
        return self.Xy[:, -1]


def _codes(column: pd.Series) -> tuple[np.ndarray, int]:
    code, uniques = pd.factorize(column, sort=True)
    return code.astype(np.int64), len(uniques)


def _nesting(inner: np.ndarray, n_inner: int, unit_codes: Sequence[np.ndarray],
             unit_n_levels: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """The units within whose levels every level of ``inner`` lies (each inner level occurs
    with a single level of the unit), with the unit level of each inner level."""
    nesting = []
    for u, (outer, n_outer) in enumerate(zip(unit_codes, unit_n_levels, strict=True)):
        pairs = np.unique(inner * n_outer + outer)
        if len(pairs) == n_inner:
            nesting.append((u, pairs % n_outer))  # pairs are sorted by inner level
    return nesting


def resampling_design(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                      random: Sequence[str], units: Sequence[str], replicate: str | None,
                      replicate_within: Sequence[str], outputs: np.ndarray,
                      start: np.ndarray) -> ResamplingDesign:
    """Encode the rows once: model arrays, unit codes, which random factor is nested in which
    unit, and the replicate cells with each row's replicate numbered within its cell."""
    arrays = model_arrays(data, outcome, fixed, random)
    unit_codes, unit_n_levels = zip(*(_codes(data[u]) for u in units), strict=True) if units else ((), ())
    factor_nesting = [_nesting(codes, len(levels), unit_codes, unit_n_levels)
                      for codes, levels in zip(arrays.codes, arrays.levels, strict=True)]
    n = len(data)
    cell = np.zeros(n, dtype=np.int64)
    if replicate_within:
        cell = pd.MultiIndex.from_frame(data[list(replicate_within)]).factorize()[0]
    n_cells = int(cell.max()) + 1 if n else 0
    if replicate is None:  # no replicate resampling: no cells to draw in
        position = np.full(n, -1, dtype=np.int64)
        n_replicates = np.zeros(0, dtype=np.int64)
    else:
        replicate_code, n_replicate_levels = _codes(data[replicate])
        pairs, pair_of_row = np.unique(cell * n_replicate_levels + replicate_code,
                                       return_inverse=True)
        cell_of_pair = pairs // n_replicate_levels
        first_of_cell = np.searchsorted(cell_of_pair, cell_of_pair, side="left")
        position = (np.arange(len(pairs)) - first_of_cell)[pair_of_row]
        n_replicates = np.bincount(cell_of_pair, minlength=n_cells)
        if np.all(n_replicates == 1):  # one replicate per cell: every draw keeps it
            position, n_replicates = np.full(n, -1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # A cell lies within one level of each unit among its columns: copies of that level are
    # copies of the cell.
    cell_units = [i for i, u in enumerate(units) if u in replicate_within]
    cell_nesting = [(u, level) for u, level in
                    _nesting(cell, n_cells, unit_codes, unit_n_levels) if u in cell_units]
    Xy = np.ascontiguousarray(np.column_stack([arrays.X, arrays.y]))
    return ResamplingDesign(Xy, arrays.codes, list(unit_codes),
                            np.asarray(unit_n_levels, dtype=np.int64), factor_nesting, cell,
                            cell_nesting, position, n_replicates, outputs, start)


# --------------------------------------------------------------------------------------------
# One resample


def resample_rows(design: ResamplingDesign, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows of one crossed resample and the relabelled random-factor codes.

    1. Each unit's levels are drawn with replacement, independently across units; a row is kept
       once for every combination of copies of its unit levels.
    2. Every copy of a level is a distinct level of each random factor nested in (or equal to)
       that unit: "xnli:de" drawn twice gives two target-language levels, not one level with
       twice the rows, since the copies stand for two different languages.
    3. Within each replicate cell (e.g. mix copy x target task) the replicates (seeds) are drawn
       with replacement; all rows of a drawn run are kept together.

    The resample is index arrays into the design (which rows, which level each has); time and
    memory grow with its rows only. A copy is identified by its rank among the copies of its
    level, so the new levels of a factor number sum over its levels of the copies drawn
    (10,000 for 10,000 mixes) rather than levels x unit levels.
    """
    n = len(design.y)
    rows = np.arange(n)
    copies: list[np.ndarray] = []    # per unit: each kept row's copy rank of its unit level
    drawn_copies: list[np.ndarray] = []  # per unit: how often each level was drawn
    for codes, n_levels in zip(design.unit_codes, design.unit_n_levels, strict=True):
        per_level = np.bincount(rng.integers(n_levels, size=n_levels), minlength=n_levels)
        repeats = per_level[codes[rows]]
        rows = np.repeat(rows, repeats)
        first = np.cumsum(repeats) - repeats
        copies = [np.repeat(c, repeats) for c in copies]
        copies.append(np.arange(len(rows)) - np.repeat(first, repeats))
        drawn_copies.append(per_level)
    if design.cell_n_replicates.size:
        rows, copies = _resample_replicates(design, rng, rows, copies, drawn_copies)
    factor_codes = [_copy_codes(codes[rows], nesting, copies, drawn_copies)[0]
                    for codes, nesting in zip(design.factor_codes, design.factor_nesting,
                                              strict=True)]
    return rows, factor_codes


def _copy_codes(code: np.ndarray, nesting: list[tuple[int, np.ndarray]],
                copies: list[np.ndarray], drawn_copies: list[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Number the (level, copy of each unit it is nested in) pairs of a resample's rows 0..k-1,
    by level, then by copy; also return the original level of each of the k new levels.

    Level l nested in units u has prod_u drawn_copies[u][unit level of l] copies: a block of that
    many numbers per level, the copy ranks its mixed-radix position within the block.
    """
    n_code_levels = len(nesting[0][1]) if nesting else int(code.max(initial=-1)) + 1
    width = np.ones(n_code_levels, dtype=np.int64)
    position = np.zeros(len(code), dtype=np.int64)
    for u, unit_level in nesting:
        per_level = drawn_copies[u][unit_level]
        width *= per_level
        position = position * per_level[code] + copies[u]
    start = np.cumsum(width) - width
    new_code, present = _compact(start[code] + position, int(width.sum()))
    return new_code, np.repeat(np.arange(n_code_levels), width)[present]


def _compact(code: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber codes in [0, size) to 0..k-1 in order; also return the k codes present.

    A counting pass rather than np.unique's sort: the code ranges here are small.
    """
    present = np.zeros(size, dtype=bool)
    present[code] = True
    renumber = np.cumsum(present) - 1
    return renumber[code], np.flatnonzero(present)


def _resample_replicates(design: ResamplingDesign, rng: np.random.Generator, rows: np.ndarray,
                         copies: list[np.ndarray], drawn_copies: list[np.ndarray]
                         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw the replicates of every cell copy with replacement (step 3 of resample_rows)."""
    instance_of_row, instance_cell = _copy_codes(design.cell[rows], design.cell_nesting, copies,
                                                 drawn_copies)
    n_replicates = design.cell_n_replicates[instance_cell]
    offsets = np.cumsum(n_replicates) - n_replicates
    instance_of_draw = np.repeat(np.arange(len(instance_cell)), n_replicates)
    drawn = (rng.random(len(instance_of_draw)) * n_replicates[instance_of_draw]).astype(np.int64)
    times_drawn = np.bincount(offsets[instance_of_draw] + drawn, minlength=len(instance_of_draw))
    weight = times_drawn[offsets[instance_of_row] + design.replicate_position[rows]]
    return np.repeat(rows, weight), [np.repeat(c, weight) for c in copies]


def refit(design: ResamplingDesign, rows: np.ndarray, factor_codes: list[np.ndarray],
          start: np.ndarray | None = None) -> np.ndarray:
    """The outputs (terms and contrasts) refitted on the given rows, from theta ``start``
    (default: the full-data fit's); NaN if the fit fails."""
    state = _fit_rows(design, rows, factor_codes, design.start if start is None else start)
    if state is None:
        return np.full(len(design.outputs), np.nan)
    return design.outputs @ state.beta


def _fit_rows(design: ResamplingDesign, rows: np.ndarray, factor_codes: list[np.ndarray],
              start: np.ndarray) -> ThetaFit | None:
    """The REML fit of the model on the given rows; None if it fails or does not converge."""
    try:
        # np.take gathers whole rows three times as fast as indexing (design.Xy[rows]) does
        # on a 1,000,000-row resample.
        cp = cross_products_of(np.take(design.Xy, rows, axis=0), factor_codes,
                               [int(c.max()) + 1 for c in factor_codes])
        # A resample can lose a fixed term's variation (every drawn mix at one diversity):
        # its effect is then not estimable, and the resample counts as failed.
        if np.linalg.matrix_rank(cp.XyXy[:cp.p, :cp.p]) < cp.p:
            return None
        state = fit_theta(cp, reml=True, start=start, tolerance=REFIT_TOLERANCE, average=True)
    except (np.linalg.LinAlgError, ValueError):
        return None
    return state if state.converged else None


#: Resamples whose optima, component by component, give the median from which the others start.
PILOTS = 5


def pilot_start(design: ResamplingDesign, seeds: Sequence[np.random.SeedSequence]) -> np.ndarray:
    """Where to start the resamples' refits: the componentwise median of the optima of the
    resamples drawn from ``seeds`` (the data's theta if none of those fits succeeds).

    A resample duplicates unit levels, and the copies of a level share their rows' residuals,
    which the model partly reads as variation between the cells of those rows: the resamples'
    optima lie systematically away from the data's. On a 1,100-mix grid whose mix-by-target
    standard deviation is zero in the data it was 0.15 to 0.28 residual SDs in the resamples;
    starting 100 resamples from the median of five pilots' optima rather than from the data's
    took 2.43 evaluations of the derivatives per refit instead of 2.98 (a single pilot: from 2.43
    to 3.0, depending on which). The pilots are fitted before the refits are shared out, so the
    draws do not depend on the number of workers.
    """
    optima = []
    for seed in seeds:
        rows, codes = resample_rows(design, np.random.default_rng(seed))
        state = _fit_rows(design, rows, codes, design.start)
        if state is not None:
            optima.append(state.theta)
    return np.median(optima, axis=0) if optima else design.start


def jackknife_groups_of(n_levels: int, n_groups: int | None, rng: np.random.Generator
                     ) -> list[np.ndarray]:
    """The levels 0..n_levels-1 of a unit split at random into ``min(n_groups, n_levels)``
    groups whose sizes differ by at most one (``None``: one group per level, the exact
    leave-one-out jackknife, in level order)."""
    if n_groups is None or n_groups >= n_levels:
        return [np.array([level]) for level in range(n_levels)]
    order = rng.permutation(n_levels)
    return [np.sort(order[g::n_groups]) for g in range(n_groups)]


def leave_out_rows(design: ResamplingDesign, unit: int, levels: np.ndarray
                   ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows without some levels of one unit, and the random-factor codes renumbered (one
    grouped-jackknife fit)."""
    kept = np.ones(design.unit_n_levels[unit], dtype=bool)
    kept[levels] = False
    rows = np.flatnonzero(kept[design.unit_codes[unit]])
    return rows, [_compact(c[rows], int(c.max()) + 1)[0] for c in design.factor_codes]


def _estimate(design: ResamplingDesign, task: np.random.SeedSequence | tuple[int, np.ndarray]
              ) -> np.ndarray:
    """Refit one task: a SeedSequence is a bootstrap resample, a (unit, levels) pair a jackknife
    fit without those levels of that unit."""
    if isinstance(task, np.random.SeedSequence):
        rows, codes = resample_rows(design, np.random.default_rng(task))
        return refit(design, rows, codes, design.resample_start)
    return refit(design, *leave_out_rows(design, *task))


def run_refits(design: ResamplingDesign, tasks: list, n_jobs: int | None = None,
               progress: bool = False, scheduler: str | None = None) -> np.ndarray:
    """Refit every task, in chunks of at most 10 over ``n_jobs`` worker processes (or the
    workers of a Dask ``scheduler``: :func:`transferstats.parallel.parallel_map`).

    Results are in task order and depend on the tasks only, never on the workers.
    """
    estimates = parallel_map(_estimate, tasks, design, jobs=n_jobs, scheduler=scheduler,
                             largest_chunk=10, progress=progress, label="crossed bootstrap")
    return np.array(estimates).reshape(len(tasks), len(design.outputs))


# --------------------------------------------------------------------------------------------
# The bootstrap


def output_matrix(terms: Sequence[str], contrasts: Mapping[str, Mapping[str, float]]
                  ) -> tuple[list[str], np.ndarray]:
    """Each fixed term except the intercept, then each contrast, as a row of weights on beta."""
    names = [t for t in terms if t != "Intercept"]
    rows = [np.eye(len(terms))[terms.index(t)] for t in names]
    for name, weights in contrasts.items():
        unknown = set(weights) - set(terms)
        if unknown:
            raise KeyError(f"contrast {name!r} uses terms not in the model: {sorted(unknown)}")
        rows.append(np.array([weights.get(t, 0.0) for t in terms]))
        names.append(name)
    return names, np.array(rows).reshape(len(names), len(terms))


def crossed_bootstrap(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                      random: Sequence[str], *, units: Sequence[str] = ("language", "mix"),
                      replicate: str | None = "seed",
                      replicate_within: Sequence[str] = ("mix", "target_task"),
                      contrasts: Mapping[str, Mapping[str, float]] | None = None,
                      n_resamples: int = 1000, seed: int = 0, n_jobs: int | None = None,
                      progress: bool = True, scheduler: str | None = None,
                      jackknife_groups: int | None = JACKKNIFE_GROUPS,
                      fit: CrossedFit | None = None) -> BootstrapResult:
    """Crossed cluster bootstrap of the fixed effects (and contrasts) of the crossed mixed model.

    Resampling scheme (pigeonhole bootstrap, Owen 2007; cluster resampling at the top levels
    and of the seeds within, Field & Welsh 2007), one resample:

    1. draw the levels of each column in ``units`` (language codes, mix names) independently
       with replacement and keep every row of the chosen level combinations;
    2. treat each copy of a duplicated level as a distinct level of every random factor nested
       in or equal to that unit (``target_language`` "xnli:de" chosen twice -> two levels);
    3. within each ``replicate_within`` cell (a mix copy and a target task) draw the
       ``replicate`` values (seeds) with replacement, keeping whole runs.

    The model is refitted (REML, fast path, warm start from five pilot resamples' fits) and the
    fixed terms and ``contrasts`` -- linear combinations such as
    ``{"diversity - volume": {"diversity": 1, "volume": -1}}`` -- recorded.

    The BCa acceleration comes from a grouped jackknife (:func:`acceleration`): each unit's
    levels are split at random into ``jackknife_groups`` groups (or one per level where there
    are fewer levels) and the model is refitted without each group in turn, so a grid of 1,100
    mixes and 20 languages costs 50 + 20 jackknife refits, not 1,120. ``jackknife_groups=None``
    leaves out one level at a time (the exact jackknife).

    Resample ``i`` uses the generator ``default_rng(SeedSequence(seed).spawn(n)[i])`` and the
    jackknife groups ``default_rng([seed, 1])``, so the results depend on ``seed`` only, not on
    ``n_jobs`` (default: the cores available to this process) nor on ``scheduler`` (a Dask
    scheduler's address; see :func:`transferstats.parallel.parallel_map`). ``replicate=None`` (or a
    replicate column the data lack) skips step 3. ``fit``: the REML fit of this model to these
    data, if the caller has it (otherwise, or if it is of other terms or rows, it is fitted).
    """
    contrasts = dict(contrasts or {})
    units = list(units)
    # Run-level data sets may lack some of these columns: resample what is there.
    replicate = replicate if replicate in data.columns else None
    replicate_within = [c for c in replicate_within if c in data.columns]
    # Only the columns the model and the resampling use: a copy of every column of a
    # million-row frame would cost more memory than the whole bootstrap.
    columns = list(dict.fromkeys([outcome, *fixed, *random, *units, *replicate_within,
                                  *([replicate] if replicate else [])]))
    used = data[columns].dropna(subset=[outcome, *fixed, *random, *units]).reset_index(drop=True)
    seeds = np.random.SeedSequence(seed).spawn(n_resamples)
    # One BLAS thread, as in the workers: several on these small matrices only wait on each
    # other (the pilots took three times as long on two).
    with threadpool_limits(1):
        full = (fit if fit is not None and fit.reml and fit.fits(fixed, random, len(used))
                else fit_crossed(used, outcome, fixed, random))
        names, outputs = output_matrix(full.terms, contrasts)
        start = np.array([full.relative_sds[f] for f in random])
        design = resampling_design(used, outcome, fixed, random, units, replicate,
                                   replicate_within, outputs, start)
        if seeds:
            design.resample_start = pilot_start(design, seeds[:PILOTS])
    estimate = pd.Series(outputs @ full.params.to_numpy(), index=names, name="estimate")
    # A stream apart from the resamples' (those are children of SeedSequence(seed)).
    partition = np.random.default_rng([seed, 1])
    unit_levels = [pd.factorize(used[u], sort=True)[1].to_numpy() for u in units]
    left_out = [(u, group) for u, levels in enumerate(unit_levels)
                for group in jackknife_groups_of(len(levels), jackknife_groups, partition)]
    estimates = run_refits(design, [*seeds, *left_out], n_jobs, progress, scheduler)
    draws = estimates[:n_resamples]
    jackknife = pd.DataFrame(estimates[n_resamples:], columns=names)
    jackknife.insert(0, "unit", [units[u] for u, _ in left_out])
    jackknife.insert(1, "left_out", [tuple(unit_levels[u][group]) for u, group in left_out])
    n_failed = int(np.isnan(draws).any(axis=1).sum())
    return BootstrapResult(
        estimate=estimate,
        draws=pd.DataFrame(draws, columns=names),
        jackknife=jackknife,
        n_resamples=n_resamples,
        seed=seed,
        resampling=RESAMPLING,
        n_failed=n_failed,
    )
