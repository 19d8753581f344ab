"""The units of work that executors hand to the training phases. Plain data, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transferstats.tasks import Task

SAMPLING = ("proportional", "temperature", "uniform")


@dataclass(frozen=True)
class Mix:
    """An intermediate mix: task id -> number of training examples to use, and how to sample them."""

    name: str
    tasks: dict[str, int]
    sampling: str = "proportional"
    temperature: float = 1.0

    def __post_init__(self):
        if self.sampling not in SAMPLING:
            raise ValueError(f"mix {self.name!r}: sampling must be one of {SAMPLING}, "
                             f"got {self.sampling!r}")


@dataclass(frozen=True)
class IntermediateJob:
    """Phase 2 for one (model, mix, seed): train the shared encoder, save it to ``output_dir``.

    The saved folder holds the encoder (``save_pretrained``), its tokenizer, and
    ``examples_used.json`` (task -> examples actually used); it is written under a temporary name
    and renamed, so its existence means it is complete.

    ``tasks`` are user tasks the job's task ids may name that are not registered (a grid's own
    ``[tasks]``); they travel with the job, and the grid's worker runs it inside
    ``task_scope(job.tasks)``.
    """

    model: str
    mix: Mix
    seed: int
    output_dir: Path
    hyperparameters: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    device: str | None = None
    tasks: tuple[Task, ...] = ()


@dataclass(frozen=True)
class TargetJob:
    """Phase 3 for one run: fine-tune on the English target data, evaluate zero-shot, write
    ``results_dir/run_id`` by the results contract.

    ``encoder`` is the phase-2 output folder, or ``None`` for the baseline (start from ``model``).
    ``languages`` restricts evaluation (``None``: every language of the task). ``tasks``: as for
    :class:`IntermediateJob`.
    """

    run_id: str
    model: str
    mix: Mix | None
    target_task: str
    seed: int
    results_dir: Path
    encoder: Path | None = None
    hyperparameters: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    languages: tuple[str, ...] | None = None
    device: str | None = None
    tasks: tuple[Task, ...] = ()
