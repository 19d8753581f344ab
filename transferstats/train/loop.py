"""The training loop and batched inference, shared by phase 2 (many tasks) and phase 3 (one).

Efficiency on GPU: bf16 autocast, dynamic padding of length-grouped batches, fused AdamW, SDPA
attention (chosen when the encoder is loaded).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from transferstats.train.model import MultiTaskModel, collate, sequence_length
from transferstats.train.sampling import length_grouped_batches, task_schedule


def pick_device(requested: str | None) -> torch.device:
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def use_bf16(setting, device: torch.device) -> bool:
    return device.type == "cuda" if setting == "auto" else bool(setting)


def _batches_forever(lengths: list[int], batch_size: int, rng: np.random.Generator):
    while True:  # a new shuffle each epoch
        yield from length_grouped_batches(lengths, batch_size, rng)


def _optimizer(model: torch.nn.Module, hp: dict, device: torch.device) -> torch.optim.AdamW:
    # No weight decay on biases and LayerNorm weights, as in the BERT/RoBERTa recipes.
    decay, no_decay = [], []
    for parameter in model.parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp["learning_rate"], fused=device.type == "cuda")


def train(model: MultiTaskModel, tasks: dict[str, tuple[str, list[dict]]],
          probabilities: dict[str, float], hp: dict, seed: int, device: torch.device, pad_id: int,
          evaluate: Callable[[], float] | None = None) -> dict:
    """Train ``model`` on ``tasks`` (task -> (format, features)); return a log of the run.

    Each step draws a task with ``probabilities`` and takes that task's next batch. With
    ``evaluate`` (a dev score, higher is better) the best evaluated weights are restored at the end.
    """
    total = sum(len(features) for _, features in tasks.values())
    if total == 0:
        raise ValueError(f"no training examples for {sorted(tasks)}")
    steps_per_epoch = math.ceil(total / hp["batch_size"])
    steps = hp["max_steps"] or math.ceil(hp["epochs"] * steps_per_epoch)
    eval_every = hp["eval_steps"] or steps_per_epoch
    schedule = task_schedule(probabilities, steps, seed)
    rng = np.random.default_rng(seed)
    streams = {task: _batches_forever([sequence_length(fmt, f) for f in features],
                                      hp["batch_size"], rng)
               for task, (fmt, features) in tasks.items()}

    optimizer = _optimizer(model, hp, device)
    warmup = int(hp["warmup_ratio"] * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step / max(1, warmup) if step < warmup
        else max(0.0, (steps - step) / max(1, steps - warmup)))
    bf16 = use_bf16(hp["bf16"], device)

    log = {"steps": steps, "best_step": None, "dev_score": None, "train_samples": 0}
    best_state = None
    model.train()
    for step, task in enumerate(schedule, start=1):
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

        if evaluate and (step % eval_every == 0 or step == steps):
            score = evaluate()
            model.train()
            if log["dev_score"] is None or score > log["dev_score"]:
                log["dev_score"], log["best_step"] = score, step
                # A CPU copy: the best weights survive later steps without doubling GPU memory.
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    log["final_loss"] = float(loss.detach())
    return log


@torch.inference_mode()
def predict(model: MultiTaskModel, task: str, task_format: str, features: list[dict], hp: dict,
            device: torch.device, pad_id: int) -> list[np.ndarray]:
    """The head's output for each feature (in the features' order), without padding positions."""
    model.eval()
    order = sorted(range(len(features)), key=lambda i: sequence_length(task_format, features[i]))
    outputs: list[np.ndarray | None] = [None] * len(features)
    bf16 = use_bf16(hp["bf16"], device)
    for begin in range(0, len(order), hp["eval_batch_size"]):
        chunk = order[begin:begin + hp["eval_batch_size"]]
        batch = collate(task_format, [features[i] for i in chunk], pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(task, batch).float().cpu().numpy()
        for row, i in enumerate(chunk):
            per_token = task_format in ("tagging", "extractive_qa")
            outputs[i] = logits[row, :len(features[i]["input_ids"])] if per_token else logits[row]
    return outputs
