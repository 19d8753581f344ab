"""What the mixes are made of -- English intermediate tasks or source languages -- and the words
the analysis and the report use for them.

Everything that names a mix's members (units, table headers, figure labels, verdict sentences,
diversity measures) takes its words from :func:`member_words`, so a grid of language mixes
(multi-source fine-tuning, multilingual instruction tuning) reads "languages" throughout and a
grid of task mixes "tasks".
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from transferstats.results import BASELINE_MIX, SOURCE_KIND_COLUMN, SOURCE_KINDS


@dataclass(frozen=True)
class MemberWords:
    """The nouns for one kind of mix member."""

    kind: str
    #: "task" / "language"
    noun: str
    #: "tasks" / "languages"
    plural: str
    #: "intermediate task" / "source language": where the bare noun would be ambiguous (the
    #: target is a task too, the evaluated languages are languages too).
    qualified: str
    #: "intermediate tasks" / "source languages"
    qualified_plural: str
    #: What volume counts: "intermediate examples" / "training examples"
    examples: str
    #: The data the mixes are made of: "intermediate data" / "source-language data"
    data: str
    #: What is measured: "zero-shot transfer" / "cross-lingual transfer" (a language mix may
    #: hold the evaluated language, so its transfer is not always zero-shot)
    transfer: str
    #: How the encoder meets the mix, for the report's question.
    training: str

    @property
    def which(self) -> str:
        """Title of the identity-effects section: "Which tasks" / "Which languages"."""
        return f"Which {self.plural}"


_WORDS = {
    "task": MemberWords(
        "task", "task", "tasks", "intermediate task", "intermediate tasks",
        examples="intermediate examples", data="intermediate data", transfer="zero-shot transfer",
        training="trained on intermediate tasks before it is fine-tuned on a target task"),
    "language": MemberWords(
        "language", "language", "languages", "source language", "source languages",
        examples="training examples", data="source-language data",
        transfer="cross-lingual transfer",
        training="trained on data in a mix of source languages"),
}

#: The words of task mixes, the default of functions that describe members.
TASK_WORDS = _WORDS["task"]


def member_words(kind: str | None) -> MemberWords:
    """The words for members of ``kind`` (``None``, as in reports written before mixes had a
    kind, is ``task``)."""
    return _WORDS[kind or SOURCE_KINDS[0]]


def source_kind(scores: pd.DataFrame) -> str:
    """The kind of the (non-baseline) mixes of ``scores``; ``task`` when the column is absent.

    The loader refuses results that hold mixes of both kinds, so there is one.
    """
    if SOURCE_KIND_COLUMN not in scores.columns:
        return SOURCE_KINDS[0]
    kinds = scores.loc[scores["mix"] != BASELINE_MIX, SOURCE_KIND_COLUMN].dropna().unique()
    if len(kinds) > 1:
        raise ValueError(f"the results hold mixes of several kinds ({', '.join(sorted(kinds))})")
    return str(kinds[0]) if len(kinds) else SOURCE_KINDS[0]
