"""Stand-ins for the training phases, steered by the grid's ``[data]`` table:

``sleep``  seconds each phase takes;
``ledger`` file that gets ``start``/``done`` lines per unit: worker pid, its parent's, its GPU;
``fail``   substrings of run ids / encoder names whose phase raises;
``crash``  substrings whose worker process is SIGKILLed mid-phase;
``company`` seconds a phase waits, at most, until the ledger shows two units running at once
           (once it has, no phase waits): a parallel executor then shows its parallelism however
           slowly a loaded machine starts its workers, and a serial one never does.

Like the real phases, they look their tasks up first, so a task the worker does not know fails
the unit.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from transferstats.results import write_run
from transferstats.tasks import get_task


def _note(job_data: dict, event: str, name: str) -> None:
    ledger = job_data.get("ledger")
    if ledger:
        # O_APPEND writes of one short line are atomic, so concurrent workers never interleave.
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            device = os.environ.get("CUDA_VISIBLE_DEVICES") or "-"
            os.write(fd, f"{event} {name} {os.getpid()} {os.getppid()} {device}\n".encode())
        finally:
            os.close(fd)


def _most_running(ledger: str) -> int:
    running, most = 0, 0
    for line in Path(ledger).read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    return most


def _work(job_data: dict, name: str) -> None:
    _note(job_data, "start", name)
    time.sleep(job_data.get("sleep", 0))
    deadline = time.time() + job_data.get("company", 0)
    while time.time() < deadline and _most_running(job_data["ledger"]) < 2:
        time.sleep(0.02)
    if any(part in name for part in job_data.get("crash", [])):
        os.kill(os.getpid(), signal.SIGKILL)
    if any(part in name for part in job_data.get("fail", [])):
        raise RuntimeError(f"deliberate failure of {name}")


def fake_intermediate(job) -> Path:
    for task_id in job.mix.tasks:
        get_task(task_id)
    name = f"encoder.{job.output_dir.name}"
    _work(job.data, name)
    temporary = job.output_dir.with_name(job.output_dir.name + ".tmp")
    temporary.mkdir(parents=True, exist_ok=True)
    (temporary / "examples_used.json").write_text("{}")
    os.replace(temporary, job.output_dir)
    _note(job.data, "done", name)
    return job.output_dir


def fake_target(job) -> Path:
    get_task(job.target_task)
    run = {"run_id": job.run_id, "model": job.model, "target_task": job.target_task,
           "seed": job.seed,
           "intermediate": None if job.mix is None else {
               "name": job.mix.name, "tasks": dict(job.mix.tasks), "sampling": job.mix.sampling}}
    try:
        _work(job.data, job.run_id)
    except Exception as error:
        write_run(job.results_dir / job.run_id, {**run, "status": "failed", "error": str(error)})
        raise
    scores = [{"language": "en", "metric": "accuracy", "split": "test", "value": 80.0}]
    path = write_run(job.results_dir / job.run_id, {**run, "status": "complete"}, scores)
    _note(job.data, "done", job.run_id)
    return path
