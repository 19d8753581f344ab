"""Which strings are language codes (transferstats.languages)."""

from __future__ import annotations

import pytest

from transferstats.languages import is_language_code
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
