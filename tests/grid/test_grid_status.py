"""``transferstats status``: complete / failed / running / pending per mix, failures with their
error line, with and without the grid specification."""

from __future__ import annotations

from grid_helpers import FAKE_PHASES, small_plan
from transferstats.cli import main
from transferstats.grid.claims import try_claim
from transferstats.grid.expand import GridPlan
from transferstats.grid.layout import Layout
from transferstats.grid.local import LocalExecutor
from transferstats.grid.status import (
    ENCODER,
    RUN,
    count_by_mix,
    folder_states,
    grid_states,
)

SMALL_TOML = """
name = "small"
model = "xlm-roberta-base"
targets = ["xnli", "pawsx"]
seeds = [1]
[[mixes]]
name = "a"
tasks = {mnli = 100}
[[mixes]]
name = "b"
tasks = {mnli = 50, squad_v1 = 50}
"""


def _half_run(tmp_path):
    """Mix ``a`` and the baseline run (one of them failing); mix ``b`` never started."""
    results = tmp_path / "results"
    plan = small_plan(results, fail=["none.pawsx"])
    partial = GridPlan(plan.grid, plan.intermediate_jobs[:1],
                             tuple(job for job in plan.target_jobs
                                   if job.mix is None or job.mix.name == "a"))
    LocalExecutor(["cpu"], phases=FAKE_PHASES, show_progress=False, poll_seconds=0.02).run(partial)
    return results, plan


def test_grid_states_count_every_part(tmp_path):
    results, plan = _half_run(tmp_path)
    running = next(job for job in plan.target_jobs if job.run_id == "xlmr-base.b.xnli.s1")
    with try_claim(Layout(results).claim_path(running)):
        counts = count_by_mix(grid_states(plan))
    assert list(counts) == ["none", "a", "b"]
    assert counts["none"][RUN] == {"complete": 1, "failed": 1}
    assert counts["a"][ENCODER] == {"complete": 1} and counts["a"][RUN] == {"complete": 2}
    assert counts["b"][ENCODER] == {"pending": 1}
    assert counts["b"][RUN] == {"running": 1, "pending": 1}


def test_status_command_with_grid_lists_pending_and_failures(tmp_path, capsys):
    results, _ = _half_run(tmp_path)
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL_TOML)
    assert main(["status", str(results), "--grid", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "1 failed" in out
    assert "xlmr-base.none.pawsx.s1: deliberate failure of xlmr-base.none.pawsx.s1" in out
    total = next(line for line in out.splitlines() if "total" in line)
    # encoders done, then complete / failed / running / pending target runs
    assert [cell.strip() for cell in total.split("│")[2:7]] == ["1/2", "3", "1", "0", "2"]

def test_status_from_the_folder_alone(tmp_path, capsys):
    results, _ = _half_run(tmp_path)
    states = folder_states(results)
    assert sorted(unit.state for unit in states) == ["complete"] * 3 + ["failed"]
    assert main(["status", str(results)]) == 0
    assert "pass --grid" in capsys.readouterr().out
