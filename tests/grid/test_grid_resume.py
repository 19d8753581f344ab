"""What a killed training leaves behind: its half-saved encoder folder is removed by the next
holder of the encoder's claim, and by nobody else; its checkpoint is kept to resume from."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from grid_helpers import FAKE_PHASES, small_plan
from transferstats.grid import layout, worker
from transferstats.grid.claims import try_claim


def _leftovers(job, pid):
    """A half-saved encoder of a killed process ``pid``, and the checkpoint of its training."""
    encoders = job.output_dir.parent
    half_saved = encoders / f".{job.output_dir.name}.tmp-{pid}"
    half_saved.mkdir(parents=True)
    (half_saved / "config.json").write_text("{}")
    checkpoint = encoders / f".{job.output_dir.name}.checkpoint"
    checkpoint.mkdir()
    (checkpoint / "checkpoint.pt").write_bytes(b"weights")
    return half_saved, checkpoint


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_next_claim_holder_removes_half_saved_encoders_of_a_dead_worker(tmp_path, capsys):
    job = small_plan(tmp_path).intermediate_jobs[0]
    pid = _dead_pid()
    half_saved, checkpoint = _leftovers(job, pid)
    other = job.output_dir.parent / ".other-encoder.tmp-1"  # another encoder's: not ours to touch
    other.mkdir()
    paths = layout.Layout(tmp_path)
    paths.claim_path(job).parent.mkdir(parents=True)
    # The dead worker's claim is still there: it is stale, so it is taken over.
    paths.claim_path(job).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": pid, "slurm_job": None, "token": "dead"}))

    assert worker.execute_unit(job, FAKE_PHASES) == worker.RAN
    assert not half_saved.exists() and other.exists()
    assert (checkpoint / "checkpoint.pt").read_bytes() == b"weights"
    assert layout.encoder_is_complete(job)
    # Printed to the unit's log (pytest's capture stands in for it here).
    assert f"removed {half_saved.name}" in capsys.readouterr().out


def test_half_saved_encoder_is_left_alone_while_its_claim_is_held(tmp_path):
    job = small_plan(tmp_path).intermediate_jobs[0]
    half_saved, _ = _leftovers(job, os.getpid())
    paths = layout.Layout(tmp_path)
    with try_claim(paths.claim_path(job)):  # a live worker is saving this encoder
        assert worker.execute_unit(job, FAKE_PHASES) == worker.BUSY
    assert half_saved.exists() and not layout.encoder_is_complete(job)
