"""The verdict and the key effects, as printed in the terminal after ``analyze`` and returned by
:meth:`AnalysisResult.summary`."""

from __future__ import annotations

import io

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from transferstats.analysis.coverage import coverage_sentence
from transferstats.analysis.derive import NO_BASELINE_CHOICE
from transferstats.analysis.members import member_words
from transferstats.analysis.result import AnalysisResult
from transferstats.report.tables import format_interval, format_number, format_p

VERDICT_STYLE = {"supported": "bold green", "refuted": "bold red", "inconclusive": "bold yellow",
                 "confounded": "bold magenta", "diversity_only": "bold cyan",
                 "volume_only": "bold cyan"}
SUMMARY_WIDTH = 100


def summary(result: AnalysisResult) -> Group:
    """The summary as rich renderables: the effects table, units, verdict, key counts."""
    estimates = result.estimates
    level = estimates["bootstrap"]["level"]
    terms = [e["term"] for e in estimates["effects"] if e["term"] in ("diversity", "volume")]
    shown = [t + (f" ({estimates['diversity_measure']})" if t == "diversity" else "") for t in terms]
    table = Table(title=f"{estimates['outcome']} ~ {' + '.join(shown)}", title_justify="left")
    table.add_column("term", no_wrap=True)
    table.add_column("estimate", justify="right")
    table.add_column(f"{round(level * 100)}% CI ({estimates['bootstrap']['method']})", justify="right")
    table.add_column("p (LRT)", justify="right")
    for effect in result.effects.to_dict("records"):
        is_contrast = effect["term"] == estimates["comparison"]["contrast"]
        table.add_row(Text(effect["term"], style="bold" if is_contrast else ""),
                      format_number(effect["estimate"]),
                      format_interval(effect["ci_low"], effect["ci_high"]),
                      "" if is_contrast else format_p(effect["p_value"]))
    lines: list[RenderableType] = []
    if estimates.get("outcome_choice") == NO_BASELINE_CHOICE:
        # Said once, before the numbers it changes.
        lines.append(Text("no baseline runs: the outcome is the score, not the improvement over "
                          "a baseline", style="bold yellow"))
    lines += [table,
             Text("units: " + "; ".join(f"{e['term']}: {e['unit']}" for e in estimates["effects"])),
             Text.assemble("verdict: ", (estimates["verdict"], VERDICT_STYLE[estimates["verdict"]]),
                           f" — {estimates['verdict_reason']}")]
    identity = estimates.get("identity") or {}
    if identity:
        noun = member_words(estimates.get("source_kind")).noun
        measured = " and ".join(terms) if terms else "diversity"
        lines.append(Text(f"{noun} identity effects: " + (f"used (the model above is {measured} "
                                                       "beyond identity)" if identity["used"]
                                                       else "not used") + f" — {identity['reason']}"))
    plain = estimates.get("plain") or {}
    if identity.get("used") and plain.get("sentence"):
        lines.append(Text(plain["sentence"], style="bold" if plain.get("disagrees") else ""))
    heterogeneity = estimates.get("heterogeneity") or {}
    if heterogeneity.get("tested"):
        verb = "differ" if heterogeneity["differ"] else "do not differ detectably"
        lines.append(Text(f"per-target effects {verb} between targets: chi2({heterogeneity['df']}) = "
                          f"{heterogeneity['chi2']:.2f}, p {format_p(heterogeneity['p_value'])}"))
    coverage = coverage_sentence(estimates.get("coverage"))
    if coverage:
        lines.append(Text(coverage))
    detectable = estimates["minimum_detectable_difference"]
    if detectable is not None:
        lines.append(Text(f"minimum detectable difference: {detectable:.2f} points "
                          f"({round(estimates['settings']['power'] * 100)}% power)"))
    lines.append(Text(f"{estimates['n_runs']} runs, {estimates['n_rows']} rows; "
                      f"{len(estimates['warnings'])} warning(s)"))
    return Group(*lines)


def summary_text(result: AnalysisResult) -> str:
    """The summary as plain text (no colour codes)."""
    buffer = io.StringIO()
    Console(file=buffer, width=SUMMARY_WIDTH, color_system=None, highlight=False).print(summary(result))
    return buffer.getvalue()
