"""A shared pretrained encoder with one small head per task, and batching of features.

Heads follow the Hugging Face XLM-R task heads, reading the ``<s>`` token (classification,
multiple choice) or every token (tagging, QA spans).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


def load_encoder(name_or_path: str):
    """(encoder, tokenizer) from a hub name or local folder; the MLM head is dropped.

    ``from_pretrained`` honours the local cache and ``HF_HUB_OFFLINE``; the error says what to do
    when neither the folder nor the cache has it.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # the "unused lm_head weights" report is expected
    logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        encoder = AutoModel.from_pretrained(name_or_path, add_pooling_layer=False,
                                            attn_implementation="sdpa")
    except OSError as error:
        raise OSError(
            f"could not load the encoder {name_or_path!r}: it is neither a local folder with "
            f"config.json and weights nor in the Hugging Face cache ({error}). Download it once "
            f"where there is network (`hf download {name_or_path}`), or give a local folder."
        ) from error
    return encoder, tokenizer


class Head(nn.Module):
    """A task's head: ``forward(states, batch)`` gives its logits, ``loss(logits, batch)`` their
    training loss."""

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError


class ClassificationHead(Head):
    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense, self.out = nn.Linear(hidden, hidden), nn.Linear(hidden, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, states, batch):
        x = self.dropout(states[:, 0])
        return self.out(self.dropout(torch.tanh(self.dense(x))))

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])


class MultipleChoiceHead(Head):
    """Scores each (context, choice) sequence; the batch was flattened to batch x choices rows."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.dropout, self.out = nn.Dropout(dropout), nn.Linear(hidden, 1)

    def forward(self, states, batch):
        return self.out(self.dropout(states[:, 0])).view(-1, batch["num_choices"])

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])


class TaggingHead(Head):
    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout, self.out = nn.Dropout(dropout), nn.Linear(hidden, num_labels)

    def forward(self, states, batch):
        return self.out(self.dropout(states))

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                               ignore_index=-100)


class SpanHead(Head):
    """Start and end logits per token; position 0 (``<s>``) stands for "no answer here"."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.dropout, self.out = nn.Dropout(dropout), nn.Linear(hidden, 2)

    def forward(self, states, batch):
        logits = self.out(self.dropout(states)).float()
        padding = batch["attention_mask"] == 0
        return logits.masked_fill(padding[..., None], torch.finfo(logits.dtype).min)

    def loss(self, logits, batch):
        start, end = logits.unbind(-1)
        return (F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])) / 2


def make_head(task_format: str, hidden: int, num_labels: int | None, dropout: float) -> Head:
    if task_format == "classification":
        return ClassificationHead(hidden, _required_labels(task_format, num_labels), dropout)
    if task_format == "multiple_choice":
        return MultipleChoiceHead(hidden, dropout)
    if task_format == "tagging":
        return TaggingHead(hidden, _required_labels(task_format, num_labels), dropout)
    if task_format == "extractive_qa":
        return SpanHead(hidden, dropout)
    raise ValueError(f"format {task_format!r} has no head")


def _required_labels(task_format: str, num_labels: int | None) -> int:
    if num_labels is None:
        raise ValueError(f"a {task_format} head needs the number of labels")
    return num_labels


class MultiTaskModel(nn.Module):
    """One encoder, one head per task; a batch belongs to a single task."""

    def __init__(self, encoder: nn.Module, heads: dict[str, Head]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)

    def forward(self, task: str, batch: dict):
        states = self.encoder(input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"]).last_hidden_state
        return self.heads[task](states, batch)

    def loss(self, task: str, batch: dict):
        head = cast(Head, self.heads[task])  # nn.ModuleDict types its items as nn.Module
        return head.loss(self(task, batch), batch)


def collate(task_format: str, features: list[dict], pad_id: int, device) -> dict:
    """Pad a batch to its own longest sequence (dynamic padding) and move it to ``device``."""
    if task_format == "multiple_choice":
        rows = [ids for feature in features for ids in feature["input_ids"]]
    else:
        rows = [feature["input_ids"] for feature in features]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, :len(row)] = torch.tensor(row)
        attention_mask[r, :len(row)] = 1
    batch: dict[str, torch.Tensor | int] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if task_format in ("classification", "multiple_choice"):
        batch["labels"] = torch.tensor([feature["label"] for feature in features])
    if task_format == "multiple_choice":
        batch["num_choices"] = len(features[0]["input_ids"])
    if task_format == "tagging":
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for r, feature in enumerate(features):
            for position, tag_id in zip(feature["word_starts"], feature.get("tag_ids", ()), strict=False):
                labels[r, position] = tag_id
        batch["labels"] = labels
    if task_format == "extractive_qa":
        batch["start"] = torch.tensor([feature["start"] for feature in features])
        batch["end"] = torch.tensor([feature["end"] for feature in features])
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
            for key, value in batch.items()}


def sequence_length(task_format: str, feature: dict) -> int:
    if task_format == "multiple_choice":
        return max(len(ids) for ids in feature["input_ids"])
    return len(feature["input_ids"])
