"""Checkpoints: a training stopped part-way (SIGKILL, or submitit's preemption warning) resumes
and ends exactly where an uninterrupted one ends, and leaves nothing behind."""

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest

pytest.importorskip("torch")

import torch
from safetensors.torch import load_file

from transferstats.loading import validate_results
from transferstats.results import RUN_FILE, SCORES_FILE
from transferstats.train import loop
from transferstats.train.jobs import IntermediateJob, Mix, TargetJob
from transferstats.train.pipeline import (
    EXAMPLES_FILE,
    checkpoint_dir_of,
    run_intermediate,
    run_target,
)

pytestmark = pytest.mark.train

# Runs a target job in a fresh process that SIGKILLs itself right after a given checkpoint.
KILLED_AFTER_CHECKPOINT = """
import os, pickle, signal, sys
from transferstats.train import loop
from transferstats.train.pipeline import run_target

job, kill_at = pickle.loads(open(sys.argv[1], "rb").read())
save = loop._save_checkpoint

def save_then_die(path, state):
    save(path, state)
    if state["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

loop._save_checkpoint = save_then_die
run_target(job)
"""


def _saved_step(checkpoint_dir):
    return torch.load(checkpoint_dir / loop.CHECKPOINT_FILE, weights_only=True)["step"]


def test_run_killed_after_a_checkpoint_resumes_to_the_same_result(smoke, tmp_path, capsys):
    # 2 epochs of 6 steps: checkpoints at 4, 8, 12; dev F1 evaluations (best-weights selection)
    # at 3, 6, 9, 12. The kill comes mid-way through the second epoch of the sampler.
    hp = {**smoke["hp"], "epochs": 2, "eval_steps": 3, "checkpoint_steps": 4}

    def job(results):
        return TargetJob(run_id="tiny.none.panx.s3", model=smoke["model"], mix=None,
                         target_task="panx", seed=3, results_dir=tmp_path / results,
                         hyperparameters=hp, data=smoke["data"], languages=("en", "de"))

    straight = run_target(job("straight"))

    resumed_job = job("resumed")
    order = tmp_path / "job.pickle"
    order.write_bytes(pickle.dumps((resumed_job, 8)))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_CHECKPOINT, str(order)],
                            capture_output=True, text=True, timeout=900, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = resumed_job.results_dir / resumed_job.run_id
    checkpoint_dir = checkpoint_dir_of(run_dir)
    assert _saved_step(checkpoint_dir) == 8 and not (run_dir / RUN_FILE).exists()

    capsys.readouterr()
    assert run_target(resumed_job) == run_dir
    assert "resumed from the checkpoint at step 8 of 12" in capsys.readouterr().out

    runs = [json.loads((path / RUN_FILE).read_text()) for path in (straight, run_dir)]
    assert [run["selection"]["resumed_from"] for run in runs] == [[], [8]]
    for key in ("steps", "best_step", "dev_score", "train_samples"):
        assert runs[1]["selection"][key] == runs[0]["selection"][key]
    assert runs[1]["selection"]["final_loss"] == pytest.approx(runs[0]["selection"]["final_loss"],
                                                               abs=1e-6)
    assert (run_dir / SCORES_FILE).read_text() == (straight / SCORES_FILE).read_text()

    assert not checkpoint_dir.exists()
    assert sorted(p.name for p in resumed_job.results_dir.iterdir()) == [resumed_job.run_id]
    assert sorted(p.name for p in run_dir.iterdir()) == [RUN_FILE, SCORES_FILE]
    assert not [p for p in validate_results(resumed_job.results_dir) if p.severity == "error"]


class Requeued(BaseException):
    """What submitit's handler does after requeueing: leave the process (it raises SystemExit)."""


def _interrupt_by_preemption_warning(job, during_step, monkeypatch):
    """Run ``job`` with SIGUSR2 arriving in the middle of ``during_step`` (while its batch is being
    made) and a stand-in for submitit's handler installed."""
    batches = 0
    real_collate = loop.collate

    def collate_and_signal(*args):
        nonlocal batches
        batches += 1
        if batches == during_step:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_collate(*args)

    def submitit_handler(signum, frame):
        raise Requeued

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(loop, "collate", collate_and_signal)
            with pytest.raises(Requeued):
                run_intermediate(job)
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.skipif(loop.WARNING_SIGNAL is None, reason="no SIGUSR2 on this platform (Windows)")
def test_preemption_warning_checkpoints_the_step_then_requeues(smoke, tmp_path, monkeypatch):
    hp = {**smoke["hp"], "epochs": 2}  # checkpoint_steps by default: only the warning saves

    def job(name):
        return IntermediateJob(model=smoke["model"], mix=Mix("two", {"mnli": 16, "squad_v2": 8}),
                               seed=2, output_dir=tmp_path / name, hyperparameters=hp,
                               data=smoke["data"])

    straight = run_intermediate(job("straight"))
    _interrupt_by_preemption_warning(job("resumed"), 3, monkeypatch)
    checkpoint_dir = checkpoint_dir_of(tmp_path / "resumed")
    assert _saved_step(checkpoint_dir) == 3 and not (tmp_path / "resumed").exists()

    resumed = run_intermediate(job("resumed"))
    weights = [load_file(path / "model.safetensors") for path in (straight, resumed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    logs = [json.loads((path / EXAMPLES_FILE).read_text())["train"] for path in (straight, resumed)]
    assert logs[1]["resumed_from"] == [3] and logs[1]["final_loss"] == logs[0]["final_loss"]
    assert not checkpoint_dir.exists()


def test_checkpoint_of_a_different_training_is_ignored(smoke, tmp_path, monkeypatch, capsys):
    def job(hp):
        return IntermediateJob(model=smoke["model"], mix=Mix("one", {"mnli": 16}), seed=2,
                               output_dir=tmp_path / "enc", hyperparameters=hp, data=smoke["data"])

    _interrupt_by_preemption_warning(job(smoke["hp"]), 1, monkeypatch)
    capsys.readouterr()
    output = run_intermediate(job({**smoke["hp"], "learning_rate": 1e-4}))
    assert "ignoring the checkpoint" in capsys.readouterr().out
    assert json.loads((output / EXAMPLES_FILE).read_text())["train"]["resumed_from"] == []
