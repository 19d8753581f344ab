"""Claims: one holder at a time; dead, silent or requeued holders are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

from transferstats.grid.claims import live_holder, read_claim, try_claim


def _foreign_claim(path, **holder):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "slurm_job": None,
                                "token": "theirs", **holder}))


def test_a_held_claim_cannot_be_taken_until_released(tmp_path):
    path = tmp_path / "run.claim"
    first = try_claim(path)
    assert first is not None
    assert try_claim(path) is None
    assert live_holder(path)["pid"] == os.getpid()
    first.release()
    assert not path.exists()
    with try_claim(path) as again:
        assert again is not None


def test_only_one_of_many_racing_workers_wins(tmp_path):
    path = tmp_path / "run.claim"
    results, start = [], threading.Barrier(16)

    def race():
        start.wait()
        results.append(try_claim(path))

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [claim for claim in results if claim is not None]
    assert len(winners) == 1
    winners[0].release()


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / "run.claim"
    dead = subprocess.Popen(["true"])
    dead.wait()
    _foreign_claim(path, host=socket.gethostname(), pid=dead.pid)
    assert live_holder(path) is None
    with try_claim(path) as claim:
        assert claim is not None and read_claim(path)[0]["pid"] == os.getpid()


def test_claim_from_another_host_is_live_until_its_heartbeat_stops(tmp_path):
    path = tmp_path / "run.claim"
    _foreign_claim(path)
    assert try_claim(path, stale_after=60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    with try_claim(path, stale_after=60) as claim:
        assert claim is not None


def test_requeued_slurm_job_takes_back_its_own_claim(tmp_path, monkeypatch):
    path = tmp_path / "run.claim"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "123")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    _foreign_claim(path, slurm_job="123_4")
    with try_claim(path) as claim:
        assert claim is not None


def test_heartbeat_keeps_the_claim_fresh_and_release_spares_other_claims(tmp_path):
    path = tmp_path / "run.claim"
    claim = try_claim(path, heartbeat=0.05)
    old = time.time() - 100
    os.utime(path, (old, old))
    deadline = time.time() + 30  # a loaded machine may be slow to schedule the heartbeat
    while time.time() - path.stat().st_mtime > 5:
        assert time.time() < deadline, "the heartbeat never refreshed the claim"
        time.sleep(0.05)
    _foreign_claim(path)  # as if another worker had broken and re-taken it
    claim.release()
    assert read_claim(path)[0]["token"] == "theirs"
