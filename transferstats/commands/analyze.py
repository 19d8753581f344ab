"""``transferstats analyze results/``: test diversity against volume and write the report."""

from __future__ import annotations

import argparse

from transferstats.analysis.derive import AUTO_OUTCOME, DIVERSITY_MEASURES, OUTCOMES
from transferstats.problems import PROBLEMS_FILE

# Options that are analysis spec keys, passed to ``ts.analyze`` under the same name.
SPEC_OPTIONS = ("name", "outcome", "diversity", "metric", "split", "model", "resamples", "seed", "level",
                "random_slopes", "df_method",
                "interval", "interaction", "target_mix", "include_english", "identity", "covariates",
                "scheduler")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder (any depth) or flat table (.csv/.parquet/.jsonl)")
    parser.add_argument("--spec", help="analysis specification (TOML); options below override it")
    parser.add_argument("--out", help="report folder (default: reports/<name>)")
    parser.add_argument("--name", help="report name (default from the spec: 'report')")
    parser.add_argument("--outcome", choices=[AUTO_OUTCOME, *OUTCOMES],
                        help="default: auto (improvement when the results hold baseline runs, "
                             "else score)")
    parser.add_argument("--diversity", choices=list(DIVERSITY_MEASURES), help="default: n_tasks")
    parser.add_argument("--metric", help="metric to analyse (default: each target's headline metric)")
    parser.add_argument("--split", action="append", default=None, metavar="[TARGET=]SPLIT",
                        help="the split analysed: SPLIT for every target or TARGET=SPLIT for one; "
                             "repeatable (default: auto, each target's only split, else test)")
    parser.add_argument("--model", help="model to analyse when the results hold several")
    parser.add_argument("--resamples", type=int, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    parser.add_argument("--level", type=float, help="interval level (default 0.95)")
    parser.add_argument("--interval", choices=["bca", "percentile"], help="default: bca")
    parser.add_argument("--no-interaction", dest="interaction", action="store_false", default=None,
                        help="leave the diversity x volume interaction out of the model")
    parser.add_argument("--no-target-mix", dest="target_mix", action="store_false", default=None,
                        help="leave the random intercept per (mix, target) out of the model")
    parser.add_argument("--include-english", dest="include_english", action="store_true", default=None,
                        help="keep English rows in row-level outcomes (not zero-shot); default: "
                             "auto (left out for task mixes, kept for language mixes)")
    parser.add_argument("--exclude-english", dest="include_english", action="store_false",
                        help="leave English rows out of row-level outcomes, whatever the mixes")
    parser.add_argument("--tasks", action="append", default=[],
                        help="TOML file registering your own tasks ([tasks.<id>] tables); repeatable")
    parser.add_argument("--problems-file", default=PROBLEMS_FILE,
                        help="where every problem is written, one per line, when the analysis is "
                             "refused and the printed list groups them (default: %(default)s)")
    parser.add_argument("--identity", choices=["auto", "on", "off"],
                        help="task identity effects by share of the mix ('diversity beyond "
                             "identity'): auto (default) uses them when the grid can estimate "
                             "them, on insists, off never")
    parser.add_argument("--covariate", dest="covariates", action="append", default=None,
                        metavar="NAME",
                        help="add a centred fixed effect outside the contrast: a numeric column "
                             "of the flat table, a key of run.json's 'covariates', or "
                             "target_in_mix; repeatable")
    parser.add_argument("--random-slopes", dest="random_slopes", choices=["auto", "on", "off"],
                        help="target-specific slopes of diversity and volume: auto (default) "
                             "where the design allows them (>= 3 targets, the factor varies "
                             "within them), on insists, off never")
    parser.add_argument("--df-method", dest="df_method", choices=["satterthwaite", "kenward-roger"],
                        help="degrees of freedom of the Wald t intervals of a model with slopes "
                             "(default: satterthwaite; kenward-roger for small models)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="bootstrap worker processes (default: all cores)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="refit the resamples on this Dask scheduler (tcp://host:8786; needs "
                             "the dask extra; default: DASK_SCHEDULER_ADDRESS if set, else local "
                             "processes; 'local': local processes)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    import transferstats as ts
    from transferstats.problems import print_problems
    from transferstats.report.terminal import summary

    console = Console(stderr=True)
    options = {key: getattr(args, key) for key in SPEC_OPTIONS if getattr(args, key) is not None}
    try:
        result = ts.analyze(args.results, spec=args.spec, jobs=args.jobs, tasks=args.tasks, **options)
    except ts.ResultsError as error:
        print_problems(error.problems, console, full_list=args.problems_file)
        console.print("[bold red]analysis refused: fix the errors above (no report was written)[/]")
        return 2
    except ValueError as error:
        console.print(f"error: {error}", style="red", markup=False, highlight=False)
        return 2
    out = Path(args.out) if args.out else Path("reports") / result.settings.name
    with console.status(f"writing the report to {out}"):
        result.write_report(out)
    Console().print(summary(result))
    Console().print(f"report: [bold]{out}/report.html[/]", highlight=False)
    return 0
