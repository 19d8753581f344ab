"""``transferstats status RESULTS [--grid GRID]``: complete / failed / running / pending per
intermediate mix, and every failure with its error line."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from transferstats.grid.expand import expand_grid
from transferstats.grid.spec import SpecError, load_grid


def add_arguments(parser):
    parser.add_argument("results", type=Path, help="results folder (e.g. results/)")
    parser.add_argument("--grid", type=Path,
                        help="grid specification: also list what has not started (pending)")


def _error_line(error: str | None) -> str:
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no error message)"


def run(args) -> int:
    from transferstats.grid.status import (
        ENCODER,
        RUN,
        STATES,
        count_by_mix,
        folder_states,
        grid_states,
    )

    console = Console()
    if args.grid is not None:
        try:
            grid = load_grid(args.grid)
        except SpecError as error:
            Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False)
            return 2
        states = grid_states(expand_grid(grid, args.results))
        title = f"{grid.name} in {args.results}"
    else:
        if not args.results.is_dir():
            Console(stderr=True).print(f"[red]error:[/red] {args.results} is not a folder")
            return 2
        states = folder_states(args.results)
        title = f"{args.results} (pass --grid to see pending runs)"

    table = Table(title=title)
    table.add_column("mix")
    table.add_column("encoders done", justify="right")
    for state in STATES:
        table.add_column(state, justify="right")
    totals = {kind: {state: 0 for state in STATES} for kind in (ENCODER, RUN)}
    for mix, counts in count_by_mix(states).items():
        encoders = counts[ENCODER]
        table.add_row(mix, f"{encoders['complete']}/{sum(encoders.values())}"
                      if encoders else "-", *(str(counts[RUN][state]) for state in STATES))
        for kind in (ENCODER, RUN):
            for state in STATES:
                totals[kind][state] += counts[kind][state]
    encoder_total = sum(totals[ENCODER].values())
    table.add_row("[bold]total[/bold]", f"{totals[ENCODER]['complete']}/{encoder_total}",
                  *(f"[bold]{totals[RUN][state]}[/bold]" for state in STATES))
    console.print(table)
    failures = [unit for unit in states if unit.state == "failed"]
    if failures:
        console.print(f"[red]{len(failures)} failed[/red] (re-run with --retry-failed):")
        for unit in failures:
            console.print(f"  {unit.name}: {_error_line(unit.error)}", highlight=False)
    return 0
