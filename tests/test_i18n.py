"""The UI's words: every key in both languages, no key defined by two catalogs, nothing left in English in
the Chinese catalog by accident (a Chinese string holds at least one CJK character or is language-neutral)."""

from __future__ import annotations

import importlib
import pkgutil
import re

from formwork.ui import i18n, strings

CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")
NEUTRAL = re.compile(r"^[\s\d{}\[\]()+\-−–—·:;.,/%#…|<>=≤≥≠×*?!'\"_a-z]*$")


def _catalogs() -> dict[str, dict[str, dict[str, str]]]:
    found = {"i18n": {loc: dict(t) for loc, t in importlib.import_module("formwork.ui.i18n").STRINGS.items()}}
    for mod in pkgutil.iter_modules(strings.__path__):
        found[mod.name] = importlib.import_module(f"{strings.__name__}.{mod.name}").STRINGS
    return found


def test_every_catalog_has_both_languages_with_the_same_keys() -> None:
    for name, catalog in _catalogs().items():
        if name == "i18n":
            continue
        assert set(catalog) == set(i18n.LOCALES), name
        assert set(catalog["en"]) == set(catalog["zh-CN"]), f"{name}: {set(catalog['en']) ^ set(catalog['zh-CN'])}"


def test_no_key_is_defined_twice() -> None:
    assert not i18n.CONFLICTS, f"keys defined again by an area catalog: {i18n.CONFLICTS}"


def test_the_merged_table_has_every_key_in_both_languages() -> None:
    assert set(i18n.STRINGS["en"]) == set(i18n.STRINGS["zh-CN"]), set(i18n.STRINGS["en"]) ^ set(i18n.STRINGS["zh-CN"])


def test_chinese_strings_are_chinese() -> None:
    english = [k for k, v in i18n.STRINGS["zh-CN"].items()
               if not CJK.search(v) and not NEUTRAL.match(v.lower()) and k not in {"app_name"}]
    assert not english, f"zh-CN strings without Chinese: {english}"
