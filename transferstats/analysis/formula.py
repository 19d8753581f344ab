"""Random-effects terms and lme4's model formulae, for :mod:`transferstats.analysis.lmm`.

A :class:`RandomTerm` is one bar term of lme4: a grouping factor and the columns whose effects
vary between its levels, with an unstructured covariance matrix between them. lme4's ``||``
(uncorrelated) is, as in lme4, a sum of one-column terms on the same factor.
:func:`parse_formula` reads the part of lme4's notation that transfer grids need:

    y ~ a * b + c + (1 + a + b | g) + (1 + a || g) + (1 | g:h) + (0 + a | g)

``a * b`` is ``a + b + a:b``, ``a:b`` the product of two numeric columns, ``g:h`` the factor
crossing two columns; ``0 +`` or ``- 1`` removes an intercept, fixed or random.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The name of the intercept among fixed effects and random-effect columns.
INTERCEPT = "Intercept"

_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"


@dataclass(frozen=True)
class RandomTerm:
    """Correlated random effects of ``columns`` between the levels of ``factor``.

    Parameters
    ----------
    factor : str
        A categorical column, or ``"g:h"`` for the crossing of two columns.
    columns : tuple of str
        ``"Intercept"`` and/or numeric columns (``"a:b"`` is their product), in model order.
    """

    factor: str
    columns: tuple[str, ...] = (INTERCEPT,)

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError(f"random term on {self.factor!r}: it needs at least one column")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"random term on {self.factor!r}: repeated column in {self.columns}")

    @property
    def size(self) -> int:
        """Number of columns k: the term has k x k covariance matrix and k (k + 1) / 2 thetas."""
        return len(self.columns)

    @property
    def label(self) -> str:
        """The term in lme4's notation, e.g. ``"(1 + div | target_task)"``."""
        parts = ["1" if c == INTERCEPT else c for c in self.columns]
        if INTERCEPT not in self.columns:
            parts.insert(0, "0")
        return f"({' + '.join(parts)} | {self.factor})"


def random_terms(random: Sequence[str], slopes: Mapping[str, Sequence[str]] | None = None,
                 correlated: bool = True) -> list[RandomTerm]:
    """The terms of :func:`~transferstats.analysis.mixed.fit_crossed`'s ``random`` and ``slopes``.

    Each factor in ``random`` gets a random intercept; a factor in ``slopes`` also gets random
    slopes of the predictors it maps to, correlated with its intercept (``(1 + x | g)``) or,
    with ``correlated=False``, independent of it and of each other (``(1 + x || g)``).
    """
    slopes = dict(slopes or {})
    unknown = sorted(set(slopes) - set(random))
    if unknown:
        raise ValueError(f"slopes: factors {unknown} are not among the random factors {list(random)}")
    terms: list[RandomTerm] = []
    for factor in random:
        columns = (INTERCEPT, *slopes.get(factor, ()))
        if correlated:
            terms.append(RandomTerm(factor, columns))
        else:
            terms.extend(RandomTerm(factor, (column,)) for column in columns)
    return terms


@dataclass(frozen=True)
class Formula:
    """A parsed model formula: response, fixed-effect columns (no intercept) and random terms."""

    outcome: str
    fixed: tuple[str, ...]
    random: tuple[RandomTerm, ...]
    intercept: bool = True


def _split_top(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts]


def _names(expression: str, formula: str) -> list[str]:
    names = [name.strip() for name in expression.split(":")]
    for name in names:
        if not re.fullmatch(_NAME, name):
            raise ValueError(f"formula {formula!r}: {name!r} is not a column name")
    return names


def _fixed_terms(term: str, formula: str) -> list[str]:
    """``a * b`` -> a, b, a:b; ``a:b`` -> a:b; ``a`` -> a."""
    factors = [":".join(_names(part, formula)) for part in term.split("*")]
    expanded: list[str] = []
    for size in range(1, len(factors) + 1):
        expanded.extend(":".join(combo) for combo in itertools.combinations(factors, size))
    return expanded


def _bar_terms(term: str, formula: str) -> list[RandomTerm]:
    match = re.fullmatch(r"\((.*?)(\|\|?)(.*)\)", term)
    if match is None:
        raise ValueError(f"formula {formula!r}: cannot read the random term {term!r}; expected "
                         "(1 + x | g) or (1 + x || g)")
    lhs, bar, factor = match.group(1), match.group(2), match.group(3).strip()
    factor = ":".join(_names(factor, formula))
    intercept, columns = True, []
    for part in _split_top(lhs.replace("- 1", "+ 0").replace("-1", "+0"), "+"):
        if part in ("0", "1"):
            intercept = part == "1"
        elif part:
            columns.extend(_fixed_terms(part, formula))
    columns = [INTERCEPT, *columns] if intercept else columns
    if bar == "|":
        return [RandomTerm(factor, tuple(columns))]
    return [RandomTerm(factor, (column,)) for column in columns]


def parse_formula(formula: str) -> Formula:
    """Read a model formula in lme4's notation (module docstring).

    Raises
    ------
    ValueError
        Naming the part of the formula that is not understood.
    """
    if formula.count("~") != 1:
        raise ValueError(f"formula {formula!r}: expected one '~' between the response and the terms")
    lhs, rhs = (side.strip() for side in formula.split("~"))
    if not re.fullmatch(_NAME, lhs):
        raise ValueError(f"formula {formula!r}: the response {lhs!r} is not a column name")
    fixed: list[str] = []
    random: list[RandomTerm] = []
    intercept = True
    for term in _split_top(rhs.replace("- 1", "+ 0").replace("-1", "+0"), "+"):
        if term in ("0", "1"):
            intercept = term == "1"
        elif term.startswith("("):
            random.extend(_bar_terms(term, formula))
        elif term:
            fixed.extend(t for t in _fixed_terms(term, formula) if t not in fixed)
        else:
            raise ValueError(f"formula {formula!r}: an empty term")
    if not random:
        raise ValueError(f"formula {formula!r}: no random term such as (1 | g)")
    return Formula(lhs, tuple(fixed), tuple(random), intercept)
