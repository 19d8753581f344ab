"""Run a grid on Slurm through submitit, as two job arrays.

Array 1 trains the encoders and runs the baselines; array 2, the targets that start from an
encoder, waits for array 1 (``afterany``: a target whose encoder failed records that failure
instead of hanging on a dependency that can never be met). Each array task is one unit executed
by :func:`transferstats.grid.worker.execute_unit`, so claims, skipping, logs and failure records
are the same as locally. A preempted or timed-out task is requeued by submitit (:class:`GridTask`
is checkpointable): it takes its claim straight back (the claim carries its Slurm job id), skips
the units it depends on that finished (a target run whose encoder finished does not train the
encoder again), and the unit's training resumes from its last checkpoint. The training loop
writes one every ``checkpoint_steps`` steps and one at the end of the step during which
submitit's warning signal (SIGUSR2) arrived, before letting submitit requeue the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transferstats.grid import layout, worker
from transferstats.grid.expand import GridPlan
from transferstats.train.jobs import IntermediateJob, TargetJob

CLUSTERS = ("slurm", "local")


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of every array task; ``parallelism`` caps the tasks of an array running at once."""

    partition: str | None = None
    time_minutes: int = 24 * 60
    gpus: int = 1
    memory: str | None = None
    account: str | None = None
    parallelism: int = 32
    cpus_per_task: int = 8


class GridTask:
    """The callable each array task runs; submitit requeues it on preemption and timeout."""

    def __init__(self, phases: worker.Phases, retry_failed: bool):
        self.phases = phases
        self.retry_failed = retry_failed

    def __call__(self, unit: IntermediateJob | TargetJob,
                 encoder_job: IntermediateJob | None) -> str:
        return worker.execute_unit(unit, self.phases, encoder_job=encoder_job,
                                   retry_failed=self.retry_failed)

    def checkpoint(self, unit, encoder_job):
        # Requeue the same unit. A finished encoder is not trained again, and a training resumes
        # from the checkpoint the loop wrote on this very signal (see the module docstring).
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, unit, encoder_job)


class SlurmExecutor:
    """Submits a :class:`~transferstats.grid.expand.GridPlan` as job arrays.

    ``cluster="local"`` runs the same arrays through submitit's local executor (for tests and
    workstations); then array 2 is submitted once array 1 has finished and :meth:`run` waits for
    both. On Slurm :meth:`run` returns right after submitting.
    """

    def __init__(self, options: SlurmOptions, *, phases: worker.Phases | None = None,
                 retry_failed: bool = False, cluster: str = "slurm"):
        if cluster not in CLUSTERS:
            raise ValueError(f"cluster must be one of {CLUSTERS}, got {cluster!r}")
        self.options = options
        self.phases = phases
        self.retry_failed = retry_failed
        self.cluster = cluster

    def _executor(self, folder: Path, name: str, dependency: str | None):
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        options = self.options
        parameters = {"name": name, "timeout_min": options.time_minutes,
                      "cpus_per_task": options.cpus_per_task,
                      "slurm_array_parallelism": options.parallelism}
        if options.gpus:
            parameters["gpus_per_node"] = options.gpus
        if options.partition:
            parameters["slurm_partition"] = options.partition
        if options.memory:
            parameters["slurm_mem"] = options.memory
        if options.account:
            parameters["slurm_account"] = options.account
        if dependency:
            parameters["slurm_additional_parameters"] = {"dependency": dependency}
        executor.update_parameters(**parameters)
        return executor

    def _stages(self, plan: GridPlan):
        encoder_jobs = {job.output_dir: job for job in plan.intermediate_jobs}
        first: list[tuple[IntermediateJob | TargetJob, IntermediateJob | None]]
        first = [(job, None) for job in plan.intermediate_jobs]
        first += [(job, None) for job in plan.target_jobs if job.encoder is None]
        second = [(job, encoder_jobs[job.encoder]) for job in plan.target_jobs
                  if job.encoder is not None]
        return self._needing_work(first), self._needing_work(second)

    def _needing_work(self, units):
        return [(unit, encoder) for unit, encoder in units
                if worker.settled_outcome(unit, self.retry_failed) is None]

    def _submit(self, executor, units) -> list:
        task = GridTask(self.phases or worker.training_phases(), self.retry_failed)
        with executor.batch():
            jobs = [executor.submit(task, unit, encoder_job) for unit, encoder_job in units]
        return jobs

    def run(self, plan: GridPlan, results_dir: Path) -> list:
        """Submit the grid; returns the submitit jobs (both arrays)."""
        folder = layout.Layout(Path(results_dir)).submitit_dir / "%j"
        name = f"ts-{plan.grid.name}"
        first, second = self._stages(plan)
        jobs = self._submit(self._executor(folder, name, None), first) if first else []
        if self.cluster == "local":
            for job in jobs:
                job.result()
        dependency = None
        if jobs and self.cluster == "slurm":
            dependency = f"afterany:{jobs[0].job_id.split('_')[0]}"
        later = self._submit(self._executor(folder, name, dependency), second) if second else []
        if self.cluster == "local":
            for job in later:
                job.result()
        return jobs + later
