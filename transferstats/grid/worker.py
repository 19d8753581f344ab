"""Execute one unit of a grid (an encoder's training or a target run) safely, wherever it runs.

Every executor ends here: the local executor in a child process (``python -m
transferstats.grid.worker UNIT_FILE``), the Slurm executor inside a submitit job. A unit is skipped
when already complete (or failed, unless retrying), claimed before it runs and re-checked once
claimed, so two workers never run it twice; its output goes to its own log; an exception is
recorded as a failure (``run.json`` with status ``failed``, or ``<encoder>.failed.json``) and never
stops the caller. The phases run with the unit's own tasks (a grid's ``[tasks]``) in scope: those
are registered nowhere, and this may be a fresh process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from transferstats.grid import layout
from transferstats.grid.claims import STALE_AFTER_SECONDS, try_claim
from transferstats.results import write_run
from transferstats.tasks import task_scope
from transferstats.train.jobs import IntermediateJob, TargetJob

# Outcomes of :func:`execute_unit`, also the worker process's exit codes.
RAN = "ran"
ALREADY_COMPLETE = "already complete"
FAILED = "failed"
FAILED_BEFORE = "failed before"
BUSY = "running elsewhere"
EXIT_CODES = {RAN: 0, FAILED: 1, BUSY: 3, ALREADY_COMPLETE: 10, FAILED_BEFORE: 11}


@dataclass(frozen=True)
class Phases:
    """The two training phases a worker calls; tests pass fakes that sleep, crash or fail."""

    intermediate: Callable[[IntermediateJob], Path]
    target: Callable[[TargetJob], Path]


def training_phases() -> Phases:
    """The real phases (imports torch)."""
    from transferstats.train.pipeline import run_intermediate, run_target

    return Phases(intermediate=run_intermediate, target=run_target)


class EncoderFailed(RuntimeError):
    """The encoder a target run starts from could not be trained."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors, so child libraries too) to
    ``path`` for the duration, appending across attempts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _error_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def settled_outcome(unit: IntermediateJob | TargetJob, retry_failed: bool) -> str | None:
    """``ALREADY_COMPLETE`` or ``FAILED_BEFORE`` when the unit needs no work, else ``None``."""
    if isinstance(unit, IntermediateJob):
        complete = layout.encoder_is_complete(unit)
        failed = layout.encoder_failure(unit) is not None
    else:
        status = layout.run_status(unit)
        complete, failed = status == "complete", status == "failed"
    if complete:
        return ALREADY_COMPLETE
    if failed and not retry_failed:
        return FAILED_BEFORE
    return None


def _execute_intermediate(job: IntermediateJob, phases: Phases, paths: layout.Layout,
                          retry_failed: bool, stale_after: float) -> str:
    if outcome := settled_outcome(job, retry_failed):
        return outcome
    claim = try_claim(paths.claim_path(job), stale_after=stale_after)
    if claim is None:
        return BUSY
    with claim:
        # Re-check once claimed: another worker may have finished it since the first check.
        if outcome := settled_outcome(job, retry_failed):
            return outcome
        with _output_to(paths.log_path(job)):
            print(f"[{now()}] training encoder {job.output_dir.name}", flush=True)
            for path in layout.remove_abandoned_saves(job):
                print(f"[{now()}] removed {path.name}, left by a training killed while saving",
                      flush=True)
            try:
                phases.intermediate(job)
            except Exception as error:  # noqa: BLE001 - any failure is recorded, never fatal
                traceback.print_exc()
                layout.write_encoder_failure(job, _error_line(error))
                return FAILED
            layout.encoder_failure_path(job).unlink(missing_ok=True)
            print(f"[{now()}] encoder complete", flush=True)
            return RAN


def _ensure_encoder(job: IntermediateJob, phases: Phases, paths: layout.Layout,
                    stale_after: float, poll_seconds: float) -> None:
    """Make sure the encoder exists: train it if nobody has, wait while another worker does."""
    while not layout.encoder_is_complete(job):
        error = layout.encoder_failure(job)
        if error is not None:
            raise EncoderFailed(f"intermediate training {job.output_dir.name} failed: {error}")
        if _execute_intermediate(job, phases, paths, False, stale_after) == BUSY:
            time.sleep(poll_seconds)


def record_failure(job: TargetJob, error: str, started_at: str) -> None:
    """Write a failed ``run.json`` for a target run."""
    mix = job.mix
    write_run(job.results_dir / job.run_id, {
        "run_id": job.run_id, "model": job.model,
        "intermediate": None if mix is None else {
            "name": mix.name, "tasks": dict(mix.tasks), "sampling": mix.sampling},
        "target_task": job.target_task, "seed": job.seed, "status": "failed", "error": error,
        "hyperparameters": dict(job.hyperparameters), "started_at": started_at,
        "finished_at": now(),
    })


def _execute_target(job: TargetJob, encoder_job: IntermediateJob | None, phases: Phases,
                    paths: layout.Layout, retry_failed: bool, stale_after: float,
                    poll_seconds: float) -> str:
    if outcome := settled_outcome(job, retry_failed):
        return outcome
    claim = try_claim(paths.claim_path(job), stale_after=stale_after)
    if claim is None:
        return BUSY
    with claim:
        if outcome := settled_outcome(job, retry_failed):
            return outcome
        started_at = now()
        with _output_to(paths.log_path(job)):
            print(f"[{started_at}] run {job.run_id}", flush=True)
            try:
                if encoder_job is not None:
                    _ensure_encoder(encoder_job, phases, paths, stale_after, poll_seconds)
                phases.target(job)
            except Exception as error:  # noqa: BLE001 - any failure is recorded, never fatal
                traceback.print_exc()
                # The target phase records its own failures; anything failing before it (or a
                # phase that could not) is recorded here, so every failure shows in ``status``.
                if layout.run_status(job) != "failed":
                    record_failure(job, _error_line(error), started_at)
                return FAILED
            print(f"[{now()}] run complete", flush=True)
            return RAN


def execute_unit(unit: IntermediateJob | TargetJob, phases: Phases, *,
                 encoder_job: IntermediateJob | None = None, retry_failed: bool = False,
                 stale_after: float = STALE_AFTER_SECONDS, poll_seconds: float = 5.0) -> str:
    """Run one unit unless it is complete, failed (and not retried) or running elsewhere; return
    the outcome. ``encoder_job`` is the intermediate training a target run starts from. The
    units' own tasks are known while they run."""
    paths = layout.Layout(layout.results_dir_of(unit))
    tasks = unit.tasks + (encoder_job.tasks if encoder_job is not None else ())
    with task_scope(tasks):
        if isinstance(unit, IntermediateJob):
            return _execute_intermediate(unit, phases, paths, retry_failed, stale_after)
        return _execute_target(unit, encoder_job, phases, paths, retry_failed, stale_after,
                               poll_seconds)


@dataclass(frozen=True)
class WorkOrder:
    """Everything a worker process needs, pickled to a file by the local executor."""

    unit: IntermediateJob | TargetJob
    encoder_job: IntermediateJob | None
    phases: Phases
    retry_failed: bool


def write_order(order: WorkOrder, path: Path) -> Path:
    path.write_bytes(pickle.dumps(order))
    return path


def main(argv: list[str] | None = None) -> int:
    (order_file,) = sys.argv[1:] if argv is None else argv
    order: WorkOrder = pickle.loads(Path(order_file).read_bytes())
    outcome = execute_unit(order.unit, order.phases, encoder_job=order.encoder_job,
                           retry_failed=order.retry_failed)
    return EXIT_CODES[outcome]


if __name__ == "__main__":
    sys.exit(main())
