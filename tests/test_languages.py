"""Which strings are language codes (transferstats.languages)."""

from __future__ import annotations

import pytest

from transferstats.languages import closest_language_code, is_language_code, language_code_problem
from transferstats.tasks import TARGET_TASKS, get_task


@pytest.mark.parametrize("code", ["de", "sw", "tl", "yue", "gsw", "kmr", "wo", "zh"])
def test_iso_639_codes_are_language_codes(code):
    assert is_language_code(code)


@pytest.mark.parametrize("code", ["xx", "x000", "deu", "DE", "pt-BR", "zh-Hans", "und", "mul",
                                  "", "english", "e1"])
def test_other_strings_are_not(code):
    assert not is_language_code(code)


def test_every_xtreme_language_is_a_language_code():
    for target in TARGET_TASKS:
        assert all(is_language_code(code) for code in get_task(target).languages), target


@pytest.mark.parametrize(("written", "code"), [("deu", "de"), ("DE", "de"), ("pt-BR", "pt"),
                                               ("zh-Hans", "zh"), ("English", "en"),
                                               ("xx", None), ("", None), ("de", None)])
def test_the_closest_code_is_the_registrys_reading(written, code):
    assert closest_language_code(written) == code


def test_an_unknown_code_says_what_codes_are_taken_and_the_closest():
    assert language_code_problem("ger") == (
        "unknown language code 'ger' (did you mean 'de'?): expected an ISO 639 code of the IANA "
        "registry, such as 'de', 'sw' or 'yue' (lowercase, the two-letter code where one exists, "
        "no region or script)")
    assert "did you mean" not in language_code_problem("xx")
