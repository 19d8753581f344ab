"""Language codes: which strings name a real language, checked against the IANA subtag registry.

Mixes of kind ``language`` (multi-source fine-tuning, multilingual instruction tuning) list their
members by ISO 639 code. ``langcodes`` (with its ``language_data`` tables) carries the IANA
Language Subtag Registry, which holds every ISO 639-1 code and the ISO 639-2/3 codes that have
no two-letter form, so no registration is needed and a typo is caught.

References
----------
IANA Language Subtag Registry, https://www.iana.org/assignments/language-subtag-registry
(BCP 47, RFC 5646, section 2.2.1: primary language subtags are ISO 639 codes).
"""

from __future__ import annotations

import re

import langcodes

# A bare primary language subtag: two or three lowercase letters (ISO 639-1, -2 or -3).
_LANGUAGE_SUBTAG = re.compile(r"^[a-z]{2,3}$")
# ``und`` (undetermined) and the private-use range qaa-qtz are registered but name no language.
_NOT_A_LANGUAGE = re.compile(r"^(und|q[a-t][a-z])$")


def is_language_code(code: str) -> bool:
    """Whether ``code`` is an ISO 639 language code (``de``, ``sw``, ``yue``) that the IANA
    registry knows.

    Only a bare language is accepted: no region or script (``en-US`` is not a language code),
    lowercase as in XTREME and the registry, and not ``und`` or a private-use code.

    Examples
    --------
    >>> is_language_code("sw"), is_language_code("yue"), is_language_code("xx")
    (True, True, False)
    """
    if not isinstance(code, str) or not _LANGUAGE_SUBTAG.match(code) or _NOT_A_LANGUAGE.match(code):
        return False
    return langcodes.Language.get(code).is_valid()


def language_code_problem(code: str) -> str:
    """The message for a mix member that is not a language code."""
    return (f"unknown language code {code!r}: expected an ISO 639 code of the IANA registry, "
            "such as 'de', 'sw' or 'yue' (no region or script)")


def same_language(code: str, other: str) -> bool:
    """Whether two language codes name the same language once normalised by the registry
    (``deu`` and ``de``; ``tl`` and ``fil``)."""
    return langcodes.standardize_tag(code) == langcodes.standardize_tag(other)
