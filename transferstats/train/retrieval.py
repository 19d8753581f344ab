"""Sentence retrieval without training (BUCC, Tatoeba): mean-pooled hidden states of one layer,
cosine similarity, and for BUCC margin-based mining with a threshold tuned on dev."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from transferstats.train import metrics
from transferstats.train.loop import use_bf16

MARGIN_NEIGHBOURS = 4


@torch.inference_mode()
def embed(encoder, tokenizer, sentences: list[str], layer: int, hp: dict, max_length: int,
          device: torch.device) -> torch.Tensor:
    """Unit-length sentence vectors: the mean of ``layer``'s states over real (unpadded) tokens."""
    encoder.eval()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    vectors = torch.empty(len(sentences), encoder.config.hidden_size, device=device)
    for begin in range(0, len(order), hp["eval_batch_size"]):
        chunk = order[begin:begin + hp["eval_batch_size"]]
        batch = tokenizer([sentences[i] for i in chunk], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt").to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(hp["bf16"], device)):
            states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True).hidden_states[layer].float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        vectors[chunk] = F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    return vectors


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int = 1024
            ) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k most cosine-similar keys, in chunks so BUCC's ~10^5 x 10^5 never sits whole."""
    k = min(k, len(keys))
    indices, similarities = [], []
    for begin in range(0, len(queries), chunk):
        top = (queries[begin:begin + chunk] @ keys.T).topk(k, dim=1)
        indices.append(top.indices.cpu().numpy())
        similarities.append(top.values.cpu().numpy())
    return np.concatenate(indices), np.concatenate(similarities)


def tatoeba(embed_fn, example: dict) -> dict[str, float]:
    source, target = embed_fn(example["source"]), embed_fn(example["target"])
    return {"accuracy": metrics.tatoeba_accuracy((source @ target.T).cpu().numpy())}


def bucc_candidates(embed_fn, example: dict) -> tuple[list[tuple[int, int, float]], set]:
    source, target = embed_fn(example["source"]), embed_fn(example["target"])
    candidates = metrics.mine_candidates(nearest(source, target, MARGIN_NEIGHBOURS),
                                         nearest(target, source, MARGIN_NEIGHBOURS))
    return candidates, {tuple(pair) for pair in example["gold"]}
