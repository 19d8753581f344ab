"""Helpers for grid tests: a small grid run with the fake phases of :mod:`fake_phases`."""

from __future__ import annotations

from pathlib import Path

import fake_phases
from transferstats.grid.expand import expand_grid
from transferstats.grid.spec import grid_from_dict
from transferstats.grid.worker import Phases

HERE = Path(__file__).parent

FAKE_PHASES = Phases(intermediate=fake_phases.fake_intermediate, target=fake_phases.fake_target)


def small_grid(**data):
    """Baseline + two mixes, two targets, one seed: 2 encoders and 6 target runs."""
    return grid_from_dict({
        "name": "small", "model": "xlm-roberta-base", "targets": ["xnli", "pawsx"], "seeds": [1],
        "mixes": [{"name": "a", "tasks": {"mnli": 100}},
                  {"name": "b", "tasks": {"mnli": 50, "squad_v1": 50}}],
        "data": data,
    }, "small-grid")


def small_plan(results_dir: Path, **data):
    return expand_grid(small_grid(**data), results_dir)


def user_task_plan(results_dir: Path, **data):
    """A mix of a built-in and a user intermediate task, and a user target: 1 encoder and 2 target
    runs whose tasks only the grid knows."""
    return expand_grid(grid_from_dict({
        "name": "user-tasks", "model": "xlm-roberta-base", "targets": ["mytarget"], "seeds": [1],
        "mixes": [{"name": "mine", "tasks": {"mnli": 50, "myinter": 50}}],
        "tasks": {"myinter": {"role": "intermediate", "format": "classification",
                              "metric": "accuracy"},
                  "mytarget": {"role": "target", "format": "classification",
                               "metric": "accuracy"}},
        "data": data,
    }, "user-task-grid"), results_dir)


def ledger_lines(path: Path) -> list[tuple[str, str]]:
    """(event, unit) pairs the fake phases wrote."""
    if not path.exists():
        return []
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines() if line.strip()]

