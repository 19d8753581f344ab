"""From head outputs to per-example predictions to XTREME scores. numpy only."""

from __future__ import annotations

import numpy as np

from transferstats.train import metrics

MAX_ANSWER_TOKENS = 30
TOP_SPANS = 20


def score(task_format: str, examples: list[dict], features: list[dict], outputs: list[np.ndarray],
          labels: list[str] | None, lang: str) -> dict[str, float]:
    """Metric name -> value (percent) for one language's evaluation set."""
    if task_format in ("classification", "multiple_choice"):
        choices = [int(np.argmax(output)) for output in outputs]
        return {"accuracy": metrics.accuracy(choices, [f["label"] for f in features])}
    if task_format == "tagging":
        tags = tag_predictions(examples, features, outputs, labels)
        return {"f1": metrics.tagging_f1(tags, [e["tags"] for e in examples])}
    if task_format == "extractive_qa":
        spans = span_predictions(examples, features, outputs)
        return metrics.squad_scores(spans, [e["answers"]["text"] for e in examples], lang)
    raise ValueError(f"no scoring for format {task_format!r}")


def tag_predictions(examples, features, outputs, labels) -> list[list[str]]:
    """The tag of each word from its first sub-token. Words cut off by ``max_length`` get the
    first label (``O`` for NER), so every gold tag is scored, as in XTREME."""
    predictions = []
    for example, feature, output in zip(examples, features, outputs, strict=True):
        tags = [labels[int(np.argmax(output[p]))] for p in feature["word_starts"]]
        predictions.append(tags + [labels[0]] * (len(example["tokens"]) - len(tags)))
    return predictions


def span_predictions(examples, features, outputs) -> list[str]:
    """The best-scoring answer span of each example over all its windows (start + end logit,
    end not before start, at most 30 tokens, inside the context)."""
    best: dict[int, tuple[float, str]] = {}
    for feature, output in zip(features, outputs, strict=True):
        context = examples[feature["example"]]["context"]
        offsets = feature["offsets"]
        starts, ends = output[:, 0], output[:, 1]
        for s in np.argsort(-starts)[:TOP_SPANS]:
            if offsets[s] is None:
                continue
            for e in np.argsort(-ends)[:TOP_SPANS]:
                if offsets[e] is None or e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                    continue
                value = float(starts[s] + ends[e])
                if feature["example"] not in best or value > best[feature["example"]][0]:
                    best[feature["example"]] = (value, context[offsets[s][0]:offsets[e][1]].strip())
    return [best.get(i, (0.0, ""))[1] for i in range(len(examples))]
