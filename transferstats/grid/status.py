"""Where a grid stands: each encoder and run is complete, failed, running or pending.

With the grid specification every planned unit is listed (pending ones included); from a results
folder alone, only what has left a trace (a ``run.json`` or a live claim) is.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transferstats.grid import layout
from transferstats.grid.claims import live_holder
from transferstats.grid.expand import GridPlan, mix_label
from transferstats.results import BASELINE_MIX, RUN_FILE, read_run_status

STATES = ("complete", "failed", "running", "pending")
ENCODER, RUN = "encoder", "run"


@dataclass(frozen=True)
class UnitState:
    name: str
    kind: str  # ENCODER or RUN
    mix: str
    state: str
    error: str | None = None


def _state(complete: bool, failed: bool, running: bool) -> str:
    # A failed unit being retried right now shows as running.
    if complete:
        return "complete"
    if running:
        return "running"
    return "failed" if failed else "pending"


def grid_states(plan: GridPlan) -> list[UnitState]:
    """The state of every unit of a planned grid."""
    states = []
    for job in plan.intermediate_jobs:
        paths = layout.Layout(layout.results_dir_of(job))
        error = layout.encoder_failure(job)
        state = _state(layout.encoder_is_complete(job), error is not None,
                       live_holder(paths.claim_path(job)) is not None)
        states.append(UnitState(layout.unit_name(job), ENCODER, job.mix.name, state,
                                error if state == "failed" else None))
    for run in plan.target_jobs:
        paths = layout.Layout(run.results_dir)
        status = layout.run_status(run)
        state = _state(status == "complete", status == "failed",
                       live_holder(paths.claim_path(run)) is not None)
        states.append(UnitState(run.run_id, RUN, mix_label(run.mix), state,
                                layout.run_error(run) if state == "failed" else None))
    return states


def folder_states(results_dir: str | Path) -> list[UnitState]:
    """The state of every run found in a results folder (at any depth), and of running units."""
    results_dir = Path(results_dir)
    states, seen = [], set()
    for run_file in sorted(results_dir.rglob(RUN_FILE)):
        if any(part.startswith(".") for part in run_file.relative_to(results_dir).parts):
            continue
        try:
            run = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(run, dict):
            continue
        name = run.get("run_id", run_file.parent.name)
        seen.add(name)
        mix = (run.get("intermediate") or {}).get("name", BASELINE_MIX)
        status = read_run_status(run_file.parent)
        states.append(UnitState(name, RUN, mix, status or "pending",
                                run.get("error") if status == "failed" else None))
    claims_dir = layout.Layout(results_dir).claims_dir
    for claim in sorted(claims_dir.glob("*.claim")) if claims_dir.is_dir() else []:
        name = claim.name.removesuffix(".claim")
        if name not in seen and live_holder(claim) is not None:
            kind = ENCODER if name.startswith("encoder.") else RUN
            states.append(UnitState(name, kind, "?", "running"))
    return states


def count_by_mix(states: list[UnitState]) -> dict[str, dict[str, Counter]]:
    """mix -> kind -> Counter of states: the baseline first, then mixes as they first appear."""
    table: dict[str, dict[str, Counter]] = {}
    if any(unit.mix == BASELINE_MIX for unit in states):
        table[BASELINE_MIX] = {ENCODER: Counter(), RUN: Counter()}
    for unit in states:
        table.setdefault(unit.mix, {ENCODER: Counter(), RUN: Counter()})[unit.kind][unit.state] += 1
    return table
