"""The Slurm executor through submitit's local executor: fake phases for the mechanics, the real
smoke grid end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from grid_helpers import FAKE_PHASES, HERE, ledger_lines, small_plan, user_task_plan
from transferstats.cli import main
from transferstats.grid import worker
from transferstats.grid.expand import expand_grid
from transferstats.grid.layout import run_error, run_status
from transferstats.grid.slurm import GridTask, SlurmExecutor, SlurmOptions
from transferstats.grid.spec import load_grid, parse_time

pytest.importorskip("submitit")

RUNNERS = Path(__file__).resolve().parents[2] / "runners"
LOCAL = SlurmOptions(gpus=0, cpus_per_task=1, time_minutes=10)


@pytest.fixture
def importable_helpers(monkeypatch):
    """submitit's job processes unpickle the fake phases, so they must find this folder."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(HERE), os.environ.get("PYTHONPATH")])))


def test_arrays_run_every_unit_once_and_record_failures(tmp_path, importable_helpers):
    results, ledger = tmp_path / "results", tmp_path / "ledger"
    plan = small_plan(results, ledger=str(ledger), fail=["b.xnli"])
    executor = SlurmExecutor(LOCAL, phases=FAKE_PHASES, cluster="local")
    jobs = executor.run(plan, results)
    assert len(jobs) == 8
    outcomes = sorted(job.result() for job in jobs)
    assert outcomes.count(worker.RAN) == 7 and outcomes.count(worker.FAILED) == 1
    by_id = {job.run_id: job for job in plan.target_jobs}
    assert "deliberate failure" in run_error(by_id["xlmr-base.b.xnli.s1"])
    starts = [unit for event, unit in ledger_lines(ledger) if event == "start"]
    assert len(starts) == len(set(starts)) == 8
    # Submitting again submits only the failed run, and only when retrying.
    assert executor.run(plan, results) == []
    retry = SlurmExecutor(LOCAL, phases=FAKE_PHASES, cluster="local", retry_failed=True)
    assert [job.result() for job in retry.run(small_plan(results, ledger=str(ledger)),
                                              results)] == [worker.RAN]


def test_grid_tasks_travel_with_the_pickled_jobs(tmp_path, importable_helpers):
    # submitit pickles each unit for a job process that knows only the built-in tasks.
    results = tmp_path / "results"
    plan = user_task_plan(results)
    jobs = SlurmExecutor(LOCAL, phases=FAKE_PHASES, cluster="local").run(plan, results)
    assert [job.result() for job in jobs] == [worker.RAN] * 3
    assert [run_status(job) for job in plan.target_jobs] == ["complete"] * 2


def test_preempted_task_requeues_itself_with_the_same_unit(tmp_path):
    plan = small_plan(tmp_path)
    task = GridTask(FAKE_PHASES, retry_failed=False)
    unit, encoder = plan.target_jobs[-1], plan.intermediate_jobs[-1]
    delayed = task.checkpoint(unit, encoder)
    assert delayed.function is task and delayed.args == (unit, encoder)


@pytest.mark.parametrize("text, minutes", [(90, 90), ("90", 90), ("1:30:00", 90),
                                           ("2-00:00:00", 2880), ("1-2", 1560),
                                           ("1-0:30", 1470), ("10:30", 11)])
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.slow
@pytest.mark.train
def test_smoke_grid_end_to_end_through_submitit(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    results = tmp_path / "results"
    assert main(["run", str(RUNNERS / "smoke.toml"), "--executor", "slurm",
                 "--submitit-cluster", "local", "--results", str(results)]) == 0
    plan = expand_grid(load_grid(RUNNERS / "smoke.toml"), results)
    n_encoders, n_runs = len(plan.intermediate_jobs), len(plan.target_jobs)
    assert [run_status(job) for job in plan.target_jobs] == ["complete"] * n_runs
    assert all((job.output_dir / "examples_used.json").is_file()
               for job in plan.intermediate_jobs)
    capsys.readouterr()
    assert main(["status", str(results), "--grid", str(RUNNERS / "smoke.toml")]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines() if "total" in line)
    # encoders done, then complete / failed / running / pending target runs
    assert [cell.strip() for cell in total.split("│")[2:7]] == [f"{n_encoders}/{n_encoders}",
                                                                str(n_runs), "0", "0", "0"]
    # The smoke grid's results are analysable: validation is clean and analyze writes a report.
    assert main(["validate", str(results)]) == 0
    report = tmp_path / "report"
    assert main(["analyze", str(results), "--out", str(report), "--resamples", "100",
                 "--jobs", "1"]) == 0
    estimates = json.loads((report / "estimates.json").read_text())
    assert estimates["n_runs"] == n_runs - len(plan.grid.targets) * len(plan.grid.seeds)
    assert estimates["verdict"] in {"supported", "refuted", "inconclusive"}


def _fake_slurm(tmp_path, monkeypatch) -> Path:
    """``srun`` and ``sbatch`` stand-ins: sbatch keeps each script and answers a new job id."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(ls {scripts} | wc -l); id=$((1000 + n)); cp "$1" {scripts}/$id.sh\n'
        'echo "Submitted batch job $id"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts


def test_slurm_arrays_carry_resources_limit_and_dependency(tmp_path, monkeypatch):
    scripts = _fake_slurm(tmp_path, monkeypatch)
    results = tmp_path / "results"
    options = SlurmOptions(partition="gpu", time_minutes=90, gpus=1, memory="64G",
                           account="proj", parallelism=3, cpus_per_task=4)
    jobs = SlurmExecutor(options, phases=FAKE_PHASES).run(small_plan(results), results)
    assert [job.job_id for job in jobs] == [f"1000_{i}" for i in range(4)] + \
        [f"1001_{i}" for i in range(4)]
    first, second = (scripts / "1000.sh").read_text(), (scripts / "1001.sh").read_text()
    for line in ("--array=0-3%3", "--partition=gpu", "--time=90", "--mem=64G",
                 "--account=proj", "--gpus-per-node=1", "--cpus-per-task=4", "--signal=USR2"):
        assert f"#SBATCH {line}" in first, line
    assert "dependency" not in first
    assert "#SBATCH --dependency=afterany:1000" in second  # targets wait for their encoders
