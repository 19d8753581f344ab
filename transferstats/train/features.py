"""Tokenising canonical examples into model features, cached per (data, tokenizer, max length).

Every feature keeps ``example``, the index of the example it came from (a long QA context gives
several features), so subsampling works on examples and predictions map back to them.

Feature keys by format:

- classification: ``input_ids``, ``label``
- multiple_choice: ``input_ids`` (one list per choice), ``label``
- tagging: ``input_ids``, ``word_starts`` (position of each kept word's first sub-token)
- extractive_qa: ``input_ids``, ``start``, ``end`` (answer token span; 0, 0 = unanswerable or not
  in this window), ``offsets`` (character span of each context token, None elsewhere)
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path

# Bump when the feature layout changes, so stale caches are not reused.
FEATURES_VERSION = 1


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies a tokenizer by its content, so a phase-2 copy of the same tokenizer shares cache."""
    cached = getattr(tokenizer, "_transferstats_fingerprint", None)
    if cached is None:
        content = tokenizer.backend_tokenizer.to_str()
        cached = hashlib.sha256(content.encode()).hexdigest()[:16]
        tokenizer._transferstats_fingerprint = cached
    return cached


def encode(task_format: str, examples: list[dict], tokenizer, max_length: int,
           doc_stride: int) -> list[dict]:
    if task_format == "classification":
        return _classification(examples, tokenizer, max_length)
    if task_format == "multiple_choice":
        return _multiple_choice(examples, tokenizer, max_length)
    if task_format == "tagging":
        return _tagging(examples, tokenizer, max_length)
    if task_format == "extractive_qa":
        return _extractive_qa(examples, tokenizer, max_length, doc_stride)
    raise ValueError(f"no features for format {task_format!r}")


def cached_encode(cache_dir: Path, key_parts: list[str], load_examples, task_format: str, tokenizer,
                  max_length: int, doc_stride: int) -> tuple[list[dict], list[dict], list | None]:
    """``(examples, features, labels)`` from the cache, or by loading and tokenising them.

    ``load_examples()`` returns ``(examples, labels)``; it is called only on a cache miss, so a
    cached data set is not even read again.
    """
    key = hashlib.sha256("|".join(
        [str(FEATURES_VERSION), task_format, tokenizer_fingerprint(tokenizer), str(max_length),
         str(doc_stride), *key_parts]).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "features" / f"{key}.pkl"
    if path.is_file():
        with path.open("rb") as handle:
            return pickle.load(handle)
    examples, labels = load_examples()
    entry = (examples, encode(task_format, examples, tokenizer, max_length, doc_stride), labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(descriptor, "wb") as file:
        pickle.dump(entry, file, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(temporary, path)  # concurrent jobs may race here; either copy is the same
    return entry


def _classification(examples, tokenizer, max_length):
    pairs = [e["text_pair"] for e in examples]
    encoded = tokenizer([e["text"] for e in examples],
                        pairs if any(p is not None for p in pairs) else None,
                        truncation=True, max_length=max_length)
    return [{"input_ids": ids, "label": e["label"], "example": i}
            for i, (ids, e) in enumerate(zip(encoded["input_ids"], examples, strict=True))]


def _multiple_choice(examples, tokenizer, max_length):
    contexts = [e["context"] for e in examples for _ in e["choices"]]
    choices = [choice for e in examples for choice in e["choices"]]
    encoded = tokenizer(contexts, choices, truncation=True, max_length=max_length)["input_ids"]
    features, position = [], 0
    for i, example in enumerate(examples):
        count = len(example["choices"])
        features.append({"input_ids": encoded[position:position + count], "label": example["label"],
                         "example": i})
        position += count
    return features


def _tagging(examples, tokenizer, max_length):
    encoded = tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True,
                        max_length=max_length)
    features = []
    for i in range(len(examples)):
        word_starts, previous = [], None
        for position, word in enumerate(encoded.word_ids(i)):
            if word is not None and word != previous:
                word_starts.append(position)
            previous = word
        features.append({"input_ids": encoded["input_ids"][i], "word_starts": word_starts,
                         "example": i})
    return features


def _extractive_qa(examples, tokenizer, max_length, doc_stride):
    """Sliding windows over the context (question first), as in the SQuAD recipes."""
    encoded = tokenizer([e["question"].lstrip() for e in examples], [e["context"] for e in examples],
                        truncation="only_second", max_length=max_length, stride=doc_stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
    features = []
    for f, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
        example = examples[example_index]
        sequence_ids = encoded.sequence_ids(f)
        offsets = [tuple(span) if sid == 1 else None
                   for span, sid in zip(encoded["offset_mapping"][f], sequence_ids, strict=True)]
        start = end = 0
        answers = example["answers"]
        if answers["text"]:
            first = answers["answer_start"][0]
            last = first + len(answers["text"][0])
            inside = [(p, span) for p, span in enumerate(offsets)
                      if span and span[0] < last and span[1] > first]
            if inside and inside[0][1][0] <= first and inside[-1][1][1] >= last:
                start, end = inside[0][0], inside[-1][0]
        features.append({"input_ids": encoded["input_ids"][f], "start": start, "end": end,
                         "offsets": offsets, "example": example_index})
    return features
