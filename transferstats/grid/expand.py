"""Expand a grid into the jobs the executors run: one phase-2 encoder per (mix, seed), shared by
every target run that starts from it, and one phase-3 run per (mix or baseline, target, seed).

Every job carries the grid's own tasks (:attr:`GridSpec.tasks`), because it may run in another
process (a local worker, a Slurm job) where only the built-in and registered tasks are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transferstats.grid.spec import GridSpec
from transferstats.results import BASELINE_MIX
from transferstats.tasks import get_task, task_scope
from transferstats.train.jobs import IntermediateJob, Mix, TargetJob

# Encoders live in a hidden folder of the results folder, which the analysis ignores.
ENCODERS_DIR = ".encoders"


def mix_label(mix: Mix | None) -> str:
    """A mix's name; the baseline's (``none``) for no mix."""
    return BASELINE_MIX if mix is None else mix.name


def run_id(grid: GridSpec, mix: Mix | None, target: str, seed: int) -> str:
    """``<model-short>.<mix>.<target>.s<seed>``: unique per run and safe as a folder name."""
    return f"{grid.model_short}.{mix_label(mix)}.{target}.s{seed}"


def encoder_name(grid: GridSpec, mix: Mix, seed: int) -> str:
    """``<model-short>.<mix>.s<seed>``: the folder of the encoder trained on ``mix``."""
    return f"{grid.model_short}.{mix.name}.s{seed}"


@dataclass(frozen=True)
class GridPlan:
    """The jobs of a grid: each phase-2 encoder once, then every target run (baselines included)."""

    grid: GridSpec
    intermediate_jobs: tuple[IntermediateJob, ...]
    target_jobs: tuple[TargetJob, ...]


def expand_grid(grid: GridSpec, results_dir: str | Path, *, model: str | None = None,
                data: dict | None = None) -> GridPlan:
    """Expand a grid into jobs writing under ``results_dir``.

    Parameters
    ----------
    grid
        The parsed grid.
    results_dir
        The results folder: target runs write ``<results_dir>/<run_id>``, encoders
        ``<results_dir>/.encoders/<name>``.
    model, data
        Replace the spec's (a prepare step supplies local assets); run ids keep the spec's short
        model name either way.

    Returns
    -------
    GridPlan
        The encoders and the target runs, in mix order (the baseline first), each job carrying
        ``grid.tasks``.
    """
    results_dir = Path(results_dir)
    model = model or grid.model
    data = grid.data if data is None else data
    intermediate_hp = grid.phase_hyperparameters("intermediate")
    target_hp = grid.phase_hyperparameters("target")
    # Each target evaluates the grid's languages it has; ``None`` means all of them.
    languages: dict[str, tuple[str, ...] | None] = dict.fromkeys(grid.targets)
    if grid.languages is not None:
        with task_scope(grid.tasks):
            languages = {target: tuple(code for code in get_task(target).languages
                                       if code in grid.languages) for target in grid.targets}
    intermediate_jobs, target_jobs = [], []
    mixes: list[Mix | None] = ([None] if grid.baseline else []) + list(grid.mixes)
    for mix in mixes:
        for seed in grid.seeds:
            encoder = None
            if mix is not None:
                encoder = results_dir / ENCODERS_DIR / encoder_name(grid, mix, seed)
                intermediate_jobs.append(IntermediateJob(
                    model=model, mix=mix, seed=seed, output_dir=encoder,
                    hyperparameters=intermediate_hp, data=data, tasks=grid.tasks))
            for target in grid.targets:
                target_jobs.append(TargetJob(
                    run_id=run_id(grid, mix, target, seed), model=model, mix=mix,
                    target_task=target, seed=seed, results_dir=results_dir, encoder=encoder,
                    hyperparameters=target_hp, data=data, languages=languages[target],
                    tasks=grid.tasks))
    return GridPlan(grid=grid, intermediate_jobs=tuple(intermediate_jobs),
                    target_jobs=tuple(target_jobs))
