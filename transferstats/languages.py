"""Language codes: which strings name a language.

Scores name their evaluation language by an ISO 639 code, as XTREME does (``de``, ``sw``; three
letters where there is no two-letter code: ``yue``, ``gsw``), and mixes of kind ``language``
(multi-source fine-tuning, multilingual instruction tuning) list their members the same way. A
built-in target accepts any such code beyond XTREME's list for it (a Universal Dependencies
evaluation covers 100+ languages, more than XTREME's ``udpos`` subset), with one warning naming
them (:mod:`transferstats.loading`); a string that is not a code stays an error, and so does a
mix member that is not one. No registration is needed.

The list of codes is the IANA Language Subtag Registry's, as the ``langcodes`` package keeps it
(https://pypi.org/project/langcodes/): it holds every ISO 639-1 code and every ISO 639-2/639-3
code without one (BCP 47, RFC 5646 section 2.2.1).

References
----------
Phillips, A. & Davis, M. (2009). RFC 5646: Tags for Identifying Languages (BCP 47).
IANA Language Subtag Registry, https://www.iana.org/assignments/language-subtag-registry
ISO 639-3 Registration Authority, https://iso639-3.sil.org.
"""

from __future__ import annotations

import re
from functools import lru_cache

import langcodes

#: Registered codes that name no language (undetermined, uncoded, multiple languages, no
#: linguistic content): a score in one of them cannot be a zero-shot language.
NOT_A_LANGUAGE = frozenset({"und", "mis", "mul", "zxx"})

_BARE_CODE = re.compile(r"[a-z]{2,3}")
# The private-use range qaa-qtz is registered but names no language.
_PRIVATE_USE = re.compile(r"q[a-t][a-z]")


@lru_cache(maxsize=4096)  # a results table repeats each language in every run
def is_language_code(code: str) -> bool:
    """Whether ``code`` is an ISO 639 language code: two or three lowercase letters registered as
    a language subtag, and naming a language.

    As in BCP 47, a language with an ISO 639-1 code is registered under it alone (``de``, not
    ``deu``). Region or script subtags (``pt-BR``, ``zh-Hans``) are not language codes, nor are
    upper case spellings (``DE``), ``und`` or private-use codes: scores are matched to targets, to
    mix members and to each other by code, so one language must have one spelling.

    Examples
    --------
    >>> is_language_code("de"), is_language_code("gsw"), is_language_code("tl")
    (True, True, True)
    >>> is_language_code("xx"), is_language_code("deu"), is_language_code("pt-BR")
    (False, False, False)
    >>> is_language_code("und"), is_language_code("qaa")
    (False, False)
    """
    if (not isinstance(code, str) or not _BARE_CODE.fullmatch(code) or code in NOT_A_LANGUAGE
            or _PRIVATE_USE.fullmatch(code)):
        return False
    # normalize=False: keep the code as written ("tl" stays Tagalog; CLDR would rename it "fil").
    return bool(langcodes.Language.get(code, normalize=False).is_valid())


def language_code_problem(code: str) -> str:
    """The message for a string that is not a language code: what codes are accepted, and the
    code the registry gives for what was written, when it reads as a language in another
    spelling (``DE``, ``deu``, ``pt-BR``, ``German``).

    Examples
    --------
    >>> language_code_problem("deu")  # doctest: +NORMALIZE_WHITESPACE
    "unknown language code 'deu' (did you mean 'de'?): expected an ISO 639 code of the IANA
    registry, such as 'de', 'sw' or 'yue' (lowercase, the two-letter code where one exists, no
    region or script)"
    """
    suggestion = closest_language_code(code)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return (f"unknown language code {code!r}{hint}: expected an ISO 639 code of the IANA "
            "registry, such as 'de', 'sw' or 'yue' (lowercase, the two-letter code where one "
            "exists, no region or script)")


@lru_cache(maxsize=1024)  # asked once per bad row of a table
def closest_language_code(text: str) -> str | None:
    """The language code the registry reads ``text`` as (a tag with a region or script, another
    case, a three-letter code of a language with a two-letter one, an English language name), or
    ``None`` when it reads none."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        language = langcodes.Language.get(text.strip()).language
    except (ValueError, LookupError):
        language = None
    if language is None:
        try:
            language = langcodes.find(text.strip()).language
        except LookupError:
            return None
    return language if language and language != text and is_language_code(language) else None


def same_language(code: str, other: str) -> bool:
    """Whether two language codes name the same language once normalised by the registry
    (``tl`` and ``fil``)."""
    return langcodes.standardize_tag(code) == langcodes.standardize_tag(other)
