"""GPU-hour estimate of a grid: training examples x epochs / an assumed throughput per model size.

The throughputs are round planning numbers for one A100/H100-class GPU, mixed precision, maximum
sequence length 256, forward and backward pass; a grid's ``[estimate] examples_per_second``
replaces them when the user has measured their own, and ``[estimate] target_examples`` caps the
examples a target trains on (for grids on small data, like the smoke grid).
"""

from __future__ import annotations

from dataclasses import dataclass

from transferstats.grid.expand import GridPlan
from transferstats.grid.factorial import mix_volume
from transferstats.tasks import get_task, task_scope

# English training examples each target fine-tunes on (XTREME, Hu et al. 2020, Table 1). The
# retrieval targets are evaluated zero-shot with no fine-tuning.
TARGET_TRAIN_SIZES = {"xnli": 392_702, "pawsx": 49_401, "udpos": 21_253, "panx": 20_000,
                      "xquad": 87_599, "mlqa": 87_599, "tydiqa": 3_696, "bucc2018": 0,
                      "tatoeba": 0}
EXAMPLES_PER_SECOND = {"large": 60.0, "base": 180.0, "tiny": 2000.0}
DEFAULT_EPOCHS = 3  # the training phases' defaults
DEFAULT_BATCH_SIZE = 32
EVALUATION_OVERHEAD = 0.10  # evaluation adds this fraction to a fine-tuning's time
RETRIEVAL_EVALUATION_HOURS = 0.1  # a retrieval target's whole run: embedding the test sentences


def model_size(model: str, prepared: bool) -> str:
    """``large``, ``base`` or ``tiny`` from the model name; unknown names count as large."""
    name = model.lower()
    if prepared or "tiny" in name or "smoke" in name:
        return "tiny"
    return "base" if "base" in name else "large"


def _examples_processed(examples: int, hyperparameters: dict) -> float:
    """Training examples seen: ``max_steps`` batches when set (it wins over epochs), else epochs
    over the data."""
    if hyperparameters.get("max_steps"):
        return hyperparameters["max_steps"] * hyperparameters.get("batch_size", DEFAULT_BATCH_SIZE)
    return examples * hyperparameters.get("epochs", DEFAULT_EPOCHS)


def _target_train_size(task_id: str) -> int | None:
    """English training examples of a target; 0 for retrieval (no fine-tuning); ``None`` when
    unknown (a user task without ``data.train_size``)."""
    task = get_task(task_id)
    if task.format == "retrieval":
        return 0
    return TARGET_TRAIN_SIZES.get(task_id, task.data.get("train_size"))


@dataclass(frozen=True)
class GpuEstimate:
    intermediate_hours: float
    target_hours: float
    examples_per_second: float
    assumption: str

    @property
    def total_hours(self) -> float:
        return self.intermediate_hours + self.target_hours


def estimate_gpu_hours(plan: GridPlan) -> GpuEstimate:
    """GPU hours of every job of a plan, with the assumptions behind them.

    Parameters
    ----------
    plan
        The expanded grid; its own tasks (``plan.grid.tasks``) are looked up in their scope.

    Returns
    -------
    GpuEstimate
        Hours of the intermediate and target phases; targets of unknown training size are left
        out and named in ``assumption``.
    """
    grid = plan.grid
    size = model_size(grid.model, grid.prepare is not None)
    speed = grid.examples_per_second or EXAMPLES_PER_SECOND[size]
    source = ("[estimate] examples_per_second" if grid.examples_per_second
              else f"assumed for a {size} model on one A100/H100-class GPU, bf16, length 256")
    trained = sum(_examples_processed(mix_volume(job.mix), job.hyperparameters)
                  for job in plan.intermediate_jobs)
    intermediate_seconds = trained / speed
    target_seconds = retrieval_seconds = 0.0
    unknown: set[str] = set()
    with task_scope(grid.tasks):
        target_sizes = {target: _target_train_size(target) for target in grid.targets}
    for job in plan.target_jobs:
        examples = target_sizes[job.target_task]
        if examples is None:
            unknown.add(job.target_task)
        elif examples == 0:
            retrieval_seconds += RETRIEVAL_EVALUATION_HOURS * 3600
        else:
            examples = min(examples, grid.target_examples or examples)
            target_seconds += _examples_processed(examples, job.hyperparameters) / speed
    overhead = 1 + EVALUATION_OVERHEAD
    assumption = (f"{speed:g} training examples/s ({source}); epochs from the hyperparameters "
                  f"(default {DEFAULT_EPOCHS}); evaluation +{EVALUATION_OVERHEAD:.0%}; retrieval "
                  f"targets {RETRIEVAL_EVALUATION_HOURS} h each")
    if unknown:
        assumption += (f"; not counted: {', '.join(sorted(unknown))} (no known training size; "
                       "set data.train_size in its [tasks] table)")
    return GpuEstimate(intermediate_hours=intermediate_seconds * overhead / 3600,
                       target_hours=(target_seconds * overhead + retrieval_seconds) / 3600,
                       examples_per_second=speed, assumption=assumption)
