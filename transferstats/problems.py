"""Problems met in the input, and short views of many of them.

One bad column of a 35,000-row table is one problem per row; printed one per line that is a flood
nobody reads. :func:`group_problems` folds the problems of one kind into one row with a count and
the first places, :func:`print_problems` prints those rows, and :func:`write_problems` keeps the
full list in a file, so that every problem stays findable.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from rich.console import Console

#: Where the commands write the full list when they print it grouped (the current folder).
PROBLEMS_FILE = "transferstats-problems.tsv"
#: Kinds printed by :func:`print_problems` and listed in :class:`ResultsError` messages.
PRINT_LIMIT = 20
#: Places shown per kind.
FIRST_LOCATIONS = 3
#: A message template with at most this many different messages lists each message as a kind.
MAX_VARIANTS = 10
#: Values listed for a part of a message that varies within one kind.
SHOWN_VALUES = 3

# The parts of a message that change from one row or file to the next: quoted values and numbers.
_VALUE = re.compile(r"""'[^']*'|"[^"]*"|(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)""")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input. ``severity`` is ``error`` (refuse) or ``warning``."""

    file: str
    location: str
    severity: str
    message: str

    def __str__(self) -> str:
        """``severity: file:location: message``, the form printed one per line."""
        return f"{self.severity}: {self.place}: {self.message}"

    @property
    def place(self) -> str:
        """``file:location``, or the file alone when the problem is about all of it."""
        return f"{self.file}:{self.location}" if self.location else self.file


class ResultsError(ValueError):
    """The input cannot be analysed; ``problems`` lists every reason.

    The message lists the errors grouped by kind (:func:`group_problems`), so that thousands of
    errors of one kind read as one line; ``problems`` keeps each of them.
    """

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        lines = [line for _, line in _summary_lines(_kinds(errors), PRINT_LIMIT)]
        super().__init__(f"{len(errors)} error(s) in the results:\n" +
                         "\n".join(f"  {line}" for line in lines))


@dataclass
class _Kind:
    """Problems of one severity and one message, or of one message template (see :func:`group_problems`)."""

    severity: str
    messages: dict[str, int]  # each different message and its count, in order of first appearance
    first: list[tuple[int, Problem]]  # (position in the input, problem), the first few

    @property
    def count(self) -> int:
        return sum(self.messages.values())

    @property
    def message(self) -> str:
        """The message, or for several: their shared parts and the first values of the others."""
        if len(self.messages) == 1:
            return next(iter(self.messages))
        template = _VALUE.sub("\0", next(iter(self.messages)))
        columns = zip(*(_VALUE.findall(message) for message in self.messages), strict=True)
        parts = template.split("\0")
        text = parts[0]
        for values, literal in zip(columns, parts[1:], strict=True):
            distinct = list(dict.fromkeys(values))
            if len(distinct) == 1:
                text += distinct[0]
            else:
                more = ", …" if len(distinct) > SHOWN_VALUES else ""
                text += f"[{', '.join(distinct[:SHOWN_VALUES])}{more}]"
            text += literal
        return text


def _kinds(problems: Sequence[Problem], locations: int = FIRST_LOCATIONS,
           max_variants: int = MAX_VARIANTS) -> list[_Kind]:
    exact: dict[tuple[str, str], _Kind] = {}
    for position, problem in enumerate(problems):
        kind = exact.get((problem.severity, problem.message))
        if kind is None:
            kind = exact[problem.severity, problem.message] = _Kind(problem.severity,
                                                                    {problem.message: 0}, [])
        kind.messages[problem.message] += 1
        if len(kind.first) < locations:
            kind.first.append((position, problem))

    by_template: dict[tuple[str, str], list[_Kind]] = {}
    for (severity, message), kind in exact.items():
        by_template.setdefault((severity, _VALUE.sub("\0", message)), []).append(kind)
    kinds = []
    for variants in by_template.values():
        count = sum(kind.count for kind in variants)
        # Many different messages that hardly repeat carry a row's own value (a score, a run
        # id): one kind for all of them. Messages that repeat (an unknown task id in every row)
        # stay one kind each, so each value is named with its own count.
        if len(variants) <= max_variants or count >= 2 * len(variants):
            kinds += variants
        else:
            first = sorted(item for kind in variants for item in kind.first)[:locations]
            kinds.append(_Kind(variants[0].severity,
                               {m: n for kind in variants for m, n in kind.messages.items()}, first))
    return sorted(kinds, key=lambda kind: (kind.severity != "error", -kind.count, kind.first[0][0]))


def group_problems(problems: Iterable[Problem], *, locations: int = FIRST_LOCATIONS,
                   max_variants: int = MAX_VARIANTS) -> pd.DataFrame:
    """One row per kind of problem, with how many there are and where the first ones are.

    Problems of one kind have the same severity and message. Messages that differ only in their
    quoted values and numbers (their template) and that do not repeat, such as a score out of
    range in thousands of rows each with its own value, form one kind when there are more than
    ``max_variants`` of them; its message keeps the parts they share and lists the first few
    values of the parts that vary.

    Parameters
    ----------
    problems : iterable of Problem
        The problems, in the order they were met.
    locations : int, default 3
        How many places to list per kind.
    max_variants : int, default 10
        Different messages of one template shown as separate kinds even when they do not repeat.

    Returns
    -------
    pandas.DataFrame
        ``severity, message, count, first_locations`` (the first places as ``file:location``
        joined by ``"; "``); errors before warnings, then the most frequent first.

    Examples
    --------
    >>> problems = [Problem("t.csv", f"row {i}", "error", "unknown task id 'de'; register it first")
    ...             for i in range(1, 5001)]
    >>> group_problems(problems).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'severity': 'error', 'message': "unknown task id 'de'; register it first", 'count': 5000,
     'first_locations': 't.csv:row 1; t.csv:row 2; t.csv:row 3'}
    """
    kinds = _kinds(list(problems), locations, max_variants)
    return pd.DataFrame({
        "severity": [kind.severity for kind in kinds],
        "message": [kind.message for kind in kinds],
        "count": [kind.count for kind in kinds],
        "first_locations": ["; ".join(problem.place for _, problem in kind.first) for kind in kinds],
    }, columns=["severity", "message", "count", "first_locations"])


def _summary_lines(kinds: list[_Kind], limit: int) -> list[tuple[str, str]]:
    """``(severity, line)`` for the first ``limit`` kinds, and a line counting the rest."""
    lines = []
    for kind in kinds[:limit]:
        problems = [problem for _, problem in kind.first]
        if kind.count == 1:
            lines.append((kind.severity, str(problems[0])))
            continue
        files = {problem.file for problem in problems}
        if len(files) == 1 and all(problem.location for problem in problems):
            places = f"{problems[0].file}: " + "; ".join(problem.location for problem in problems)
        else:
            places = "; ".join(problem.place for problem in problems)
        more = "; …" if kind.count > len(problems) else ""
        lines.append((kind.severity, f"{kind.severity}: {kind.message} ({kind.count:,} times; "
                                     f"first at {places}{more})"))
    rest = kinds[limit:]
    if rest:
        count = sum(kind.count for kind in rest)
        lines.append(("", f"… and {len(rest)} more kind(s) of problem ({count:,} problem(s))"))
    return lines


def print_problems(problems: Sequence[Problem], console: Console, *, limit: int = PRINT_LIMIT,
                   full_list: str | Path | None = None) -> Path | None:
    """Print the problems grouped by kind, one line per kind, and keep the full list in a file.

    A kind met once prints as the problem itself; a kind met more often prints its message, how
    many times and the first places. When some problems are not printed on a line of their own,
    every problem is written to ``full_list`` (see :func:`write_problems`) and its path printed.

    Parameters
    ----------
    problems : sequence of Problem
        The problems, in the order they were met.
    console : rich.console.Console
        Where to print.
    limit : int, default 20
        Kinds printed; the others are counted in one line.
    full_list : str or pathlib.Path, optional
        Where to write every problem when the printed lines do not show each one. Without it
        nothing is written.

    Returns
    -------
    pathlib.Path or None
        The full list written, or ``None``.
    """
    kinds = _kinds(problems)
    for severity, line in _summary_lines(kinds, limit):
        style = {"error": "red", "warning": "yellow"}.get(severity, "")
        console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)
    each_shown = len(kinds) <= limit and all(kind.count == 1 for kind in kinds)
    if each_shown or full_list is None:
        return None
    path = write_problems(problems, full_list)
    console.print(f"all {len(problems):,} problem(s), one per line: {path}", markup=False,
                  highlight=False, soft_wrap=True)
    return path


def write_problems(problems: Iterable[Problem], path: str | Path) -> Path:
    r"""Write every problem, one per line: ``severity, file, location, message``.

    Tab-separated, or comma-separated when ``path`` ends in ``.csv``; the first line names the
    columns, so ``pandas.read_csv(path, sep="\t")`` reads it back.

    Parameters
    ----------
    problems : iterable of Problem
        The problems to write.
    path : str or pathlib.Path
        The file to write; its folder is created.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(["severity", "file", "location", "message"])
        writer.writerows((p.severity, p.file, p.location, p.message) for p in problems)
    return path
