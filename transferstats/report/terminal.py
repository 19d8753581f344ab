"""The verdict and the key effects, printed in the terminal after ``analyze``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from transferstats.analysis.result import AnalysisResult

VERDICT_STYLE = {"supported": "bold green", "refuted": "bold red", "inconclusive": "bold yellow",
                 "confounded": "bold magenta"}


def _number(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _p_value(value) -> str:
    if value is None:
        return "—"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def print_summary(result: AnalysisResult, out: Path, console: Console | None = None) -> None:
    console = console or Console()
    estimates = result.estimates
    level = int(round(estimates["bootstrap"]["level"] * 100))
    table = Table(title=f"{estimates['outcome']} ~ diversity ({estimates['diversity_measure']}) + volume",
                  title_justify="left")
    table.add_column("term", no_wrap=True)
    table.add_column("estimate", justify="right")
    table.add_column(f"{level}% CI ({estimates['bootstrap']['method']})", justify="right")
    table.add_column("p (LRT)", justify="right")
    for effect in estimates["effects"]:
        table.add_row(effect["term"], _number(effect["estimate"]),
                      f"[{_number(effect['ci_low'])}, {_number(effect['ci_high'])}]",
                      _p_value(effect["p_value"]))
    comparison = estimates["comparison"]
    table.add_row(f"[bold]{comparison['contrast']}[/]", _number(comparison["estimate"]),
                  f"[{_number(comparison['ci_low'])}, {_number(comparison['ci_high'])}]", "")
    console.print(table)
    console.print("units: " + "; ".join(f"{e['term']}: {e['unit']}" for e in estimates["effects"]),
                  highlight=False)
    style = VERDICT_STYLE[estimates["verdict"]]
    console.print(f"verdict: [{style}]{estimates['verdict']}[/] — {estimates['verdict_reason']}",
                  highlight=False)
    if comparison["minimum_detectable_difference"] is not None:
        console.print(f"minimum detectable difference: "
                      f"{comparison['minimum_detectable_difference']:.2f} points "
                      f"({int(estimates['settings']['power'] * 100)}% power)", highlight=False)
    console.print(f"{estimates['n_runs']} runs, {estimates['n_rows']} rows; "
                  f"{len(estimates['warnings'])} warning(s) (listed in the report)", highlight=False)
    console.print(f"report: [bold]{out}/report.html[/]", highlight=False)
