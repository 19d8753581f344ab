"""``transferstats plan GRID``: the runs a grid expands to, what they cost, and how well the design
separates diversity from volume. Nothing runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from transferstats.analysis.design import varying_factor
from transferstats.grid.expand import expand_grid, mix_label
from transferstats.grid.factorial import (
    diversity_volume_correlation,
    mix_volume,
    task_frequencies,
    task_volume_correlations,
    train_size,
)
from transferstats.grid.spec import SpecError, load_grid
from transferstats.tasks import task_scope


def add_arguments(parser):
    parser.add_argument("grid", type=Path, help="grid specification (runners/*.toml)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results folder the runs would write to (default: results/)")
    parser.add_argument("--runs", action="store_true", help="list every run id")


def _format_tasks(tasks: dict[str, int]) -> str:
    # "(all)" marks a task giving its whole training set: its share was capped there.
    return ", ".join(f"{task} {count:,}" + (" (all)" if count == train_size(task) else "")
                     for task, count in tasks.items())


def _hours(hours: float) -> str:
    # Four decimals for tiny grids: a smoke grid's seconds should not read as zero hours.
    return f"{hours:,.1f}" if hours >= 0.1 else f"{hours:.4f}"


def _mix_table(plan) -> Table:
    table = Table(title="Runs by intermediate mix")
    for column in ("mix", "tasks", "examples", "targets x seeds", "runs"):
        table.add_column(column, justify="right" if column in ("examples", "runs") else "left")
    targets, seeds = plan.grid.targets, plan.grid.seeds
    mixes = ([None] if plan.grid.baseline else []) + list(plan.grid.mixes)
    for mix in mixes:
        table.add_row(mix_label(mix), "(baseline: no intermediate training)" if mix is None
                      else _format_tasks(mix.tasks),
                      "0" if mix is None else f"{mix_volume(mix):,}",
                      f"{len(targets)} x {len(seeds)}", str(len(targets) * len(seeds)))
    return table


def _frequency_table(mixes) -> Table:
    frequencies = task_frequencies(mixes)
    correlations = task_volume_correlations(mixes)
    sizes = sorted({len(mix.tasks) for mix in mixes})
    table = Table(title="Task appearances by number of tasks in the mix")
    table.add_column("task")
    for size in sizes:
        table.add_column(f"{size} task{'s' if size > 1 else ''}", justify="right")
    table.add_column("total", justify="right")
    table.add_column("r(task, log2 volume)", justify="right")
    for task in sorted(frequencies):
        counts = frequencies[task]
        r = correlations[task]
        table.add_row(task, *(str(counts.get(size, 0)) for size in sizes),
                      str(sum(counts.values())), "n/a" if math.isnan(r) else f"{r:+.2f}")
    return table


def run(args) -> int:
    console = Console()
    try:
        grid = load_grid(args.grid)
    except SpecError as error:
        Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    # The grid's own tasks are registered nowhere; the mix table reads their training-set sizes.
    with task_scope(grid.tasks):
        _show(console, grid, args)
    return 0


def _show(console: Console, grid, args) -> None:
    from transferstats.grid.estimate import estimate_gpu_hours

    plan = expand_grid(grid, args.results)
    console.print(f"[bold]{grid.name}[/bold]: {grid.description}" if grid.description
                  else f"[bold]{grid.name}[/bold]")
    console.print(f"model {grid.model} ({grid.model_short}); targets {' '.join(grid.targets)}; "
                  f"seeds {' '.join(map(str, grid.seeds))}", highlight=False)
    console.print(_mix_table(plan))
    if args.runs:
        for job in plan.target_jobs:
            console.print(job.run_id, highlight=False)
    baselines = sum(job.mix is None for job in plan.target_jobs)
    console.print(f"{len(plan.intermediate_jobs)} intermediate trainings, "
                  f"{len(plan.target_jobs)} target trainings ({baselines} baselines)",
                  highlight=False)
    estimate = estimate_gpu_hours(plan)
    console.print(f"estimated GPU hours: {_hours(estimate.total_hours)} (intermediate "
                  f"{_hours(estimate.intermediate_hours)} + target "
                  f"{_hours(estimate.target_hours)})", highlight=False)
    console.print(f"  assuming {estimate.assumption}", highlight=False, markup=False)
    if grid.mixes:
        r = diversity_volume_correlation(grid.mixes)
        varied = varying_factor(np.array([len(m.tasks) for m in grid.mixes], dtype=float),
                                np.array([mix_volume(m) for m in grid.mixes], dtype=float))
        shown = f"{r:+.3f}" if varied == "both" and not math.isnan(r) else \
            f"undefined ({'neither varies' if varied == 'neither' else 'only ' + varied + ' varies'})"
        console.print(f"diversity-volume correlation: r = {shown} (Pearson, log2 tasks vs log2 "
                      f"examples, over {len(grid.mixes)} mixes)", highlight=False)
        if varied in ("diversity", "volume"):
            console.print(f"only {varied} varies: analyze will estimate the {varied} effect "
                          f"(verdict {varied}_only) and cannot compare it with the other factor; "
                          "`transferstats power` plans for that effect", highlight=False,
                          markup=False)
        console.print(_frequency_table(grid.mixes))
