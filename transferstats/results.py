"""The results contract: one folder per run holding ``run.json`` and ``scores.jsonl``.

Writers (the runners) call :func:`write_run`; it writes both files under temporary names and
renames them, scores first, so ``run.json`` saying ``complete`` is the commit mark: a killed job
leaves either nothing, or a complete run. Readers (the analysis) call
:func:`transferstats.loading.load_results`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
SCORES_FILE = "scores.jsonl"
REQUIRED_RUN_KEYS = ("schema_version", "run_id", "model", "intermediate", "target_task", "seed",
                     "status")
REQUIRED_SCORE_KEYS = ("language", "metric", "split", "value")
#: Optional keys of a score (and columns of the flat table): the evaluation examples behind it and
#: its standard error, in the value's unit (percent), each missing or ``null`` where unknown.
OPTIONAL_SCORE_KEYS = ("n_examples", "stderr")
STATUSES = ("complete", "failed")
#: The mix name of a baseline run (no intermediate training), in the flat table and in reports.
BASELINE_MIX = "none"
#: Columns of the flat-table form of the results (CSV, Parquet, JSON Lines; one row per score).
FLAT_COLUMNS = ("run_id", "model", "mix", "mix_tasks", "target_task", "seed", "language", "metric",
                "split", "value")
#: What a mix's members are: English intermediate tasks (registered, docs/tasks.md) or languages
#: (ISO 639 codes, :mod:`transferstats.languages`). ``run.json``: ``intermediate.kind``; flat
#: table: the optional column ``source_kind``. The first is the default.
SOURCE_KINDS = ("task", "language")
SOURCE_KIND_COLUMN = "source_kind"
#: Written beside simulated results by ``transferstats simulate``: the true effects.
SIMULATION_FILE = "simulation.json"


def format_mix_tasks(tasks: dict[str, int]) -> str:
    """``{"mnli": 20000, "squad_v1": 20000}`` -> ``"mnli=20000+squad_v1=20000"``."""
    return "+".join(f"{task}={count}" for task, count in sorted(tasks.items()))


def parse_mix_tasks(text: str) -> dict[str, int]:
    """Inverse of :func:`format_mix_tasks`; an empty string is the baseline (no tasks)."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return {}
    tasks = {}
    for part in str(text).split("+"):
        name, sep, count = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected 'task=examples' joined by '+', got {text!r}")
        try:
            number = int(count)
        except ValueError:
            raise ValueError(f"examples for task {name!r} must be a whole number, got {count!r}") from None
        if number <= 0:
            raise ValueError(f"examples for task {name!r} must be positive, got {number}")
        tasks[name.strip()] = number
    return tasks


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_run(run_dir: str | Path, run: dict, scores: list[dict] | None = None) -> Path:
    """Write one run's folder atomically.

    ``run`` is the ``run.json`` object; ``schema_version`` is filled in. A ``complete`` run needs
    its ``scores``; a ``failed`` run needs ``error`` and gets no score file (an old one is removed
    first, so a failed retry never leaves stale scores beside it).
    """
    run_dir = Path(run_dir)
    run = {"schema_version": SCHEMA_VERSION, **run}
    missing = [key for key in REQUIRED_RUN_KEYS if key not in run]
    if missing:
        raise ValueError(f"run {run.get('run_id', run_dir.name)!r} is missing {missing}")
    if run["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {run['status']!r}")
    if run["status"] == "complete":
        if not scores:
            raise ValueError(f"run {run['run_id']!r} is complete but has no scores")
        for score in scores:
            absent = [key for key in REQUIRED_SCORE_KEYS if key not in score]
            if absent:
                raise ValueError(f"run {run['run_id']!r}: score {score} is missing {absent}")
        # Remove a stale run.json first: between the two renames a reader must not pair an old
        # "complete" run.json with new scores.
        (run_dir / RUN_FILE).unlink(missing_ok=True)
        atomic_write_text(run_dir / SCORES_FILE,
                           "".join(json.dumps(score) + "\n" for score in scores))
    else:
        if not run.get("error"):
            raise ValueError(f"run {run['run_id']!r} failed but has no 'error' message")
        (run_dir / RUN_FILE).unlink(missing_ok=True)
        (run_dir / SCORES_FILE).unlink(missing_ok=True)
    atomic_write_text(run_dir / RUN_FILE, json.dumps(run, indent=2) + "\n")
    return run_dir


def read_run_status(run_dir: str | Path) -> str | None:
    """``complete``, ``failed``, or ``None`` when the folder holds no readable ``run.json``."""
    try:
        run = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    status = run.get("status") if isinstance(run, dict) else None
    if status == "complete" and not (Path(run_dir) / SCORES_FILE).is_file():
        return None
    return status if status in STATUSES else None


def is_complete(run_dir: str | Path) -> bool:
    """Whether the run folder holds a complete run (``run.json`` says so and the scores exist)."""
    return read_run_status(run_dir) == "complete"
