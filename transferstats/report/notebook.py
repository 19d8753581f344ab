"""How an :class:`~transferstats.analysis.result.AnalysisResult` shows itself in Jupyter: the
verdict, the effects table and the forest plot, from the same pieces as the written report."""

from __future__ import annotations

import base64
import io

import matplotlib as mpl
from markupsafe import escape

from transferstats.analysis.result import AnalysisResult
from transferstats.report import figures, tables
from transferstats.report.render import verdict_meaning

VERDICT_COLOUR = {"supported": "#009E73", "refuted": "#D55E00", "inconclusive": "#E69F00",
                  "confounded": "#CC79A7", "diversity_only": "#0072B2",
                  "volume_only": "#0072B2"}


def _png(figure) -> str:
    buffer = io.BytesIO()
    with mpl.rc_context(figures.PAPER_STYLE):
        figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def result_html(result: AnalysisResult) -> str:
    """HTML for a notebook cell: verdict with its reason, effects table, forest plot."""
    d = result.description
    level = result.intervals.level
    verdict = result.verdict
    meaning = verdict_meaning(verdict, d.words)
    effects = [e.to_dict() for e in result.terms]
    comparison = result.comparison.to_dict()
    parts = [
        f"<div><p><strong style='color:{VERDICT_COLOUR[verdict]}'>verdict: {escape(verdict)}"
        f"</strong> &mdash; {escape(meaning)}.</p>",
        f"<p>{escape(result.verdict_reason)}.</p>",
        tables.to_html(tables.effects_table(effects, comparison, level)),
    ]
    if any(e.estimated for e in result.terms):
        forest = figures.effects_forest(effects, comparison, d.outcome, level)
        parts.append(f"<img alt='forest plot of the effects' src='data:image/png;base64,{_png(forest)}'>")
    parts.append(f"<p><small>model {escape(d.model)}: {d.n_runs} runs, {d.n_rows} rows, "
                 f"{len(d.mixes)} mixes; {len(result.warnings)} warning(s). "
                 "<code>result.write_report(path)</code> writes the full report.</small></p></div>")
    return "\n".join(parts)
