"""``transferstats import FORMAT SOURCE --manifest M.toml --out results/``: other tools' results
as runs in the contract (docs/importers.md)."""

from __future__ import annotations

import argparse

from transferstats.importers import FORMATS
from transferstats.problems import PROBLEMS_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=list(FORMATS),
                        help="lm-eval (lm-evaluation-harness results_*.json), hf-trainer "
                             "(Trainer *_results.json) or jiant (val_metrics.json run folders)")
    parser.add_argument("source", help="folder holding the tool's output (searched at any depth)")
    parser.add_argument("--manifest", required=True,
                        help="TOML file giving each source run its model, mix, seed (and target)")
    parser.add_argument("--out", required=True,
                        help="results folder to write the runs into (created; runs already there "
                             "are kept)")
    parser.add_argument("--tasks", action="append", default=[],
                        help="TOML file registering your own tasks ([tasks.<id>] tables); repeatable")
    parser.add_argument("--problems-file", default=PROBLEMS_FILE,
                        help="where every problem is written, one per line, when the printed list "
                             "groups them (default: %(default)s in the current folder)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from transferstats.importers import import_results
    from transferstats.problems import ResultsError, print_problems
    from transferstats.tasks import read_task_file

    console = Console(stderr=True)
    try:
        tasks = [task for path in args.tasks for task in read_task_file(path)]
        summary = import_results(args.format, args.source, args.manifest, args.out, tasks=tasks)
    except ResultsError as error:
        print_problems(error.problems, console, full_list=args.problems_file)
        console.print(f"import refused: nothing written to {args.out}", style="bold red",
                      markup=False, highlight=False)
        return 2
    except ValueError as error:  # a task file that cannot be read or clashes with a known task
        console.print(f"error: {error}", style="red", markup=False, highlight=False)
        return 2
    unchanged = f" ({len(summary.unchanged)} already there, unchanged)" if summary.unchanged else ""
    Console().print(f"imported {len(summary.written)} run(s) into {summary.out}{unchanged}",
                    style="bold green", markup=False, highlight=False)
    return 0
