"""The verdict and the key effects, as printed in the terminal after ``analyze`` and returned by
:meth:`AnalysisResult.summary`. Every word is read from the result's description of the design."""

from __future__ import annotations

import io

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from transferstats.analysis.coverage import coverage_sentence
from transferstats.analysis.result import AnalysisResult
from transferstats.problems import Problem
from transferstats.report.tables import format_dof, format_interval, format_number, format_p

VERDICT_STYLE = {"supported": "bold green", "refuted": "bold red", "inconclusive": "bold yellow",
                 "confounded": "bold magenta", "diversity_only": "bold cyan",
                 "volume_only": "bold cyan"}
SUMMARY_WIDTH = 100


def _effects_table(result: AnalysisResult) -> Table:
    d = result.description
    shown = [t.term + (f" ({d.diversity_description})" if t.term == "diversity" else "")
             for t in result.terms if t.term in ("diversity", "volume")]
    table = Table(title=f"{d.model}: {d.outcome} ~ {' + '.join(shown) or '1'}",
                  title_justify="left")
    table.add_column("term", no_wrap=True)
    table.add_column("estimate", justify="right")
    table.add_column(f"{round(result.intervals.level * 100)}% CI ({result.intervals.method})",
                     justify="right")
    wald = result.intervals.resampling == "wald t"
    if wald:
        table.add_column("df", justify="right")
    table.add_column("p (t)" if wald else "p (LRT)", justify="right")
    rows = [*(e.to_dict() for e in result.terms)]
    if result.comparison.estimated:
        rows.append(result.comparison.to_dict() | {"term": result.comparison.contrast})
    for effect in rows:
        is_contrast = effect["term"] == result.comparison.contrast
        cells = [format_number(effect["estimate"]),
                 format_interval(effect["ci_low"], effect["ci_high"])]
        if wald:
            cells.append(format_dof(effect.get("df")))
        cells.append(format_p(effect.get("p_value")) if wald or not is_contrast else "")
        table.add_row(Text(effect["term"], style="bold" if is_contrast else ""), *cells)
    return table


def _design_lines(result: AnalysisResult) -> list[RenderableType]:
    """What was analysed: the model, targets and splits, languages, what was left out."""
    d = result.description
    lines: list[RenderableType] = []
    lines.append(Text(f"model {d.model}; mixes of {d.words.qualified_plural}: {len(d.mixes)}; "
                      "targets: " + ", ".join(f"{s.target} ({s.split})" for s in d.splits
                                              if s.target in d.targets)))
    if d.languages:
        lines.append(Text(f"languages: {len(d.languages)}; {d.language_rule.reason}"))
    totals: dict[str, tuple[int, int]] = {}
    for entry in d.dropped:
        rows, runs = totals.get(entry.reason, (0, 0))
        totals[entry.reason] = (rows + entry.rows, runs + entry.runs)
    if totals:
        lines.append(Text("left out: " + "; ".join(
            f"{reason}: {rows} rows ({runs} runs)" for reason, (rows, runs) in totals.items())
            + " (per target in the report)"))
    return lines


def summary(result: AnalysisResult) -> Group:
    """The summary as rich renderables: what was analysed, the effects, the verdict, warnings."""
    d = result.description
    problems = result.problems[result.problems["severity"] == "warning"]
    # The outcome's warning (no baselines: the score is analysed) is said once, before the
    # numbers it changes; the others after them.
    first = problems["location"] == "outcome"
    lines: list[RenderableType] = [Text(message, style="bold yellow")
                                   for message in problems.loc[first, "message"]]
    lines += _design_lines(result)
    lines += [_effects_table(result),
              Text("units: " + "; ".join(f"{e.term}: {e.unit}" for e in result.terms)),
              Text.assemble("verdict: ", (result.verdict, VERDICT_STYLE[result.verdict]),
                            f" — {result.verdict_reason}")]
    plan = result.structure.identity
    noun = d.words.noun
    measured = " and ".join(t for t in ("diversity", "volume") if t in result.structure.mix_terms)
    lines.append(Text(f"{noun} identity effects: " + (f"used (the model above is {measured} "
                                                       "beyond identity)" if plan.used
                                                       else "not used") + f" — {plan.reason}"))
    if plan.used and result.plain.sentence:
        lines.append(Text(result.plain.sentence, style="bold" if result.plain.disagrees else ""))
    slopes = result.slopes
    if slopes.used or slopes.reason:
        lines.append(Text(f"random slopes by target: {slopes.fitted or 'none'} — {slopes.reason}"))
    if result.intervals.resampling == "wald t":
        lines.append(Text(f"intervals: Wald t on {result.intervals.df_method}'s degrees of "
                          f"freedom, about the average over targets like these "
                          f"{len(d.targets)}"))
    heterogeneity = result.heterogeneity
    if heterogeneity.tested:
        verb = "differ" if heterogeneity.differ else "do not differ detectably"
        what = "target-specific slopes (REML LRT)" if slopes.fitted else "per-target effects"
        lines.append(Text(f"{what}: effects {verb} between targets: chi2({heterogeneity.df}) = "
                          f"{heterogeneity.chi2:.2f}, p {format_p(heterogeneity.p_value)}"))
    coverage = coverage_sentence(result.coverage)
    if coverage:
        lines.append(Text(coverage))
    detectable = result.comparison.minimum_detectable_difference
    if detectable is not None:
        lines.append(Text(f"minimum detectable difference: {detectable:.2f} points "
                          f"({round(result.settings.power * 100)}% power)"))
    later = [str(Problem(*row)) for row in problems.loc[
        ~first, ["file", "location", "severity", "message"]].itertuples(index=False)]
    lines.append(Text(f"{d.n_runs} runs, {d.n_rows} rows; {len(problems)} warning(s)"
                      + (f" ({int(first.sum())} above)" if first.any() else "")
                      + (":" if later else "")))
    lines += [Text(f"  - {warning}", style="yellow") for warning in later]
    return Group(*lines)


def summary_text(result: AnalysisResult) -> str:
    """The summary as plain text (no colour codes)."""
    buffer = io.StringIO()
    Console(file=buffer, width=SUMMARY_WIDTH, color_system=None, highlight=False).print(summary(result))
    return buffer.getvalue()
