"""What the three importers share: a source run, a score read from it, and the naming rules.

A *source run* is one run as the other tool wrote it: a folder and the result files read from it.
The manifest (:mod:`transferstats.importers.manifest`) says which model, mix and seed it belongs
to; the format modules turn its files into :class:`Score` records, in percent and with the
contract's metric names, each remembering the file and key it came from so that a problem found
later by the contract's validation names the place in the tool's output.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

from transferstats.problems import Problem
from transferstats.tasks import get_task

#: The tools' metric names -> the contract's. lm-evaluation-harness says ``acc``, ``f1``,
#: ``exact_match``; Hugging Face ``evaluate`` says ``accuracy``, ``f1``, ``exact_match``; jiant
#: says ``acc``, ``f1``, ``em`` / ``exact`` (QA) and ``F1`` (BUCC). A manifest's ``metrics``
#: table adds to these or overrides them.
DEFAULT_METRICS = {"acc": "accuracy", "accuracy": "accuracy", "f1": "f1", "F1": "f1",
                   "em": "exact_match", "exact": "exact_match", "exact_match": "exact_match"}
#: Task-name prefixes of lm-evaluation-harness and jiant -> target task ids: a task is named
#: ``<prefix>_<language>`` (``xnli_de``, ``paws_de``, ``tydiqa_goldp_ar``, ``mlqa_de_de``). A
#: manifest's ``targets`` table adds to these or overrides them.
DEFAULT_TARGETS = {"xnli": "xnli", "paws": "pawsx", "pawsx": "pawsx", "udpos": "udpos",
                   "panx": "panx", "wikiann": "panx", "xquad": "xquad", "mlqa": "mlqa",
                   "tydiqa": "tydiqa", "tydiqa_goldp": "tydiqa", "bucc2018": "bucc2018",
                   "tatoeba": "tatoeba"}
SCALES = ("fraction", "percent")


@dataclass(frozen=True)
class SourceRun:
    """One run in the other tool's output.

    ``name`` is its folder relative to SOURCE (SOURCE's own name when the run is SOURCE itself);
    ``files`` are the result files read, ``labels`` the same relative to SOURCE (what a
    manifest's ``files`` glob is matched against); ``model_name`` the evaluated model as the
    tool recorded it, where it does (lm-evaluation-harness; a manifest's ``model_name``).
    """

    name: str
    files: tuple[Path, ...]
    labels: tuple[str, ...]
    model_name: str | None = None


@dataclass(frozen=True)
class Score:
    """One score read from a source run, ready for ``scores.jsonl``; ``file`` and ``key`` say
    where it was read, ``raw`` and ``scale`` how its value was made."""

    target_task: str
    language: str
    metric: str
    split: str
    value: float
    n_examples: int | None
    file: str
    key: str
    raw: float
    scale: str
    stderr: float | None = None

    def row(self) -> dict:
        """The ``scores.jsonl`` line (``stderr`` only when the tool reported one)."""
        row = {"language": self.language, "metric": self.metric, "split": self.split,
               "value": self.value, "n_examples": self.n_examples}
        return row if self.stderr is None else row | {"stderr": self.stderr}


@dataclass
class Reading:
    """What a format module read from one source run: its scores, the problems met, and the
    model and seed when the tool's run config records them (jiant)."""

    scores: list[Score] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    model: str | None = None
    seed: int | None = None

    def add(self, item: Score | Problem) -> None:
        """Keep a score, or the problem that stood in for it."""
        if isinstance(item, Problem):
            self.problems.append(item)
        else:
            self.scores.append(item)


def find_runs(source: Path, patterns: tuple[str, ...]) -> dict[Path, list[Path]]:
    """Folders at any depth below ``source`` (itself included) -> their files matching any of
    ``patterns``, in pattern order. Hidden folders are not searched, as in the loader."""
    found: dict[Path, list[Path]] = {}
    for pattern in patterns:
        for path in sorted(source.rglob(pattern)):
            relative = path.relative_to(source).parts
            if path.is_file() and not any(part.startswith(".") for part in relative[:-1]):
                found.setdefault(path.parent, []).append(path)
    return dict(sorted(found.items()))


def source_run(source: Path, folder: Path, files: list[Path],
               model_name: str | None = None) -> SourceRun:
    """The :class:`SourceRun` of ``folder``'s ``files``, named relative to ``source``."""
    name = folder.relative_to(source).as_posix()
    return SourceRun(name=source.resolve().name if name == "." else name, files=tuple(files),
                     labels=tuple(path.relative_to(source).as_posix() for path in files),
                     model_name=model_name)


def read_json_object(path: Path) -> tuple[dict | None, list[Problem]]:
    """A JSON file holding an object, or the problem that it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        return None, [Problem(str(path), "", "error", f"cannot read: {error.strerror}")]
    except json.JSONDecodeError as error:
        return None, [Problem(str(path), f"line {error.lineno}", "error",
                              f"malformed JSON ({error.msg} at column {error.colno})")]
    if not isinstance(document, dict):
        return None, [Problem(str(path), "", "error",
                              f"expected a JSON object, got {type(document).__name__}")]
    return document, []


def skipped(task: str, patterns: tuple[str, ...]) -> bool:
    """Whether a tool's task name matches one of the manifest's ``skip_tasks`` globs."""
    return any(fnmatch.fnmatchcase(task, pattern) for pattern in patterns)


def target_and_language(task: str, targets: dict[str, str]) -> tuple[str, str] | None:
    """``xnli_de`` -> ``("xnli", "de")`` by the longest known prefix; ``None`` if none fits.

    The harness names MLQA tasks ``mlqa_<context>_<question>``; XTREME evaluates the pairs of
    one language, so ``mlqa_de_de`` is German (``mlqa_de_en`` keeps ``de_en``, which no target
    has, and is refused by the validation).
    """
    prefixes = sorted((p for p in targets if task.startswith(p + "_")), key=len, reverse=True)
    if not prefixes:
        return None
    language = task[len(prefixes[0]) + 1:]
    context, _, question = language.partition("_")
    return targets[prefixes[0]], context if context == question else language


def no_target(file: Path, where: str, task: str, targets: dict[str, str]) -> Problem:
    """The problem of a tool's task name that :func:`target_and_language` cannot place."""
    return Problem(str(file), where, "error",
                   f"task {task!r} names no target: expected <prefix>_<language> with a prefix of "
                   f"`targets` ({', '.join(sorted(targets))}); map yours in `targets` or leave "
                   "the task out with `skip_tasks`")


def qa_percent_scale(target: str) -> str:
    """The scale of a target's scores when the manifest gives none, for tools whose QA scores
    come from the SQuAD or MLQA evaluation scripts (percent) and the others from accuracy,
    seqeval or scikit-learn (0-1): Hugging Face example scripts and jiant."""
    return "percent" if get_task(target).format == "extractive_qa" else "fraction"


def _percent(value: float, scale: str) -> float:
    # Rounded so that 0.4 reads as 40.0, not 40.00000000000001.
    return round(value * 100, 10) if scale == "fraction" else value


def make_score(*, target: str, language: str, metric: str, split: str, value: object,
               n_examples: object, scale: str, file: Path, key: str,
               stderr: object = None, stderr_key: str = "") -> Score | Problem:
    """A :class:`Score` in percent (``fraction`` values times 100), or the problem with ``value``
    or ``stderr``.

    ``stderr`` is the score's standard error on the value's scale, read from ``stderr_key``;
    ``None`` (and lm-evaluation-harness's ``"N/A"``, written where it computed none) leaves it
    out.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return Problem(str(file), key, "error", f"expected a number, got {value!r}")
    given = stderr is not None and stderr != "N/A"
    if given and (not isinstance(stderr, (int, float)) or isinstance(stderr, bool)):
        return Problem(str(file), stderr_key, "error",
                       f"expected a standard error (a number, or \"N/A\"), got {stderr!r}")
    examples = n_examples if isinstance(n_examples, int) and not isinstance(n_examples, bool) \
        else None
    return Score(target_task=target, language=language, metric=metric, split=split,
                 value=_percent(value, scale), n_examples=examples,
                 file=str(file), key=key, raw=value, scale=scale,
                 stderr=_percent(stderr, scale) if isinstance(stderr, (int, float)) else None)
