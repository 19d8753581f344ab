"""Hyperparameter keys, their defaults, and how a job's dict is resolved. No torch.

Keys (a job's ``hyperparameters`` dict; unknown keys are an error so typos do not pass silently):

- ``learning_rate`` (1e-5; Phang et al. 2020 use 1e-5 for XLM-R Large), ``weight_decay`` (0.01),
  ``warmup_ratio`` (0.1, linear warm-up then linear decay), ``max_grad_norm`` (1.0).
- ``batch_size`` (32), ``eval_batch_size`` (128).
- ``epochs`` (3) or ``max_steps`` (None; when set it wins over ``epochs``). In phase 2 an epoch is
  the mix's total number of features; a task is drawn for each batch by the mix's sampling.
- ``max_length`` (128; default from ``[data] max_length``), ``qa_max_length`` (384) and
  ``doc_stride`` (128) for extractive QA windows; all capped by the model's positions.
- ``eval_steps`` (None: evaluate once per epoch and at the end): phase 3 selects the checkpoint with
  the best English dev score among these evaluations.
- ``retrieval_layer`` (None: the layer XTREME uses for XLM-R Large, 14 of 24, scaled to the model's
  depth): hidden layer mean-pooled for BUCC and Tatoeba.
- ``bf16`` ("auto": bf16 autocast on CUDA, off on CPU; true/false force it).
- ``dropout`` (0.1): dropout before every task head.
- ``checkpoint_steps`` (1000; None: only when warned of preemption): how often phases 2 and 3 save
  a checkpoint to resume from after preemption, a time-out or a crash. A checkpoint holds the
  weights three or four times over (optimizer moments, best dev weights), about 9 GB for XLM-R
  Large, so saving much more often than every few minutes costs more than it saves.
"""

from __future__ import annotations

DEFAULTS = {
    "learning_rate": 1e-5,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "max_grad_norm": 1.0,
    "batch_size": 32,
    "eval_batch_size": 128,
    "epochs": 3,
    "max_steps": None,
    "max_length": 128,
    "qa_max_length": 384,
    "doc_stride": 128,
    "eval_steps": None,
    "retrieval_layer": None,
    "bf16": "auto",
    "dropout": 0.1,
    "checkpoint_steps": 1000,  # see the module docstring: checkpoints are large
}


def resolve(hyperparameters: dict, data: dict) -> dict:
    """Defaults, then ``[data] max_length``, then the job's own values."""
    unknown = set(hyperparameters) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    resolved = dict(DEFAULTS)
    if "max_length" in data:
        resolved["max_length"] = data["max_length"]
    resolved.update(hyperparameters)
    return resolved


def retrieval_layer(resolved: dict, num_layers: int) -> int:
    if resolved["retrieval_layer"] is not None:
        return int(resolved["retrieval_layer"])
    return max(1, round(num_layers * 14 / 24))
