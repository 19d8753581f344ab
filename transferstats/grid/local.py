"""Run a grid on this machine: one worker process per device slot (each visible GPU, or one CPU
slot), each unit in a fresh process so a crash, even a segfault, costs only that unit.

Encoders are scheduled before the targets that start from them; a target waits for its encoder's
unit to end here (complete or failed) before it is launched. Claims make it safe to run the same
grid from several machines or shells at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from transferstats.grid import layout, worker
from transferstats.grid.claims import try_claim
from transferstats.grid.expand import GridPlan
from transferstats.train.jobs import IntermediateJob, TargetJob

CPU = "cpu"
_OUTCOMES_BY_CODE = {code: outcome for outcome, code in worker.EXIT_CODES.items()}


@dataclass
class _Slot:
    device: str
    process: subprocess.Popen | None = None
    unit: IntermediateJob | TargetJob | None = None
    progress_task: int | None = None


@dataclass
class GridOutcome:
    """What one ``run`` did: outcome -> number of units, and the failures with their error."""

    counts: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _ordered_units(plan: GridPlan) -> list[tuple[IntermediateJob | TargetJob, IntermediateJob | None]]:
    """Each encoder followed by the targets that start from it, baselines first: a single slot
    then finishes whole mixes early instead of training every encoder before any target."""
    by_encoder: dict[Path | None, list[TargetJob]] = {}
    for job in plan.target_jobs:
        by_encoder.setdefault(job.encoder, []).append(job)
    units: list = [(job, None) for job in by_encoder.get(None, [])]
    for encoder_job in plan.intermediate_jobs:
        units.append((encoder_job, None))
        units += [(job, encoder_job) for job in by_encoder.get(encoder_job.output_dir, [])]
    return units


def _child_environment(device: str) -> dict:
    env = dict(os.environ)
    # The worker must unpickle what this process pickled (phase functions included), so it gets
    # this process's import path, as multiprocessing's spawn does.
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    env["CUDA_VISIBLE_DEVICES"] = "" if device == CPU else device
    return env


def _describe_error(unit) -> str:
    if isinstance(unit, IntermediateJob):
        return layout.encoder_failure(unit) or "unknown error"
    return layout.run_error(unit) or "unknown error"


class LocalExecutor:
    """Runs a :class:`~transferstats.grid.expand.GridPlan` with one worker process per device.

    ``devices``: ``["cpu"]`` for one CPU worker, or GPU ids (``["0", "1"]``), one worker each.
    ``phases``: the training phases, :func:`worker.training_phases` by default.
    """

    def __init__(self, devices=(CPU,), *, phases: worker.Phases | None = None,
                 retry_failed: bool = False, show_progress: bool = True,
                 console: Console | None = None, poll_seconds: float = 0.1):
        if not devices:
            raise ValueError("no devices to run on")
        self.devices = list(devices)
        self.phases = phases
        self.retry_failed = retry_failed
        self.show_progress = show_progress
        self.console = console or Console(stderr=True)
        self.poll_seconds = poll_seconds

    def run(self, plan: GridPlan) -> GridOutcome:
        phases = self.phases or worker.training_phases()
        outcome = GridOutcome()
        pending = _ordered_units(plan)
        settled_encoders: set[Path] = set()
        slots = [_Slot(device) for device in self.devices]
        with tempfile.TemporaryDirectory(prefix="transferstats-orders-") as orders_dir, \
                Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                         MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                         disable=not self.show_progress, transient=False) as progress:
            overall = progress.add_task(f"grid {plan.grid.name}", total=len(pending))
            try:
                while pending or any(slot.process for slot in slots):
                    for slot in slots:
                        if slot.process is None:
                            self._launch_next(slot, pending, settled_encoders, phases,
                                              Path(orders_dir), progress, outcome, overall)
                    time.sleep(self.poll_seconds)
                    for slot in slots:
                        if slot.process is not None and slot.process.poll() is not None:
                            self._collect(slot, settled_encoders, outcome, progress, overall)
            except BaseException:
                for slot in slots:
                    if slot.process is not None:
                        slot.process.terminate()
                        slot.process.wait()
                raise
        return outcome

    def _settle(self, unit, settled_encoders, outcome, progress, overall) -> bool:
        """Count a unit needing no work (complete, or failed and not retried) without starting
        a process for it; checked just before launch, as other workers may have finished it."""
        settled = worker.settled_outcome(unit, self.retry_failed)
        if settled is None:
            return False
        outcome.counts[settled] += 1
        if isinstance(unit, IntermediateJob):
            settled_encoders.add(unit.output_dir)
        progress.advance(overall)
        return True

    def _launch_next(self, slot, pending, settled_encoders, phases, orders_dir, progress,
                     outcome, overall):
        index = 0
        while index < len(pending):
            unit, encoder_job = pending[index]
            if encoder_job is not None and encoder_job.output_dir not in settled_encoders:
                index += 1
                continue
            del pending[index]
            if self._settle(unit, settled_encoders, outcome, progress, overall):
                continue
            name = layout.unit_name(unit)
            order = worker.write_order(
                worker.WorkOrder(unit, encoder_job, phases, self.retry_failed),
                orders_dir / f"{name}.pickle")
            slot.unit = unit
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "transferstats.grid.worker", str(order)],
                env=_child_environment(slot.device), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            slot.progress_task = progress.add_task(f"  [{slot.device}] {name}", total=None)
            return

    def _collect(self, slot, settled_encoders, outcome, progress, overall):
        unit, code = slot.unit, slot.process.returncode
        result = _OUTCOMES_BY_CODE.get(code)
        if result is None:
            result = worker.FAILED
            self._record_crash(unit, code)
        outcome.counts[result] += 1
        name = layout.unit_name(unit)
        if result == worker.FAILED:
            error = _describe_error(unit)
            outcome.failures.append((name, error))
            progress.console.print(f"[red]failed[/red] {name}: {error}")
        if isinstance(unit, IntermediateJob):
            settled_encoders.add(unit.output_dir)
        progress.remove_task(slot.progress_task)
        progress.advance(overall)
        slot.process = slot.unit = slot.progress_task = None

    @staticmethod
    def _record_crash(unit, code: int) -> None:
        """A worker that died without recording its outcome (killed, out of memory, segfault)."""
        error = (f"worker process died with signal {-code}" if code < 0
                 else f"worker process exited with code {code}")
        paths = layout.Layout(layout.results_dir_of(unit))
        error += f"; see {paths.log_path(unit)}"
        claim = try_claim(paths.claim_path(unit))
        if claim is None:
            return
        with claim:
            if worker.settled_outcome(unit, retry_failed=False) is not None:
                return
            if isinstance(unit, IntermediateJob):
                layout.write_encoder_failure(unit, error)
            else:
                worker.record_failure(unit, error, worker.now())

