"""Training speed of phases 2 and 3 against a plain Hugging Face ``Trainer`` (default arguments).

Both sides get the same model (built from config, random weights), the same examples and the same
number of optimiser steps. The data are random token ids of varying length (16 to ``--length``
tokens), so that dynamic padding matters as it does on real text. The ``Trainer`` side pads every
example to ``--length`` as the Hugging Face GLUE recipe does by default (``pad_to_max_length``).

- Phase 3: one classification task (3 labels).
- Phase 2: a two-task mix (3-label and 2-label classification, equal sizes, proportional
  sampling), one head per task. The ``Trainer`` trains one 3-label model on the concatenation, its
  closest single-model equivalent.

Each measurement runs in a fresh process. Samples/s counts training examples per second of
training (model building excluded). Peak memory is CUDA's peak allocation, or on CPU the peak
resident set size above the level before training.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from typing import Any

import numpy as np
import torch

from transferstats.train.hyperparameters import resolve
from transferstats.train.loop import pick_device, train
from transferstats.train.model import MultiTaskModel, make_head

LARGE: dict[str, Any] = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                         "intermediate_size": 4096, "vocab_size": 250002}
TINY: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 64, "vocab_size": 1000}
PAD_ID = 1


def _config(tiny: bool):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(**(TINY if tiny else LARGE), max_position_embeddings=514,
                            type_vocab_size=1, pad_token_id=PAD_ID, bos_token_id=0, eos_token_id=2)


def _features(count: int, length: int, num_labels: int, vocab: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": [0] + rng.integers(5, vocab, size=int(n) - 2).tolist() + [2],
             "label": int(rng.integers(num_labels)), "example": i}
            for i, n in enumerate(rng.integers(16, length + 1, size=count))]


class _PeakMemory:
    """CUDA peak allocation, or sampled peak RSS growth on CPU (``ru_maxrss`` cannot be reset)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._running = device, 0, False

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._base, self._running = self._rss(), True

        def sample():
            while self._running:
                self.peak = max(self.peak, self._rss() - self._base)
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._running = False
            self._thread.join()


def _ours(tasks: dict[str, list[dict]], num_labels: dict[str, int], args, device) -> tuple[float, int]:
    from transformers import XLMRobertaModel

    torch.manual_seed(0)
    config = _config(args.tiny)
    encoder = XLMRobertaModel(config, add_pooling_layer=False)
    heads = {t: make_head("classification", config.hidden_size, num_labels[t], 0.1) for t in tasks}
    model = MultiTaskModel(encoder, heads).to(device)
    sizes = {t: len(f) for t, f in tasks.items()}
    probabilities = {t: n / sum(sizes.values()) for t, n in sizes.items()}
    hp = resolve({"batch_size": args.batch_size, "max_steps": args.steps}, {})
    with _PeakMemory(device) as memory:
        start = time.perf_counter()
        log = train(model, {t: ("classification", f) for t, f in tasks.items()}, probabilities, hp,
                    0, device, PAD_ID)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return log["train_samples"] / elapsed, memory.peak


def _trainer(features: list[dict], num_labels: int, args, device) -> tuple[float, int]:
    from transformers import Trainer, TrainingArguments, XLMRobertaForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = _config(args.tiny)
    config.num_labels = num_labels
    model = XLMRobertaForSequenceClassification(config)
    padded = [{"input_ids": f["input_ids"] + [PAD_ID] * (args.length - len(f["input_ids"])),
               "attention_mask": [1] * len(f["input_ids"]) + [0] * (args.length - len(f["input_ids"])),
               "labels": f["label"]} for f in features]
    with tempfile.TemporaryDirectory() as output:
        # Defaults, except what a benchmark must fix: batch size, steps, no checkpoints or logs.
        training = TrainingArguments(output_dir=output, per_device_train_batch_size=args.batch_size,
                                     max_steps=args.steps, save_strategy="no", report_to="none",
                                     disable_tqdm=True, use_cpu=device.type == "cpu")
        trainer = Trainer(model=model, args=training, train_dataset=padded)
        with _PeakMemory(device) as memory:
            start = time.perf_counter()
            trainer.train()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
    return args.steps * args.batch_size / elapsed, memory.peak


def _isolated(measure, *arguments):
    """Run one measurement in a fresh process, so neither side inherits the other's allocations,
    warm caches or peak."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, arguments)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU), not XLM-R Large size")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (20; tiny: 60)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128, help="longest sequence, in tokens")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (60 if args.tiny else 20)
    device = pick_device(args.device)
    vocab = _config(args.tiny).vocab_size
    count = args.steps * args.batch_size
    nli = _features(count, args.length, 3, vocab, seed=1)
    mix = {"nli": nli[:count // 2], "paraphrase": _features(count - count // 2, args.length, 2,
                                                             vocab, seed=2)}
    rows = []
    for phase, tasks, labels in (("phase 3", {"nli": nli}, {"nli": 3}),
                                 ("phase 2", mix, {"nli": 3, "paraphrase": 2})):
        flat = [f for features in tasks.values() for f in features]
        for name, measure, inputs in (("transferstats", _ours, (tasks, labels)),
                                      ("HF Trainer (defaults)", _trainer, (flat, 3))):
            speed, peak = _isolated(measure, *inputs, args, device)
            rows.append({"phase": phase, "trainer": name, "samples_per_s": speed,
                         "peak_mb": peak / 2**20})
    size = "tiny" if args.tiny else "XLM-R Large size"
    print(f"{size} model, {device}, batch {args.batch_size}, lengths 16-{args.length}, "
          f"{args.steps} steps")
    print(f"{'phase':8} {'trainer':24} {'samples/s':>10} {'peak MiB':>10}")
    for row in rows:
        print(f"{row['phase']:8} {row['trainer']:24} {row['samples_per_s']:10.1f} "
              f"{row['peak_mb']:10.1f}")
    return rows
