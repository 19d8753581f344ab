"""``transferstats power GRID``: will the grid answer the question, before any GPU hour is spent?

Simulates the grid (as ``plan`` expands it) under the generative model of
``transferstats.analysis.power`` and analyses every simulated grid as ``analyze`` would: the power
to get the verdict "supported" at a true difference, its Monte Carlo interval, the false-positive
rate, the minimum detectable difference and a power curve. ``--search`` looks for cheaper designs
(GPU hours from the same estimate as ``plan``) that reach the power. docs/power.md.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _simulations(text: str) -> int:
    value = _positive_int(text)
    if value < 100:
        raise argparse.ArgumentTypeError(f"use at least 100 simulations (the Monte Carlo error "
                                         f"of a power from {value} is too large), got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value}")
    return value


def _difference(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (points per doubling), got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"power is computed for a positive true difference "
                                         f"(diversity's effect larger than volume's), got {value}; "
                                         "the false-positive rate at 0 is always reported")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", type=Path, help="grid specification (runners/*.toml)")
    parser.add_argument("--difference", type=_difference, required=True,
                        help="true diversity effect minus volume effect to detect, points per "
                             "doubling (for a grid varying one of them: that factor's effect)")
    parser.add_argument("--pilot", help="pilot results (folder or flat table) to estimate the "
                                        "variance components from (default: documented guesses)")
    parser.add_argument("--power", type=_probability, default=0.8,
                        help="power the minimum detectable difference and the search aim at "
                             "(default 0.8)")
    parser.add_argument("--simulations", type=_simulations, default=1000,
                        help="simulated grids per design (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--search", action="store_true",
                        help="also search cheaper designs (draws, seeds, levels, languages) that "
                             "reach --power")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--out", type=Path,
                        help="folder for the figures (default: reports/power-<grid name>)")
    parser.add_argument("--calibration", type=_non_negative_int, default=None,
                        help="simulated grids analysed by analyze itself to calibrate the fast "
                             "stand-in (default 20; 0: uncalibrated Wald intervals)")
    parser.add_argument("--random-slopes", choices=("auto", "on", "off"), default="auto",
                        help="as analyze's setting: target-specific slopes of diversity and volume "
                             "in the analysed model where the design allows them (auto, the "
                             "default: at least 3 targets), always (on) or never (off); with "
                             "them each simulated grid gets analyze's own Wald t interval on "
                             "Satterthwaite df")
    parser.add_argument("--jobs", type=_positive_int, default=None,
                        help="worker processes (default: all cores)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the simulations on this Dask scheduler (tcp://host:8786; needs "
                             "the dask extra; default: DASK_SCHEDULER_ADDRESS if set, else local "
                             "processes; 'local': local processes)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from transferstats.analysis.power import PowerError
    from transferstats.grid.spec import SpecError, load_grid
    from transferstats.parallel import SchedulerError
    from transferstats.problems import ResultsError, print_problems

    console, errors = Console(), Console(stderr=True)
    try:
        grid = load_grid(args.grid)
    except SpecError as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    try:
        return _run(args, grid, console)
    except ResultsError as error:
        print_problems(error.problems, errors)
        errors.print("[bold red]the pilot cannot be used: fix the errors above[/]")
        return 2
    except (PowerError, SchedulerError) as error:
        errors.print(Text.assemble(("error: ", "red"), str(error)), highlight=False)
        return 2


def _run(args, grid, console) -> int:
    import json

    from transferstats.analysis import power as pw
    from transferstats.tasks import task_scope

    with task_scope(grid.tasks):
        design, notes = grid_design(grid)
    if args.pilot:
        console.print(f"fitting the pilot [bold]{args.pilot}[/] ...", highlight=False)
        components = pw.pilot_components(args.pilot)
    else:
        components = pw.default_components()
    calibration = pw.CALIBRATION_GRIDS if args.calibration is None else args.calibration
    result = pw.power_analysis(design, args.difference, components=components, power=args.power,
                               simulations=args.simulations, seed=args.seed, n_jobs=args.jobs,
                               progress=console.is_terminal, calibration_grids=calibration,
                               scheduler=args.scheduler, random_slopes=args.random_slopes)
    out = args.out or Path("reports") / f"power-{grid.name}"
    figures = pw.save_figures(pw.power_curve_figure(result), out, "power_curve")
    _print_result(console, result, notes, figures)

    search = None
    if args.search:
        with task_scope(grid.tasks):
            candidates = candidate_designs(grid)
        console.print(f"searching {len(candidates)} designs (draws, seeds, levels"
                      f"{', languages' if _languages_vary(grid) else ''}): each screened by a "
                      f"normal approximation, the cheapest promising ones simulated "
                      f"({max(200, args.simulations // 2)} simulations, {min(calibration, 8)} "
                      "calibration grids each) ...", highlight=False)
        search = pw.search_designs(candidates, args.difference, components, power=args.power,
                                   simulations=max(200, args.simulations // 2), seed=args.seed,
                                   n_jobs=args.jobs, progress=console.is_terminal,
                                   inflation=_inflation(result),
                                   inflation_identity=bool(result.model.identity.get("used")),
                                   calibration_grids=min(calibration, 8), scheduler=args.scheduler,
                                   random_slopes=args.random_slopes)
        result.designs += search.rows
        cost = pw.save_figures(pw.cost_power_figure(search.rows, args.power, result.designs[0]),
                               out, "cost_power")
        _print_search(console, search, result, cost)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = result.to_dict() | {"grid": str(args.grid), "notes": notes,
                                       "figures": {k: str(v) for k, v in figures.items()}}
        args.json.write_text(json.dumps(_clean(document), indent=2) + "\n")
        console.print(f"wrote {args.json}", highlight=False)
    return 0


def _inflation(result) -> float:
    """The bootstrap's interval width relative to the Wald one, measured on the grid: scales the
    search's screen (1 without calibration)."""
    sims = result.simulations
    if sims.calibration is None or not len(sims.calibration.lower):
        return 1.0
    import numpy as np
    from scipy import stats

    return float(np.mean(sims.calibration.lower) / stats.norm.ppf((1 + sims.level) / 2))


def _clean(value):
    """NaN and infinities as null, numpy scalars as numbers: strict JSON."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------
# Grid -> design


def grid_design(grid, *, all_languages: bool = False, name: str | None = None,
                settings: dict | None = None):
    """The rows ``analyze`` would model for this grid (as ``plan`` expands it), with its GPU
    hours; also notes on what the analysis will not see. Call inside ``task_scope(grid.tasks)``."""
    from transferstats.analysis.power import GridDesign, PowerError
    from transferstats.grid.estimate import estimate_gpu_hours
    from transferstats.grid.expand import expand_grid
    from transferstats.tasks import get_task

    plan = expand_grid(grid, "results")
    notes = []
    languages: dict[str, tuple[str, ...]] = {}
    for job in plan.target_jobs:
        if job.target_task in languages:
            continue
        evaluated = get_task(job.target_task).languages if (job.languages is None or all_languages) \
            else job.languages
        languages[job.target_task] = tuple(code for code in evaluated if code != "en")
    for target in [t for t, codes in languages.items() if not codes]:
        notes.append(f"target {target} is evaluated in English only: no zero-shot rows, left out")
        del languages[target]
    if not languages:
        raise PowerError("no target is evaluated in a non-English language: the analysis has no "
                         "zero-shot rows to model")
    if not grid.mixes:
        raise PowerError("the grid has no intermediate mixes (baseline only): nothing to compare")
    if not grid.baseline:
        notes.append("baseline = false: analyze will analyse the score (its default outcome, "
                     "auto, needs baseline runs for the improvement); the power assumes the "
                     "improvement's model, which has the same fixed effects")
    mixes = tuple((mix.name, tuple(mix.tasks.items())) for mix in grid.mixes)
    hours = estimate_gpu_hours(plan).total_hours
    return GridDesign(name=name or grid.name, mixes=mixes, languages=languages,
                      seeds=len(grid.seeds), gpu_hours=hours,
                      settings=settings or _settings(grid, all_languages)), notes


def _settings(grid, all_languages: bool = False) -> dict:
    settings: dict = {"seeds": len(grid.seeds),
                      "languages": "all" if (all_languages or grid.languages is None)
                      else f"{len(grid.languages)} listed"}
    if grid.factorial is not None:
        settings |= {"diversity": list(grid.factorial.diversity),
                     "volume": list(grid.factorial.volume), "draws": grid.factorial.draws}
    return settings


def _languages_vary(grid) -> bool:
    # A grid on prepared (synthetic) assets has only the languages it lists.
    return grid.languages is not None and grid.prepare is None


#: Balancing iterations when generating a candidate's mixes: which tasks a mix holds does not
#: enter the power model, only the cell's number of tasks and volume and whether the cell can be
#: filled. The chosen design's grid regenerates them with its own iterations.
SEARCH_ITERATIONS = 300


def _subsets(levels: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(levels) < 2:
        return [tuple(levels)]
    return [combo for size in range(2, len(levels) + 1)
            for combo in itertools.combinations(levels, size)]


def candidate_designs(grid) -> list:
    """The designs ``--search`` compares: the grid's diversity and volume levels (every subset of
    at least two), draws per cell (1 to the grid's + 2, where the tasks can fill them), seeds (1
    to the grid's + 2) and, when the grid lists languages and is not on synthetic assets, all of
    each target's languages. Call inside ``task_scope(grid.tasks)``."""
    from dataclasses import replace

    from transferstats.analysis.power import PowerError
    from transferstats.grid.factorial import DesignError, factorial_mixes

    explicit = tuple(m for m in grid.mixes if grid.factorial is None
                     or not _is_factorial_name(m.name))
    mix_sets: list[tuple[dict, tuple]] = []
    if grid.factorial is not None:
        spec = grid.factorial
        for diversity in _subsets(spec.diversity):
            for volume in _subsets(spec.volume):
                for draws in range(1, spec.draws + 3):
                    variant = replace(spec, diversity=diversity, volume=volume, draws=draws,
                                      iterations=min(spec.iterations, SEARCH_ITERATIONS))
                    try:
                        mixes = factorial_mixes(variant, "search")
                    except DesignError:
                        continue
                    mix_sets.append(({"diversity": list(diversity), "volume": list(volume),
                                      "draws": draws}, explicit + mixes))
    else:
        mix_sets.append(({}, grid.mixes))
    seed_counts = range(1, len(grid.seeds) + 3)
    language_options = [False, True] if _languages_vary(grid) else [False]
    candidates = []
    for (levels, mixes), n_seeds, all_languages in itertools.product(mix_sets, seed_counts,
                                                                    language_options):
        seeds = _seeds(grid.seeds, n_seeds)
        variant = replace(grid, mixes=mixes, seeds=seeds)
        settings = levels | {"seeds": n_seeds,
                             "languages": "all" if (all_languages or grid.languages is None)
                             else f"{len(grid.languages)} listed"}
        name = ", ".join(f"{k} {v}" for k, v in settings.items())
        try:
            design, _ = grid_design(variant, all_languages=all_languages, name=name,
                                    settings=settings)
        except PowerError:
            continue
        candidates.append(design)
    return candidates


def _is_factorial_name(name: str) -> bool:
    import re

    return re.fullmatch(r"d\d+-v[0-9km]+-r\d+", name) is not None


def _seeds(seeds: tuple[int, ...], count: int) -> tuple[int, ...]:
    if count <= len(seeds):
        return tuple(seeds[:count])
    extra = range(max(seeds) + 1, max(seeds) + 1 + count - len(seeds))
    return tuple(seeds) + tuple(extra)


# --------------------------------------------------------------------------------------------
# Printing


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(ci) -> str:
    if ci is None:
        return ""
    low, high = ci
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _print_result(console, result, notes, figures) -> None:
    question = result.model.question.replace(" - ", " − ")
    _print_design(console, result, notes)
    _print_method(console, result, question)
    _print_power(console, result, question)
    _print_curve(console, result, question, figures)


def _print_design(console, result, notes) -> None:
    from transferstats.analysis.power import COMPONENTS, SLOPES

    design, model, components = result.design, result.model, result.components
    console.print(f"[bold]{design.name}[/bold]: {len(design.mixes)} mixes, {len(design.targets)} "
                  f"targets, {design.n_target_languages} target-languages, {design.seeds} seed(s); "
                  f"{design.n_rows:,} model rows; estimated {design.gpu_hours:,.1f} GPU hours",
                  highlight=False)
    if model.correlation is not None:
        console.print(f"diversity-volume correlation across mixes r = {model.correlation:+.3f}",
                      highlight=False)
    label = "pilot" if components.source == "pilot" else "documented defaults — guesses, not estimates"
    console.print(f"variance components (SD, points) from {label}: "
                  + ", ".join(f"{c.replace('_', ':')} {components.sd[c]:.2f}" for c in COMPONENTS)
                  + "; target slopes (SD, points per doubling): "
                  + ", ".join(f"{s} {components.slope_sd[s]:.2f}" for s in SLOPES)
                  + f", correlation {components.slope_correlation:+.2f}", highlight=False)
    for note in (*components.notes, *notes, *model.notes):
        console.print(f"  note: {note}", highlight=False, markup=False)
    console.print(f"analysis of each simulated grid: {model.formula}", highlight=False,
                  markup=False)
    console.print(f"  stand-in: {model.stand_in}", highlight=False, markup=False)


def _print_method(console, result, question) -> None:
    model = result.model
    calibration = result.simulations.calibration
    df = result.simulations.df
    if model.slopes and df is not None:
        console.print(f"  Satterthwaite df of the {question} interval: median "
                      f"{_fmt(_median(df), 1)} over the simulated grids", highlight=False)
    elif calibration is not None and len(calibration.lower):
        summary = calibration.summary(result.simulations.level)
        console.print(f"  calibrated on {summary['usable']} simulated grids analysed by analyze "
                      f"itself ({summary['resamples']} resamples): the lower end of its interval "
                      f"lies {summary['lower_over_z']['mean']:.2f} x z Wald SEs below the "
                      f"estimate on average"
                      + (f" (SD {summary['lower_over_z']['sd']:.2f} across grids)"
                         if summary['lower_over_z']['sd'] is not None else ""),
                      highlight=False)
    elif not model.blocked:
        console.print("  not calibrated (--calibration 0): plain Wald z intervals, which can be "
                      "narrower than analyze's bootstrap intervals", highlight=False)
    if model.blocked:
        console.print(f"[bold red]no verdict is possible[/]: {model.blocked}; power is 0 at any "
                      "difference", highlight=False)


def _print_power(console, result, question) -> None:
    from transferstats.analysis.power import CONTRAST

    model = result.model
    sims = result.simulations
    verdict = '"supported"' if model.question == CONTRAST else f"a positive {question} effect"
    console.print(f"[bold]power[/bold] to get {verdict} at true {question} = {result.difference:g}: "
                  f"[bold]{result.power:.3f}[/bold] {_interval(result.power_ci)} "
                  f"(95% Wilson interval, {sims.n} simulations, seed {result.seed})",
                  highlight=False)
    console.print(f"false-positive rate at {question} = 0: {result.false_positive_rate:.3f} "
                  f"{_interval(result.false_positive_ci)} (a directional verdict either way; "
                  f"nominal {1 - sims.level:.2f})", highlight=False)
    mdd = result.minimum_detectable_difference
    if mdd is None:
        console.print(f"minimum detectable {question} at power {result.target_power:g}: not "
                      "reached by this design", highlight=False)
    else:
        console.print(f"minimum detectable {question} at power {result.target_power:g}: "
                      f"[bold]{mdd:.3f}[/bold] {_interval(result.minimum_detectable_ci)} points per "
                      "doubling", highlight=False)
    failed = int(sims.fit_failed.sum())
    if failed and not model.blocked:
        console.print(f"  {failed} simulated fit(s) failed and count as no verdict", highlight=False)


def _print_curve(console, result, question, figures) -> None:
    from rich.table import Table

    table = Table(title="power curve")
    table.add_column(f"true {question}", justify="right")
    table.add_column("power", justify="right")
    table.add_column("95% MC interval", justify="right")
    curve = result.curve
    picks = sorted(set(curve.index[:: max(1, len(curve) // 8)]) | {len(curve) - 1})
    for index in picks:
        row = curve.loc[index]
        table.add_row(f"{row['difference']:.3f}", f"{row['power']:.3f}",
                      _interval((row["ci_low"], row["ci_high"])))
    console.print(table)
    console.print(f"power curve: {figures['png']} and {figures['pdf']}", highlight=False)


def _median(values):
    import numpy as np

    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) else None


def _print_search(console, search, result, figures) -> None:
    from rich.table import Table

    grid_row = result.designs[0]
    target = result.target_power
    if not search.chosen:
        best = max((r for r in search.rows if r.get("power") is not None),
                   key=lambda r: r["power"], default=None)
        console.print(f"[bold red]no searched design reaches power {target:g}[/] at this "
                      f"difference ({search.simulated} simulated)"
                      + (f"; the best simulated reaches {best['power']:.3f}" if best else ""),
                      highlight=False)
    # When none reaches the power, the simulated designs are shown instead: one may still be
    # cheaper than the grid and as powerful.
    shown = search.chosen or sorted(
        (r for r in search.rows if r.get("power") is not None and r is not grid_row),
        key=lambda r: r["gpu_hours"] or 0.0)
    title = f"cheapest designs reaching power {target:g}" if search.chosen else \
        f"simulated designs, cheapest first (none reaches power {target:g})"
    table = Table(title=f"{title} (of {len(search.rows)} screened, {search.simulated} simulated)")
    for column in ("design", "mixes", "target-langs", "seeds", "GPU hours", "power",
                   "95% MC interval", "MDD"):
        table.add_column(column, justify="left" if column == "design" else "right")
    rows = [("the grid as specified", grid_row)] + [("", r) for r in shown]
    for label, row in rows:
        description = label or _describe(row)
        table.add_row(description, str(row["mixes"]), str(row["target_languages"]),
                      str(row["seeds"]), f"{row['gpu_hours']:,.1f}", f"{row['power']:.3f}",
                      _interval(row["power_ci"]), _fmt(row["minimum_detectable_difference"], 3))
    console.print(table)
    console.print(f"cost against power: {figures['png']} and {figures['pdf']}", highlight=False)


def _describe(row: dict) -> str:
    parts = []
    if "diversity" in row:
        parts.append(f"diversity {','.join(map(str, row['diversity']))}")
        parts.append(f"volume {','.join(_examples(v) for v in row['volume'])}")
        parts.append(f"draws {row['draws']}")
    parts.append(f"languages {row['languages']}")
    return "; ".join(parts)


def _examples(value: int) -> str:
    if value % 1000 == 0:
        return f"{value // 1000}k"
    return str(value)
