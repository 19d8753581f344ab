"""Where a grid's bookkeeping lives inside the results folder.

``<results>/<run_id>/``              the results contract (written by the target phase)
``<results>/.<run_id>.checkpoint/``  a target run's training checkpoint, while it runs
``<results>/.encoders/<name>/``      phase-2 encoders, shared by every target of a (model, mix, seed)
``<results>/.encoders/.<name>.checkpoint/``  an encoder's training checkpoint, while it trains
``<results>/.encoders/.<name>.tmp-<pid>/``   an encoder being saved, renamed to ``<name>`` when done
``<results>/.encoders/<name>.failed.json``  why an encoder's training failed
``<results>/.claims/<name>.claim``   who is running a unit right now
``<results>/.logs/<name>.log``       everything a unit printed, across attempts
``<results>/.submitit/``             submitit's job files
"""

from __future__ import annotations

import glob
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from transferstats.grid.expand import ENCODERS_DIR
from transferstats.results import RUN_FILE, atomic_write_text, read_run_status
from transferstats.train.jobs import IntermediateJob, TargetJob

Unit = IntermediateJob | TargetJob


def unit_name(unit: Unit) -> str:
    """The run id of a target run, ``encoder.<name>`` for an encoder."""
    if isinstance(unit, TargetJob):
        return unit.run_id
    return f"encoder.{unit.output_dir.name}"


def results_dir_of(unit: Unit) -> Path:
    if isinstance(unit, TargetJob):
        return unit.results_dir
    return unit.output_dir.parent.parent  # <results>/.encoders/<name>


@dataclass(frozen=True)
class Layout:
    results_dir: Path

    @property
    def encoders_dir(self) -> Path:
        return self.results_dir / ENCODERS_DIR

    @property
    def claims_dir(self) -> Path:
        return self.results_dir / ".claims"

    @property
    def logs_dir(self) -> Path:
        return self.results_dir / ".logs"

    @property
    def submitit_dir(self) -> Path:
        return self.results_dir / ".submitit"

    def claim_path(self, unit: Unit) -> Path:
        return self.claims_dir / f"{unit_name(unit)}.claim"

    def log_path(self, unit: Unit) -> Path:
        return self.logs_dir / f"{unit_name(unit)}.log"

    def run_dir(self, job: TargetJob) -> Path:
        return self.results_dir / job.run_id


def encoder_failure_path(job: IntermediateJob) -> Path:
    return job.output_dir.with_name(job.output_dir.name + ".failed.json")


EXAMPLES_USED_FILE = "examples_used.json"


def encoder_is_complete(job: IntermediateJob) -> bool:
    # The training phase renames the finished encoder, this file included, into place at once.
    return (job.output_dir / EXAMPLES_USED_FILE).is_file()


def remove_abandoned_saves(job: IntermediateJob) -> list[Path]:
    """Remove the half-saved encoder folders (``.<name>.tmp-<pid>``) that trainings killed while
    saving left behind; return them. Only the holder of the encoder's claim may call this: while
    it holds the claim nobody else trains that encoder, so every such folder is abandoned."""
    pattern = f".{glob.escape(job.output_dir.name)}.tmp-*"
    abandoned = sorted(job.output_dir.parent.glob(pattern))
    for path in abandoned:
        shutil.rmtree(path, ignore_errors=True)
    return abandoned


def encoder_failure(job: IntermediateJob) -> str | None:
    """The error of the encoder's last failed training, ``None`` if it has not failed."""
    try:
        return json.loads(encoder_failure_path(job).read_text(encoding="utf-8"))["error"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_status(job: TargetJob) -> str | None:
    """``complete``, ``failed`` or ``None`` (never finished) for a target run."""
    return read_run_status(job.results_dir / job.run_id)


def run_error(job: TargetJob) -> str | None:
    try:
        return json.loads((job.results_dir / job.run_id / RUN_FILE).read_text("utf-8")).get("error")
    except (OSError, ValueError, AttributeError):
        return None


def write_encoder_failure(job: IntermediateJob, error: str) -> None:
    """Record why an encoder's training failed, atomically (a reader never sees half of it)."""
    atomic_write_text(encoder_failure_path(job),
                      json.dumps({"encoder": job.output_dir.name, "error": error}))
