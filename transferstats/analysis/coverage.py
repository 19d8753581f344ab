"""How far to trust the interval: the coverage the coverage study measured for a design like the
one analysed.

``benchmarks/coverage_study.py`` simulates grids with known effects under the generative model of
``transferstats simulate`` and ``transferstats power``, analyses each with ``analyze`` and counts
how often the 95% interval of diversity - volume holds the truth. Its summary for the method
``analyze`` uses is committed as ``transferstats/data/coverage.csv`` (written by the script's
``--package-table``); this module picks the row for a design like the analysed one, so the report
can say what coverage the method achieved there (docs/statistics.md, "Interval coverage").

A row matches on the kind of bootstrap (crossed cluster or parametric, which follows from the
grid through the identity rule and the few-mixes rule), on the interval kind (for the parametric
bootstrap, the study's Wald t rows stand in where it has no bootstrap rows of enough grids), on
whether the model has ``(1 | target_task:mix)``,
on whether the grid shows target-by-mix variation (its estimated variance is above zero; a model
without the term is matched to the study's grids with that variation, the common case), and then
on the nearest number of mixes on a log scale.

With target-specific slopes in the model the verdict's interval is a Wald t interval on
Satterthwaite's degrees of freedom, and its coverage of the population average comes from the
study's slopes designs, committed as ``transferstats/data/coverage_slopes.csv``
(:func:`slopes_coverage`): the row matches on the term checked (diversity - volume, or diversity
alone where volume is fixed), then the nearest number of targets and of mixes (log scale), and of
the slope settings studied there (slope SD and correlation, which the analysed grid does not
reveal exactly) the one with the lowest coverage.

References
----------
Morris, T. P., White, I. R. & Crowther, M. J. (2019). Using simulation studies to evaluate
statistical methods. Statistics in Medicine 38(11), 2074-2102. (Coverage and its Monte Carlo
standard error.)
"""

from __future__ import annotations

import io
import math
from importlib import resources

import pandas as pd

#: The committed summary of the coverage study, inside the package.
COVERAGE_TABLE = "data/coverage.csv"
#: The ``interval`` of the study's rows for the Wald t stand-in of the parametric bootstrap.
WALD = "Wald t"
#: The committed summary of the study's designs with target-specific slopes.
SLOPES_TABLE = "data/coverage_slopes.csv"
SLOPES_COLUMNS = ("design", "targets", "mixes", "slope_sd_in_se", "slope_correlation", "term",
                  "interval", "grids", "covered", "coverage", "mc_low", "mc_high", "mean_width",
                  "median_df")
COLUMNS = ("design", "mixes", "languages", "target_mix_sd", "target_mix_in_model", "bootstrap",
           "interval", "grids", "covered", "coverage", "mc_low", "mc_high", "width_ratio")


def coverage_table() -> pd.DataFrame:
    """The committed coverage study summary (one row per design, model and interval kind)."""
    return _read_table(COVERAGE_TABLE, COLUMNS)


def slopes_coverage_table() -> pd.DataFrame:
    """The committed summary of the slopes designs (one row per design; ``#`` lines are its
    provenance)."""
    return _read_table(SLOPES_TABLE, SLOPES_COLUMNS)


def _read_table(name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    text = resources.files("transferstats").joinpath(name).read_text()
    table = pd.read_csv(io.StringIO(text), comment="#")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"transferstats/{name}: columns {missing} missing; expected "
                         f"{list(columns)}")
    return table


def slopes_coverage(n_targets: int, n_mixes: int, term: str = "diversity - volume",
                    table: pd.DataFrame | None = None) -> dict | None:
    """The slopes study's result for the design most like the analysed one, or None when the
    study has no design for its term.

    Parameters
    ----------
    n_targets : int
        Targets of the analysed grid.
    n_mixes : int
        Its mixes.
    term : {"diversity - volume", "diversity", "volume"}
        The verdict's term: the contrast, or the factor that varies alone (the study has
        diversity alone, from the fixed-budget grid; none for volume alone).
    table : pandas.DataFrame, optional
        The slopes study summary; the committed one by default.

    Returns
    -------
    dict or None
        The row as plain Python values (``design``, ``targets``, ``mixes``, ``grids``,
        ``covered``, ``coverage``, ``mc_low``, ``mc_high``, ``median_df``, ...) with
        ``bootstrap`` None and ``interval`` the Wald t's name, for :func:`coverage_sentence`.
    """
    table = slopes_coverage_table() if table is None else table
    rows = table[table["term"] == term]
    if rows.empty:
        return None
    distance = ((rows["targets"] - n_targets).abs() * 100
                + (rows["mixes"].map(math.log) - math.log(max(n_mixes, 1))).abs())
    nearest = rows[distance == distance.min()]
    row = nearest.loc[nearest["coverage"].idxmin()]
    values = {str(key): (value.item() if hasattr(value, "item") else value)
              for key, value in row.items()}
    return values | {"bootstrap": None}


def study_coverage(n_mixes: int, bootstrap: str, interval: str, target_mix_in_model: bool,
                   target_mix_variation: bool, table: pd.DataFrame | None = None) -> dict | None:
    """The study's result for the design most like the analysed one, or None when the study has
    no design with this bootstrap, interval kind and model.

    Parameters
    ----------
    n_mixes : int
        Mixes of the analysed grid.
    bootstrap : {"crossed cluster", "parametric"}
        The resampling of the verdict's interval.
    interval : {"bca", "percentile"}
        Its kind.
    target_mix_in_model : bool
        Whether the model has ``(1 | target_task:mix)``.
    target_mix_variation : bool
        Whether the grid shows target-by-mix variation (its variance estimated above zero).
    table : pandas.DataFrame, optional
        The study summary; the committed one by default.

    Returns
    -------
    dict or None
        The row (``design``, ``mixes``, ``grids``, ``covered``, ``coverage``, ``mc_low``,
        ``mc_high``, ``width_ratio``, ...) as plain Python values.
    """
    table = coverage_table() if table is None else table
    kind = "BCa" if interval == "bca" else "percentile"
    candidates = table[(table["bootstrap"] == bootstrap)
                       & (table["target_mix_in_model"] == target_mix_in_model)]
    rows = candidates[candidates["interval"] == kind]
    if rows.empty and bootstrap == "parametric":
        # The parametric bootstrap's draws are normal about the estimate with the model's
        # spread, so the study's Wald t interval on many more grids speaks for it.
        rows = candidates[candidates["interval"] == WALD]
    if rows.empty:
        return None
    varied = rows[(rows["target_mix_sd"] > 0) == target_mix_variation]
    rows = varied if not varied.empty else rows
    distance = (rows["mixes"].map(math.log) - math.log(max(n_mixes, 1))).abs().to_numpy()
    row = rows.iloc[int(distance.argmin())]
    return {str(key): (value.item() if hasattr(value, "item") else value)
            for key, value in row.items()}


def coverage_sentence(coverage: dict | None) -> str | None:
    """How far to trust the interval: what the coverage study measured on the design most like
    the analysed one (``estimates["coverage"]``, :mod:`transferstats.analysis.coverage`)."""
    if not coverage:
        return None
    if "slope_sd_in_se" in coverage:
        return _slopes_sentence(coverage)
    variation = ("with target-by-mix variation" if coverage["target_mix_sd"] > 0
                 else "without target-by-mix variation")
    how = (f"({coverage['bootstrap']} bootstrap, {coverage['interval']})"
           if coverage["interval"] != WALD else
           "(the Wald t interval that the parametric bootstrap reproduces up to Monte Carlo error)")
    return (f"How far to trust the interval: in the coverage study (docs/statistics.md), the 95% "
            f"interval of diversity \N{MINUS SIGN} volume made this way {how} held the true "
            f"difference in {coverage['covered']:,} of "
            f"{coverage['grids']:,} simulated grids of {coverage['mixes']} mixes {variation} "
            f"({coverage['coverage']:.3f}; Monte Carlo 95% interval {coverage['mc_low']:.3f} to "
            f"{coverage['mc_high']:.3f}; nominal 0.95).")


def _slopes_sentence(coverage: dict) -> str:
    term = ("diversity" if coverage["term"] == "diversity"
            else "diversity \N{MINUS SIGN} volume")
    return (f"How far to trust the interval: in the coverage study (docs/statistics.md), the 95% "
            f"Wald t interval (Satterthwaite df) of {term} held the population average in "
            f"{coverage['covered']:,} of {coverage['grids']:,} simulated grids of "
            f"{coverage['mixes']} mixes and {coverage['targets']} targets whose slopes differ "
            f"between targets ({coverage['coverage']:.3f}; Monte Carlo 95% interval "
            f"{coverage['mc_low']:.3f} to {coverage['mc_high']:.3f}; nominal 0.95), the lowest "
            f"of the slope sizes studied for such a design.")
