"""``transferstats validate results/``: list every problem of a results folder or table."""

from __future__ import annotations

import argparse

from transferstats.problems import PROBLEMS_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder (any depth) or flat table (.csv/.parquet/.jsonl)")
    parser.add_argument("--tasks", action="append", default=[],
                        help="TOML file registering your own tasks ([tasks.<id>] tables); repeatable")
    parser.add_argument("--all", action="store_true",
                        help="print every problem on its own line instead of one line per kind")
    parser.add_argument("--problems-file", default=PROBLEMS_FILE,
                        help="where every problem is written, one per line, when the printed list "
                             "groups them (default: %(default)s in the current folder; a .csv "
                             "name writes CSV)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    import transferstats as ts
    from transferstats.problems import print_problems

    console = Console()
    try:
        loaded = ts.load_results(args.results, tasks=args.tasks, strict=False)
    except ValueError as error:  # a task file that cannot be read
        console.print(f"error: {error}", style="red", markup=False, highlight=False)
        return 2
    except ts.ResultsError as error:
        problems, runs = error.problems, 0
    else:
        problems, runs = loaded.problems, len(loaded.runs)
    if args.all:
        for problem in problems:
            style = "red" if problem.severity == "error" else "yellow"
            console.print(str(problem), style=style, markup=False, highlight=False, soft_wrap=True)
    else:
        print_problems(problems, console, full_list=args.problems_file)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    summary = f"{runs} run(s) read; {errors} error(s), {warnings} warning(s)"
    console.print(f"[bold {'red' if errors else 'green'}]{summary}[/]")
    return 1 if errors else 0
