"""``transferstats simulate OUT/``: write a results folder (or, for ``OUT.csv``, a flat table) from
the documented generative model; ``--kind language`` simulates a grid of language mixes."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any


def _integers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _words(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _pair(text: str) -> tuple[str, float]:
    """``NAME=POINTS`` -> ``("NAME", POINTS)``."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=POINTS, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="folder to write the runs into (created), or a .csv file for "
                                    "one flat table")
    parser.add_argument("--kind", choices=["task", "language"], default=None,
                        help="what the mixes are made of: English intermediate tasks (default) "
                             "or source languages. 'language' changes the defaults to twelve "
                             "source languages, the targets xnli, pawsx, xquad, mlqa and tydiqa, "
                             "one seed, no baseline and --in-mix-effect 6 (docs/api.md)")
    parser.add_argument("--preset", choices=["realistic"], default=None,
                        help="realistic: the variance components and correlated target-specific "
                             "slopes of a public 1,079-mix language grid (target SD 5.6, "
                             "target-language SD 9.2, mix SD 0.69, residual 5.0, slope SDs 5.9 "
                             "and 3.1, correlation -0.98; docs/statistics.md), for --kind "
                             "language unless --kind task is given; options override it")
    _effect_arguments(parser)
    _identity_arguments(parser)
    _spread_arguments(parser)
    _grid_arguments(parser)


def _effect_arguments(parser: argparse.ArgumentParser) -> None:
    effects = parser.add_argument_group("effects (points of the headline metric)")
    effects.add_argument("--diversity-effect", type=float, default=None,
                         help="per doubling of the number of intermediate tasks (default 1.0)")
    effects.add_argument("--volume-effect", type=float, default=None,
                         help="per doubling of intermediate examples (default 0.5)")
    effects.add_argument("--interaction", type=float, default=None,
                         help="diversity x volume, per doubling of each (default 0)")
    effects.add_argument("--intercept", type=float, default=None,
                         help="mean improvement at the design centre (default 1.5)")
    effects.add_argument("--in-mix-effect", type=float, default=None,
                         help="points at full share of what is evaluated in the mix (the target's "
                              "own task; for language mixes the evaluated language): the "
                              "target_in_mix covariate's effect (default 0)")


def _identity_arguments(parser: argparse.ArgumentParser) -> None:
    identity = parser.add_argument_group(
        "which tasks (identity effects, composition, per-target effects)")
    identity.add_argument("--identity-effect", dest="identity_effects", type=_pair,
                          action="append", default=None, metavar="TASK=POINTS",
                          help="identity effect of an intermediate task, points at full share of "
                               "the mix; repeatable (default 0)")
    identity.add_argument("--identity-sd", type=float, default=0.0,
                          help="draw the other tasks' identity effects from N(0, SD^2) (default 0)")
    identity.add_argument("--composition", choices=["random", "concentrated"], default="random",
                          help="random: the planner's balanced draws; concentrated: each "
                               "multi-task mix gives half its examples to a strong task, "
                               "single-task mixes hold weak ones (default random)")
    identity.add_argument("--strong-tasks", type=_words, default=None,
                          help="the strong tasks of --composition concentrated, comma-separated "
                               "(default: the three with the largest identity effects)")
    identity.add_argument("--target-diversity-effect", dest="target_diversity_effects",
                          type=_pair, action="append", default=None, metavar="TARGET=POINTS",
                          help="a target's own diversity effect; repeatable")
    identity.add_argument("--target-volume-effect", dest="target_volume_effects", type=_pair,
                          action="append", default=None, metavar="TARGET=POINTS",
                          help="a target's own volume effect; repeatable")
    identity.add_argument("--target-diversity-sd", type=float, default=None,
                          help="SD across targets of their diversity effects (default 0)")
    identity.add_argument("--target-volume-sd", type=float, default=None,
                          help="SD across targets of their volume effects (default 0)")
    identity.add_argument("--target-slope-correlation", type=float, default=None,
                          help="correlation across targets of their diversity and volume "
                               "effects, drawn as a bivariate normal pair (default 0)")
    identity.add_argument("--uncentred-target-slopes", dest="centre_target_slopes",
                          action="store_false", default=None,
                          help="draw the targets' slopes around the common effects without "
                               "centring them, so the common effects are the population "
                               "average and the simulated targets average to something else, "
                               "as in a real grid (default: centred)")


def _spread_arguments(parser: argparse.ArgumentParser) -> None:
    spread = parser.add_argument_group("standard deviations")
    for name, default in (("target-sd", 1.0), ("language-sd", 0.8), ("target-language-sd", 0.6),
                          ("mix-sd", 0.5), ("seed-sd", 1.0)):
        spread.add_argument(f"--{name}", type=float, default=None, help=f"default {default}")
    spread.add_argument("--target-mix-sd", type=float, default=None,
                        help="target-by-mix: how much a mix helps some targets more than others "
                             "(default 0.5; 0 gives every target the same mix effect)")


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    grid = parser.add_argument_group("grid")
    grid.add_argument("--diversity-levels", type=_integers, default=(1, 2, 4, 8),
                      help="numbers of tasks (languages) per mix, comma-separated (default "
                           "1,2,4,8)")
    grid.add_argument("--volume-levels", type=_integers, default=(10_000, 40_000, 160_000),
                      help="total examples per mix (default 10000,40000,160000)")
    grid.add_argument("--draws", type=int, default=3, help="task draws per cell (default 3)")
    grid.add_argument("--seeds", type=_integers, default=None, help="default 1,2,3")
    grid.add_argument("--targets", type=_words, default=None, help="default: the nine XTREME targets")
    grid.add_argument("--members", dest="intermediate_tasks", type=_words, default=None,
                      help="the tasks (or, with --kind language, language codes) mixes are drawn "
                           "from, comma-separated (default: the built-in intermediate tasks)")
    grid.add_argument("--no-baseline", dest="baseline", action="store_false", default=None,
                      help="leave out the baseline runs (no intermediate training)")
    grid.add_argument("--max-languages", type=int, default=None,
                      help="non-English languages kept per target (default: all of XTREME's)")
    grid.add_argument("--random-state", type=int, default=0, help="generator seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from transferstats.simulate import (
        LANGUAGE_GRID,
        REALISTIC_COMPONENTS,
        SimulationSettings,
        simulate_results,
    )

    names = {f.name for f in fields(SimulationSettings)}
    values: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value
                              for key, value in vars(args).items()
                              if key in names and value is not None}
    if args.preset == "realistic":
        values = REALISTIC_COMPONENTS | values
    if (args.kind or ("language" if args.preset == "realistic" else "task")) == "language":
        values = LANGUAGE_GRID | values
    try:
        settings = SimulationSettings(**values)
    except ValueError as error:
        Console(stderr=True).print(f"error: {error}", style="red", markup=False)
        return 2
    out = simulate_results(args.out, settings, progress=True)
    average = settings.realised()["target_average_slopes"]
    Console().print(f"wrote simulated results to [bold]{out}[/] "
                    f"(true diversity effect {settings.diversity_effect}, volume effect "
                    f"{settings.volume_effect}, interaction {settings.interaction}; the "
                    f"simulated targets' own slopes average {average['diversity']:.3g} and "
                    f"{average['volume']:.3g})")
    return 0
