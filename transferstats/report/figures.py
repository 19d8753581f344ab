"""Report figures, sized and styled for papers.

One function per figure; each takes tidy data and returns a :class:`matplotlib.figure.Figure`
drawn on the Agg canvas (no pyplot, so no global figure state and no display needed). Widths are
a single (3.4 in) or double (7 in) two-column-paper column, text is 8 pt or larger, colours are
Okabe-Ito (categorical) or ColorBrewer RdBu centred at zero (signed improvements), both readable
with the common colour-vision deficiencies. :func:`save_figure` writes a PNG and a vector PDF
whose text stays text (TrueType, ``pdf.fonttype`` 42), so journals' font checks pass.

References
----------
Okabe & Ito 2008, "Color Universal Design (CUD): How to make figures and presentations that are
friendly to colorblind people", https://jfly.uni-koeln.de/color/.
"""

from __future__ import annotations

import functools
import math
import textwrap
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator
from matplotlib.typing import RcKeyType
from scipy import stats

from transferstats.analysis.members import TASK_WORDS, MemberWords
from transferstats.report.tables import (
    MINUS,
    format_interval,
    format_level,
    format_number,
    is_missing,
    target_label,
    term_label,
)

SINGLE_COLUMN = 3.4
DOUBLE_COLUMN = 7.0

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")
BLUE, ORANGE, _, VERMILLION = OKABE_ITO[:4]
GREY = "#777777"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DIVERGING_MAP = "RdBu"

PAPER_STYLE: dict[RcKeyType, object] = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 8, "legend.title_fontsize": 8,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
    "lines.linewidth": 1.2, "lines.markersize": 4, "axes.spines.top": False,
    "axes.spines.right": False, "axes.prop_cycle": cycler(color=OKABE_ITO),
    "legend.frameon": False, "savefig.dpi": 300, "pdf.fonttype": 42, "axes.unicode_minus": True,
}


def _paper_style(draw):
    """Run a figure function under :data:`PAPER_STYLE` (rcParams are read when artists are made)."""
    @functools.wraps(draw)
    def styled(*args, **kwargs):
        with mpl.rc_context(PAPER_STYLE):
            return draw(*args, **kwargs)
    return styled


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, folder: Path, name: str) -> dict[str, Path]:
    """Write ``folder/<name>.png`` (300 dpi) and ``folder/<name>.pdf`` (vector, text as text).

    Returns
    -------
    dict
        ``{"png": path, "pdf": path}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {fmt: folder / f"{name}.{fmt}" for fmt in ("png", "pdf")}
    with mpl.rc_context(PAPER_STYLE):
        for fmt, path in paths.items():
            # No creation date or software stamp: the same analysis writes byte-identical files.
            metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            figure.savefig(path, format=fmt, metadata=metadata)
    return paths


def _ordered_unique(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


@_paper_style
def improvement_heatmap(improvement: pd.DataFrame) -> Figure:
    """Mean improvement per intermediate mix (rows) and target task (columns), plus the average.

    Parameters
    ----------
    improvement:
        Long form ``mix, target_task, mean``; ``target_task == "average"`` is drawn last,
        set off by a gap. Row and column order follow first appearance.

    Returns
    -------
    Figure
        Double-column heatmap, values annotated, diverging colours centred at zero.
    """
    mixes = _ordered_unique(improvement["mix"])
    targets = [t for t in _ordered_unique(improvement["target_task"]) if t != "average"]
    has_average = (improvement["target_task"] == "average").any()
    columns = targets + (["average"] if has_average else [])
    grid = (improvement.pivot(index="mix", columns="target_task", values="mean")
            .reindex(index=mixes, columns=columns).to_numpy(dtype=float))
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    norm = Normalize(vmin=-limit, vmax=limit)

    figure = _new_figure(DOUBLE_COLUMN, 0.9 + 0.26 * len(mixes))
    axes = figure.add_subplot()
    image = axes.imshow(grid, cmap=DIVERGING_MAP, norm=norm, aspect="auto")
    cmap = image.get_cmap()
    for (row, col), value in np.ndenumerate(grid):
        if np.isfinite(value):
            # Dark text on light cells, white on saturated ones, judged by the cell's luminance.
            red, green, blue, _ = cmap(norm(value))
            dark_cell = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            axes.text(col, row, format_number(value, 1), ha="center", va="center", fontsize=8,
                      color="white" if dark_cell else "black")
    if has_average:
        axes.axvline(len(targets) - 0.5, color="white", linewidth=3)
    axes.set_xticks(range(len(columns)), [target_label(t) for t in columns])
    axes.set_yticks(range(len(mixes)), mixes)
    axes.tick_params(length=0)
    axes.xaxis.tick_top()
    for spine in axes.spines.values():
        spine.set_visible(False)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    colorbar.set_label("Improvement over baseline (points)")
    colorbar.outline.set_visible(False)
    return figure


@_paper_style
def effects_forest(effects: list[dict], comparison: dict, outcome: str = "improvement",
                   confidence: float = 0.95) -> Figure:
    """Forest plot of the fixed effects and the diversity - volume contrast with their intervals.

    Parameters
    ----------
    effects:
        ``estimates["effects"]``: ``term, estimate, ci_low, ci_high, unit``.
    comparison:
        ``estimates["comparison"]``: ``contrast, estimate, ci_low, ci_high``; drawn last, apart,
        in a highlight colour.
    outcome:
        Name of the modelled outcome, for the axis label.
    confidence:
        Level of the intervals, for the axis label.

    Returns
    -------
    Figure
        Double-column forest plot; each row labelled with its term and unit, estimate and
        interval printed on the right, zero line dashed.
    """
    rows = [dict(effect, highlight=False) for effect in effects]
    positions = [float(i) for i in range(len(effects))]
    # A grid that varies one factor (or a confounded one) has no contrast: no empty entry.
    if not is_missing(comparison.get("estimate")):
        rows.append({"term": comparison["contrast"], "unit": comparison.get("unit"),
                     "estimate": comparison["estimate"], "ci_low": comparison["ci_low"],
                     "ci_high": comparison["ci_high"], "highlight": True})
        # The contrast sits half a row below the effects, so it reads as a separate quantity.
        positions.append(len(effects) + 0.5)

    figure = _new_figure(DOUBLE_COLUMN, 0.8 + 0.45 * len(rows))
    axes = figure.add_subplot()
    axes.axvline(0, color=GREY, linestyle="--", linewidth=0.8)
    for row, y in zip(rows, positions, strict=True):
        colour = VERMILLION if row["highlight"] else BLUE
        estimate, low, high = row["estimate"], row["ci_low"], row["ci_high"]
        if not (is_missing(low) or is_missing(high)):
            axes.plot([low, high], [y, y], color=colour, linewidth=1.6, solid_capstyle="butt")
        if is_missing(estimate):
            text = "not estimated"
        else:
            axes.plot(estimate, y, marker="D" if row["highlight"] else "o", color=colour,
                      markersize=5)
            text = f"{format_number(estimate)} {format_interval(low, high)}"
        axes.annotate(text, xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(6, 0),
                      textcoords="offset points", ha="left", va="center")
    labels = [term_label(row["term"]) + ("\n" + textwrap.fill(row["unit"], 48)
                                         if row.get("unit") else "")
              for row in rows]
    axes.set_yticks(positions, labels)
    axes.yaxis.set_minor_locator(NullLocator())
    axes.set_ylim(positions[-1] + 0.7, -0.7)
    axes.tick_params(axis="y", length=0)
    axes.spines["left"].set_visible(False)
    axes.set_xlabel(f"Effect on {outcome.replace('_', ' ')}, points per doubling "
                    f"({format_level(confidence)} CI)")
    return figure


def examples_label(examples: float) -> str:
    """``40k``, ``1.5M``: a number of examples, short."""
    for divisor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if examples >= divisor:
            return f"{examples / divisor:g}{suffix}"
    return f"{examples:g}"


@_paper_style
def interaction_plot(cells: pd.DataFrame, outcome_label: str = "Improvement (points)",
                     confidence: float = 0.95, words: MemberWords = TASK_WORDS
                     ) -> Figure:
    """Mean outcome against the number of intermediate tasks (or source languages), one line
    per volume budget.

    Parameters
    ----------
    cells:
        One row per design cell: ``n_tasks, volume_examples, mean, ci_low, ci_high``.
    outcome_label:
        y-axis label, with the unit.
    confidence:
        Level of the error bars, for the legend title.
    words:
        What the members are (tasks or languages), for the x-axis label.

    Returns
    -------
    Figure
        Single-column line plot on a log2 x axis; parallel lines mean no interaction. Lines are
        nudged sideways so their error bars do not overlap.
    """
    budgets = sorted(cells["volume_examples"].unique())
    figure = _new_figure(SINGLE_COLUMN, 2.8)
    axes = figure.add_subplot()
    for i, budget in enumerate(budgets):
        line = cells[cells["volume_examples"] == budget].sort_values("n_tasks")
        nudge = 2.0 ** (0.05 * (i - (len(budgets) - 1) / 2))
        mean = line["mean"].to_numpy()
        error = np.vstack([mean - line["ci_low"].to_numpy(), line["ci_high"].to_numpy() - mean])
        axes.errorbar(line["n_tasks"].to_numpy() * nudge, mean, yerr=error,
                      color=OKABE_ITO[i % len(OKABE_ITO)], marker=MARKERS[i % len(MARKERS)],
                      capsize=2, elinewidth=0.8, label=examples_label(budget))
    n_tasks = sorted(cells["n_tasks"].unique())
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(n_tasks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([f"{n:g}" for n in n_tasks])
    axes.set_xlabel(f"{words.qualified_plural.capitalize()} in the mix (log2 scale)")
    axes.set_ylabel(outcome_label)
    figure.legend(title=f"{words.examples.capitalize()} (error bars: {format_level(confidence)} CI)",
                  loc="outside upper center", ncols=min(len(budgets), 4))
    return figure


@_paper_style
def level_plot(cells: pd.DataFrame, factor: str, outcome_label: str = "Improvement (points)",
               confidence: float = 0.95, words: MemberWords = TASK_WORDS) -> Figure:
    """Mean outcome at each level of the one factor a grid varies, with intervals.

    What the interaction plot becomes when only diversity (a fixed-budget grid) or only volume
    (a single-source grid) varies: there are no lines to compare, only the effect of the factor
    level by level.

    Parameters
    ----------
    cells:
        One row per level: ``n_tasks, volume_examples, mean, ci_low, ci_high`` (the
        ``interaction_table`` of such a grid).
    factor:
        ``"diversity"`` (x: number of tasks) or ``"volume"`` (x: intermediate examples).
    outcome_label:
        y-axis label, with the unit.
    confidence:
        Level of the error bars, for the axis label.
    words:
        What the members are (tasks or languages), for the x-axis label.

    Returns
    -------
    Figure
        Single-column line plot on a log2 x axis, error bars over the mixes at each level.
    """
    column = "n_tasks" if factor == "diversity" else "volume_examples"
    line = cells.sort_values(column)
    mean = line["mean"].to_numpy()
    error = np.vstack([mean - line["ci_low"].to_numpy(), line["ci_high"].to_numpy() - mean])
    figure = _new_figure(SINGLE_COLUMN, 2.6)
    axes = figure.add_subplot()
    levels = line[column].to_numpy(dtype=float)
    axes.errorbar(levels, mean, yerr=error, color=BLUE, marker="o", capsize=2, elinewidth=0.8)
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(levels.tolist()))
    axes.xaxis.set_minor_locator(NullLocator())
    labels = [f"{n:g}" if factor == "diversity" else examples_label(n) for n in levels]
    # Many levels (a fixed budget over 1 to 52 tasks) would overprint: label about ten of them.
    step = max(1, math.ceil(len(levels) / 10))
    axes.set_xticklabels([label if i % step == 0 else "" for i, label in enumerate(labels)])
    axes.set_xlabel(f"{words.qualified_plural.capitalize()} in the mix (log2 scale)"
                    if factor == "diversity" else f"{words.examples.capitalize()} (log2 scale)")
    axes.set_ylabel(f"{outcome_label}\n({format_level(confidence)} CI over mixes)")
    return figure


@_paper_style
def language_dotplot(languages: pd.DataFrame,
                     value_label: str = "Improvement over baseline (points)",
                     confidence: float = 0.95) -> Figure:
    """The outcome per evaluation language with intervals, sorted by the mean.

    Parameters
    ----------
    languages:
        ``language, mean, ci_low, ci_high``; drawn top to bottom from largest to smallest mean.
    value_label:
        x-axis label, with the unit.
    confidence:
        Level of the intervals, for the axis label.

    Returns
    -------
    Figure
        Single-column dot plot, as tall as the number of languages needs.
    """
    ordered = languages.sort_values("mean", ascending=True).reset_index(drop=True)
    positions = np.arange(len(ordered))
    figure = _new_figure(SINGLE_COLUMN, 0.7 + 0.13 * len(ordered))
    axes = figure.add_subplot()
    axes.axvline(0, color=GREY, linestyle="--", linewidth=0.8)
    axes.hlines(positions, ordered["ci_low"], ordered["ci_high"], color=BLUE, linewidth=1.2)
    axes.plot(ordered["mean"], positions, "o", color=BLUE, markersize=3.5)
    axes.set_yticks(positions, ordered["language"])
    axes.set_ylim(-0.7, len(ordered) - 0.3)
    axes.tick_params(axis="y", length=0)
    axes.grid(axis="y", color="#e5e5e5", linewidth=0.5)
    axes.set_axisbelow(True)
    axes.set_xlabel(f"{value_label}, {format_level(confidence)} CI")
    return figure


@_paper_style
def bootstrap_difference(draws: pd.Series, comparison: dict, confidence: float = 0.95) -> Figure:
    """Bootstrap distribution of the diversity - volume contrast.

    Parameters
    ----------
    draws:
        One value of the contrast per bootstrap resample.
    comparison:
        ``estimate, ci_low, ci_high`` of the contrast, marked on the histogram.
    confidence:
        Level of the interval, for the legend.

    Returns
    -------
    Figure
        Single-column histogram with the estimate (solid), the interval (shaded) and zero
        (dashed).
    """
    values = draws.dropna().to_numpy(dtype=float)
    figure = _new_figure(SINGLE_COLUMN, 2.4)
    axes = figure.add_subplot()
    axes.axvspan(comparison["ci_low"], comparison["ci_high"], color=ORANGE, alpha=0.25,
                 linewidth=0, label=f"{format_level(confidence)} CI")
    axes.hist(values, bins=min(50, max(10, len(values) // 20)), color=BLUE, alpha=0.85,
              edgecolor="white", linewidth=0.3)
    axes.axvline(comparison["estimate"], color=VERMILLION, linewidth=1.4, label="Estimate")
    axes.axvline(0, color="black", linestyle="--", linewidth=0.9, label="Zero")
    axes.set_xlabel(f"Diversity {MINUS} volume effect, points per doubling")
    axes.set_ylabel(f"Resamples (of {len(values):,})")
    axes.legend(loc="upper left", handlelength=1.2)
    return figure


def _binned_means(x: np.ndarray, y: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Means of y in quantile bins of x: a trend line that is cheap on tens of thousands of rows."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(index, minlength=len(edges) - 1)
    keep = counts > 0
    x_means = np.bincount(index, weights=x, minlength=len(edges) - 1)[keep] / counts[keep]
    y_means = np.bincount(index, weights=y, minlength=len(edges) - 1)[keep] / counts[keep]
    return x_means, y_means


@_paper_style
def residual_diagnostics(fitted: np.ndarray, residuals: np.ndarray) -> Figure:
    """Residuals against fitted values, and a normal Q-Q plot of the residuals.

    Parameters
    ----------
    fitted, residuals:
        Conditional fitted values and residuals of the mixed model, in points.

    Returns
    -------
    Figure
        Double-column, two panels. Points are rasterised in the PDF (tens of thousands of
        them would make it heavy); axes and text stay vector.
    """
    fitted = np.asarray(fitted, dtype=float)
    residuals = np.asarray(residuals, dtype=float)
    alpha = float(np.clip(300 / max(len(residuals), 1), 0.08, 0.8))
    figure = _new_figure(DOUBLE_COLUMN, 2.8)
    left, right = figure.subplots(1, 2)

    left.scatter(fitted, residuals, s=4, color=BLUE, alpha=alpha, linewidths=0, rasterized=True)
    left.axhline(0, color="black", linestyle="--", linewidth=0.8)
    trend_x, trend_y = _binned_means(fitted, residuals)
    left.plot(trend_x, trend_y, color=VERMILLION, linewidth=1.4, label="Binned mean")
    left.set_xlabel("Fitted value (points)")
    left.set_ylabel("Residual (points)")
    left.set_title("Residuals vs fitted", loc="left")
    left.legend(loc="upper right")

    (theoretical, ordered), (slope, intercept, _) = stats.probplot(residuals, dist="norm")
    ends = np.array([theoretical.min(), theoretical.max()])
    right.plot(ends, intercept + slope * ends, color=VERMILLION, linewidth=1.0, linestyle="--",
               label="Normal reference", zorder=3)
    # Sorted residuals lie along one curve, so they can be opaque: overlap hides nothing.
    right.scatter(theoretical, ordered, s=4, color=BLUE, linewidths=0, rasterized=True,
                  zorder=2)
    right.set_xlabel("Theoretical normal quantile")
    right.set_ylabel("Residual quantile (points)")
    right.set_title("Normal Q\N{EN DASH}Q plot", loc="left")
    right.legend(loc="upper left")
    return figure


@_paper_style
def identity_forest(tasks: list[dict], outcome: str = "improvement",
                    confidence: float = 0.95, words: MemberWords = TASK_WORDS
                    ) -> Figure:
    """Identity effect of each intermediate task (or source language) with its interval,
    largest first.

    Parameters
    ----------
    tasks:
        ``estimates["identity"]["tasks"]``: ``task, estimate, ci_low, ci_high`` (the outcome of a
        mix of that task alone at the design's centre volume).
    outcome:
        Name of the modelled outcome, for the axis label.
    confidence:
        Level of the intervals, for the axis label.
    words:
        What the members are (tasks or languages), for the axis label.

    Returns
    -------
    Figure
        Single-column forest plot; the dashed line is the mean over tasks, so a task whose
        interval lies right of it carries more transfer than the average task.
    """
    ordered = sorted(tasks, key=lambda row: row["estimate"])
    positions = np.arange(len(ordered))
    figure = _new_figure(SINGLE_COLUMN, 0.9 + 0.22 * len(ordered))
    axes = figure.add_subplot()
    mean = float(np.mean([row["estimate"] for row in ordered]))
    axes.axvline(mean, color=GREY, linestyle="--", linewidth=0.8)
    for row, y in zip(ordered, positions, strict=True):
        if not (is_missing(row["ci_low"]) or is_missing(row["ci_high"])):
            axes.plot([row["ci_low"], row["ci_high"]], [y, y], color=BLUE, linewidth=1.4,
                      solid_capstyle="butt")
        axes.plot(row["estimate"], y, "o", color=BLUE, markersize=4)
    axes.set_yticks(positions, [row["task"] for row in ordered])
    axes.yaxis.set_minor_locator(NullLocator())
    axes.set_ylim(-0.7, len(ordered) - 0.3)
    axes.tick_params(axis="y", length=0)
    axes.spines["left"].set_visible(False)
    axes.set_xlabel(textwrap.fill(f"{outcome.replace('_', ' ').capitalize()} of the "
                                  f"{words.noun} alone, "
                                  f"points ({format_level(confidence)} CI)", 50))
    return figure


@_paper_style
def per_target_forest(rows: list[dict], confidence: float = 0.95) -> Figure:
    """Diversity and volume effects per target task with their intervals, side by side.

    Parameters
    ----------
    rows:
        ``estimates["per_target"]``: ``target, term, estimate, ci_low, ci_high``; the terms
        ``diversity`` and ``volume`` that the rows hold are drawn, one panel each, targets in the
        given order.
    confidence:
        Level of the intervals, for the axis labels.

    Returns
    -------
    Figure
        Double-column figure with a forest panel per term sharing the target axis; dashed line
        at zero.
    """
    targets = list(dict.fromkeys(row["target"] for row in rows))
    cells = {(row["target"], row["term"]): row for row in rows}
    terms = [(term, colour) for term, colour in (("diversity", BLUE), ("volume", ORANGE))
             if any(row["term"] == term for row in rows)]
    positions = np.arange(len(targets))[::-1]
    figure = _new_figure(DOUBLE_COLUMN, 1.0 + 0.3 * len(targets))
    panels = np.atleast_1d(figure.subplots(1, len(terms), sharey=True))
    for axes, (term, colour) in zip(panels, terms, strict=True):
        axes.axvline(0, color=GREY, linestyle="--", linewidth=0.8)
        for target, y in zip(targets, positions, strict=True):
            row = cells.get((target, term))
            if row is None or is_missing(row.get("estimate")):
                continue
            if not (is_missing(row["ci_low"]) or is_missing(row["ci_high"])):
                axes.plot([row["ci_low"], row["ci_high"]], [y, y], color=colour, linewidth=1.4,
                          solid_capstyle="butt")
            axes.plot(row["estimate"], y, "o", color=colour, markersize=4)
        axes.set_title(term_label(term))
        axes.set_xlabel(f"Points per doubling ({format_level(confidence)} CI)")
        axes.tick_params(axis="y", length=0)
        axes.spines["left"].set_visible(False)
    panels[0].set_yticks(positions, [target_label(t) for t in targets])
    panels[0].yaxis.set_minor_locator(NullLocator())
    panels[0].set_ylim(-0.7, len(targets) - 0.3)
    return figure
