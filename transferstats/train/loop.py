"""The training loop and batched inference, shared by phase 2 (many tasks) and phase 3 (one).

Efficiency on GPU: bf16 autocast, dynamic padding of length-grouped batches, fused AdamW, SDPA
attention (chosen when the encoder is loaded).

Resuming: with a ``checkpoint_dir`` the loop saves everything a run needs to go on exactly as if
never stopped (weights, optimizer, schedule, sampler positions, random states, the best dev score
so far) every ``checkpoint_steps`` steps and when warned of preemption, and a later call with the
same folder continues from there.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from transferstats.train.model import MultiTaskModel, collate, sequence_length
from transferstats.train.sampling import length_grouped_batches, task_schedule

#: submitit's warning before it requeues a preempted or timed-out job; Windows has none.
WARNING_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR2", None)

CHECKPOINT_FILE = "checkpoint.pt"


def pick_device(requested: str | None) -> torch.device:
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def use_bf16(setting, device: torch.device) -> bool:
    return device.type == "cuda" if setting == "auto" else bool(setting)


class _BatchStream:
    """One task's batches, epoch after epoch with a new shuffle each. Its position is part of a
    checkpoint, so a resumed run takes exactly the batches the stopped one would have taken."""

    def __init__(self, lengths: list[int], batch_size: int, rng: np.random.Generator):
        self.lengths, self.batch_size, self.rng = lengths, batch_size, rng
        self.batches: list[list[int]] = []
        self.position = 0

    def __next__(self) -> list[int]:
        if self.position == len(self.batches):
            self.batches = length_grouped_batches(self.lengths, self.batch_size, self.rng)
            self.position = 0
        self.position += 1
        return self.batches[self.position - 1]

    def state(self) -> dict:
        # The epoch's batch order, not just the position: it was drawn from the shared generator.
        return {"batches": self.batches, "position": self.position}

    def restore(self, state: dict) -> None:
        self.batches, self.position = state["batches"], state["position"]


def _optimizer(model: torch.nn.Module, hp: dict, device: torch.device) -> torch.optim.AdamW:
    # No weight decay on biases and LayerNorm weights, as in the BERT/RoBERTa recipes.
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp["learning_rate"], fused=device.type == "cuda")


def train(model: MultiTaskModel, tasks: dict[str, tuple[str, list[dict]]],
          probabilities: dict[str, float], hp: dict, seed: int, device: torch.device, pad_id: int,
          evaluate: Callable[[], float] | None = None, checkpoint_dir: Path | None = None) -> dict:
    """Train ``model`` on ``tasks`` (task -> (format, features)); return a log of the run.

    Each step draws a task with ``probabilities`` and takes that task's next batch. With
    ``evaluate`` (a dev score, higher is better) the best evaluated weights are restored at the end.
    With ``checkpoint_dir`` the run is checkpointed there and resumes from a checkpoint it finds.
    """
    total = sum(len(features) for _, features in tasks.values())
    if total == 0:
        raise ValueError(f"no training examples for {sorted(tasks)}")
    steps_per_epoch = math.ceil(total / hp["batch_size"])
    steps = hp["max_steps"] or math.ceil(hp["epochs"] * steps_per_epoch)
    eval_every = hp["eval_steps"] or steps_per_epoch
    schedule = task_schedule(probabilities, steps, seed)
    rng = np.random.default_rng(seed)
    streams = {task: _BatchStream([sequence_length(fmt, f) for f in features], hp["batch_size"],
                                  rng)
               for task, (fmt, features) in tasks.items()}

    optimizer = _optimizer(model, hp, device)
    scheduler = _linear_schedule(optimizer, steps, int(hp["warmup_ratio"] * steps))
    bf16 = use_bf16(hp["bf16"], device)

    log = {"steps": steps, "best_step": None, "dev_score": None, "train_samples": 0,
           "resumed_from": []}
    best_state, done = None, 0
    # A checkpoint is only picked up by the same training: same data sizes, mix and settings.
    identity = json.dumps({"seed": seed, "steps": steps, "probabilities": probabilities,
                           "features": {task: len(f) for task, (_, f) in tasks.items()},
                           "hp": {k: v for k, v in hp.items() if k != "checkpoint_steps"}},
                          sort_keys=True, default=str)
    saved = _load_checkpoint(checkpoint_dir, identity) if checkpoint_dir else None
    if saved is not None:
        done, log, best_state = saved["step"], saved["log"], saved["best_state"]
        _restore(saved, model, optimizer, scheduler, rng, streams)
        log["resumed_from"].append(done)
        print(f"resumed from the checkpoint at step {done} of {steps} in {checkpoint_dir}",
              flush=True)

    model.train()
    with _PreemptionWarning() as preemption:
        for step in range(done + 1, steps + 1):
            task = schedule[step - 1]
            task_format, features = tasks[task]
            batch = collate(task_format, [features[i] for i in next(streams[task])], pad_id, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model.loss(task, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            log["train_samples"] += len(batch["input_ids"]) // batch.get("num_choices", 1)
            if step == steps:
                log["final_loss"] = float(loss.detach())

            if evaluate and (step % eval_every == 0 or step == steps):
                improved = _evaluate(model, evaluate, step, log)
                if improved is not None:
                    best_state = improved

            # Read once: a warning arriving after this is handled at the end of the next step.
            warned = preemption.received
            periodic = hp["checkpoint_steps"] and step % hp["checkpoint_steps"] == 0
            if checkpoint_dir and (periodic or warned):
                _save_checkpoint(checkpoint_dir / CHECKPOINT_FILE, {
                    "identity": identity, "step": step, "log": log, "best_state": best_state,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "sampler_rng": rng.bit_generator.state,
                    "streams": {task: stream.state() for task, stream in streams.items()},
                    "rng": _rng_states()})
            if warned:
                preemption.pass_on()
    if best_state is not None:
        model.load_state_dict(best_state)
    return log


def _linear_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int
                     ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the learning rate over ``warmup`` steps, then linear decay to 0."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step / max(1, warmup) if step < warmup
        else max(0.0, (steps - step) / max(1, steps - warmup)))


def _restore(saved: dict, model: MultiTaskModel, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LambdaLR, rng: np.random.Generator,
             streams: dict[str, _BatchStream]) -> None:
    """Put the model, optimiser, schedule, task sampler, batch streams and global generators
    back where the checkpoint ``saved`` left them."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng.bit_generator.state = saved["sampler_rng"]
    for task, state in saved["streams"].items():
        streams[task].restore(state)
    _set_rng_states(saved["rng"])


def _evaluate(model: MultiTaskModel, evaluate: Callable[[], float], step: int, log: dict
              ) -> dict | None:
    """Score the model on dev and log it; return a copy of its weights if the score is the best
    so far (else None)."""
    score = float(evaluate())  # a plain float: numpy scalars do not load weights_only
    model.train()
    if log["dev_score"] is not None and score <= log["dev_score"]:
        return None
    log["dev_score"], log["best_step"] = score, step
    # A CPU copy: the best weights survive later steps without doubling GPU memory.
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _PreemptionWarning:
    """Holds back SIGUSR2, submitit's warning that it is about to requeue a preempted or timed-out
    job, until the current step is over: the checkpoint written for it must not catch the
    optimizer half-way through a step. Then submitit's own handler gets the signal (it requeues
    the job and exits).

    Only where a Python handler for it is installed, on the main thread; elsewhere the signal keeps
    its usual effect. Windows has no SIGUSR2 (nor Slurm): there this does nothing.
    """

    def __enter__(self):
        self.received = False
        self.previous: Callable[[int, FrameType | None], Any] | None = None
        if WARNING_SIGNAL is not None and threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(WARNING_SIGNAL)
            if callable(previous):
                self.previous = previous
                signal.signal(WARNING_SIGNAL, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.received = True

    def pass_on(self) -> None:
        handler, self.previous = self.previous, None
        assert handler is not None and WARNING_SIGNAL is not None, \
            "only a held signal is passed on, and only with a handler"
        signal.signal(WARNING_SIGNAL, handler)
        handler(WARNING_SIGNAL, None)

    def __exit__(self, *exc) -> None:
        if self.previous is not None and WARNING_SIGNAL is not None:
            signal.signal(WARNING_SIGNAL, self.previous)


def _rng_states() -> dict:
    # numpy's legacy state holds an array; as a list the checkpoint loads with weights_only.
    # The legacy global state is what is saved on purpose: libraries draw from it, not from a
    # Generator of ours, and a resumed run must continue their streams.
    state = np.random.get_state()  # noqa: NPY002
    assert isinstance(state, tuple), "the global RandomState is an MT19937: its state is a tuple"
    kind, keys, position, has_gauss, gauss = state
    return {"python": random.getstate(), "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary name, then rename: a process killed while writing leaves the previous
    checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _load_checkpoint(checkpoint_dir: Path, identity: str) -> dict | None:
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["identity"] != identity:
        print(f"ignoring the checkpoint in {checkpoint_dir}: it is from a different training",
              flush=True)
        return None
    return saved


@torch.inference_mode()
def predict(model: MultiTaskModel, task: str, task_format: str, features: list[dict], hp: dict,
            device: torch.device, pad_id: int) -> list[np.ndarray]:
    """The head's output for each feature (in the features' order), without padding positions."""
    model.eval()
    order = sorted(range(len(features)), key=lambda i: sequence_length(task_format, features[i]))
    outputs: dict[int, np.ndarray] = {}
    bf16 = use_bf16(hp["bf16"], device)
    for begin in range(0, len(order), hp["eval_batch_size"]):
        chunk = order[begin:begin + hp["eval_batch_size"]]
        batch = collate(task_format, [features[i] for i in chunk], pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(task, batch).float().cpu().numpy()
        for row, i in enumerate(chunk):
            per_token = task_format in ("tagging", "extractive_qa")
            outputs[i] = logits[row, :len(features[i]["input_ids"])] if per_token else logits[row]
    return [outputs[i] for i in range(len(features))]
