"""The local executor with fake phases: every run once, failures recorded and contained, killed
jobs resumed with nothing lost or duplicated, concurrent workers never overlapping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

from grid_helpers import FAKE_PHASES, HERE, ledger_lines, small_plan, user_task_plan
from transferstats.grid import worker
from transferstats.grid.claims import try_claim
from transferstats.grid.layout import Layout, encoder_failure, run_error, run_status
from transferstats.grid.local import LocalExecutor
from transferstats.results import is_complete
from transferstats.tasks import is_known


def _run(plan, **options):
    return LocalExecutor(["cpu"], phases=FAKE_PHASES, show_progress=False, poll_seconds=0.02,
                         **options).run(plan)


def _assert_all_complete_once(plan, ledger):
    for job in plan.target_jobs:
        assert is_complete(job.results_dir / job.run_id), job.run_id
        leftovers = [p.name for p in (job.results_dir / job.run_id).iterdir()
                     if p.name not in ("run.json", "scores.jsonl")]
        assert not leftovers, leftovers
    done = Counter(unit for event, unit in ledger_lines(ledger) if event == "done")
    expected = [job.run_id for job in plan.target_jobs]
    expected += [f"encoder.{job.output_dir.name}" for job in plan.intermediate_jobs]
    assert done == Counter(expected)


def test_grid_runs_every_unit_once_and_skips_them_next_time(tmp_path):
    ledger = tmp_path / "ledger"
    plan = small_plan(tmp_path / "results", ledger=str(ledger))
    outcome = _run(plan)
    assert outcome.counts == {worker.RAN: 8}
    _assert_all_complete_once(plan, ledger)
    assert (tmp_path / "results" / ".logs" / "xlmr-base.a.xnli.s1.log").read_text().strip()
    again = _run(plan)
    assert again.counts == {worker.ALREADY_COMPLETE: 8}
    _assert_all_complete_once(plan, ledger)


def test_grid_tasks_travel_with_the_jobs_to_the_workers(tmp_path):
    # The fake phases look their tasks up in the worker process, which knows only the built-in
    # ones: the grid's own tasks must come with the jobs.
    ledger = tmp_path / "ledger"
    plan = user_task_plan(tmp_path / "results", ledger=str(ledger))
    assert not is_known("myinter") and not is_known("mytarget")
    assert _run(plan).counts == {worker.RAN: 3}
    _assert_all_complete_once(plan, ledger)


def test_failing_runs_are_recorded_and_do_not_stop_the_others(tmp_path):
    ledger = tmp_path / "ledger"
    results = tmp_path / "results"
    plan = small_plan(results, ledger=str(ledger), fail=["b.pawsx"], crash=["none.xnli"])
    outcome = _run(plan)
    assert sorted(name for name, _ in outcome.failures) == ["xlmr-base.b.pawsx.s1",
                                                            "xlmr-base.none.xnli.s1"]
    by_id = {job.run_id: job for job in plan.target_jobs}
    assert "deliberate failure" in run_error(by_id["xlmr-base.b.pawsx.s1"])
    assert "died with signal 9" in run_error(by_id["xlmr-base.none.xnli.s1"])
    assert [run_status(job) for job in plan.target_jobs].count("complete") == 4

    # Failed runs stay failed unless retried.
    healthy = small_plan(results, ledger=str(ledger))
    assert _run(healthy).counts == {worker.ALREADY_COMPLETE: 6, worker.FAILED_BEFORE: 2}
    assert _run(healthy, retry_failed=True).counts == {worker.ALREADY_COMPLETE: 6, worker.RAN: 2}
    _assert_all_complete_once(healthy, ledger)


def test_failed_encoder_fails_its_targets_with_the_reason(tmp_path):
    plan = small_plan(tmp_path / "results", fail=["encoder.xlmr-base.a."])
    outcome = _run(plan)
    assert outcome.counts[worker.FAILED] == 3  # the encoder and its two targets
    encoder = next(job for job in plan.intermediate_jobs if job.mix.name == "a")
    assert "deliberate failure" in encoder_failure(encoder)
    for job in plan.target_jobs:
        if job.mix is not None and job.mix.name == "a":
            assert run_error(job).startswith("EncoderFailed: intermediate training xlmr-base.a.s1")
        else:
            assert run_status(job) == "complete"


def _start_fake_grid(results, ledger, sleep, company=0.0):
    return subprocess.Popen([sys.executable, str(HERE / "run_fake_grid.py"), str(results),
                             str(ledger), str(sleep), str(company)], start_new_session=True)


def _wait_for(condition, timeout=600):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_killed_grid_rerun_completes_every_run_exactly_once(tmp_path):
    results, ledger = tmp_path / "results", tmp_path / "ledger"
    # Baselines run first, then encoder a and its targets: kill mid-encoder, then mid-target.
    for kill_after in (2, 4):
        job = _start_fake_grid(results, ledger, 0.4)

        def mid_unit(kill_after=kill_after):
            lines = ledger_lines(ledger)
            done = sum(event == "done" for event, _ in lines)
            return done >= kill_after and lines[-1][0] == "start"

        _wait_for(mid_unit)
        os.killpg(job.pid, signal.SIGKILL)  # the whole job, as a scheduler kills it
        job.wait()
    plan = small_plan(results, ledger=str(ledger), sleep=0.0)
    _run(plan)
    _assert_all_complete_once(plan, ledger)
    # Nothing that had finished ran again; two units were killed mid-way and ran once more.
    finished, started = set(), []
    for event, unit in ledger_lines(ledger):
        if event == "done":
            finished.add(unit)
        else:
            assert unit not in finished, f"{unit} ran again after finishing"
            started.append(unit)
    assert len(started) == len(finished) + 2

def test_two_workers_on_one_grid_never_run_the_same_unit(tmp_path):
    results, ledger = tmp_path / "results", tmp_path / "ledger"
    # Each waits for the other's company once, so both take part however slowly either starts.
    jobs = [_start_fake_grid(results, ledger, 0.2, company=60) for _ in range(2)]
    for job in jobs:
        assert job.wait(timeout=900) == 0
    plan = small_plan(results, ledger=str(ledger))
    _assert_all_complete_once(plan, ledger)
    starts = Counter(unit for event, unit in ledger_lines(ledger) if event == "start")
    assert set(starts.values()) == {1}
    executors = {line.split()[3] for line in ledger.read_text().splitlines()}
    assert len(executors) == 2  # both took part


def test_one_worker_per_gpu_in_parallel(tmp_path):
    ledger = tmp_path / "ledger"
    plan = small_plan(tmp_path / "results", ledger=str(ledger), company=60)
    LocalExecutor(["0", "1"], phases=FAKE_PHASES, show_progress=False, poll_seconds=0.02).run(plan)
    _assert_all_complete_once(plan, ledger)
    lines = [line.split() for line in ledger.read_text().splitlines()]
    assert {line[4] for line in lines} == {"0", "1"}
    running, most = 0, 0
    for line in lines:
        running += 1 if line[0] == "start" else -1
        most = max(most, running)
    assert most == 2


def test_target_waits_for_its_encoder_trained_by_another_worker(tmp_path):
    plan = small_plan(tmp_path / "results")
    encoder = plan.intermediate_jobs[0]
    target = next(job for job in plan.target_jobs if job.encoder == encoder.output_dir)
    outcome = []
    with try_claim(Layout(tmp_path / "results").claim_path(encoder)):  # another worker trains it
        waiting = threading.Thread(target=lambda: outcome.append(worker.execute_unit(
            target, FAKE_PHASES, encoder_job=encoder, poll_seconds=0.02)))
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive() and run_status(target) is None
        FAKE_PHASES.intermediate(encoder)
    waiting.join(timeout=300)
    assert outcome == [worker.RAN] and run_status(target) == "complete"
