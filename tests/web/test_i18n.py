"""French and English are both complete: every string of the workspace is in the catalogue,
translated into French with the same placeholders, and the compiled catalogue is current."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import allo
from allo.web.i18n import LOCALES

SOURCE = Path(allo.__file__).parent
METHODS = [("**.py", "python"), ("web/templates/**.html", "jinja2")]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "gettext_in": (2,)}
PLACEHOLDER = re.compile(r"%\(\w+\)s|\{\}")


def source_strings() -> set[str]:
    found = extract_from_dir(
        SOURCE,
        METHODS,
        keywords=KEYWORDS,
        options_map={"web/templates/**.html": {"extensions": "jinja2.ext.i18n"}},
    )
    return {message if isinstance(message, str) else message[0] for _, _, message, _, _ in found}


def french_catalogue() -> dict[str, str]:
    with (LOCALES / "fr" / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return {str(m.id): str(m.string) for m in read_po(po) if m.id}


def test_every_string_of_the_workspace_has_a_french_translation_with_its_placeholders() -> None:
    strings = source_strings()
    french = french_catalogue()
    assert len(strings) > 100
    untranslated = sorted(s for s in strings if not french.get(s))
    assert untranslated == []
    for english, translated in french.items():
        assert sorted(PLACEHOLDER.findall(english)) == sorted(PLACEHOLDER.findall(translated)), (
            english
        )


def test_the_catalogues_hold_no_string_the_code_no_longer_uses() -> None:
    assert sorted(set(french_catalogue()) - source_strings()) == []


def test_the_compiled_catalogue_is_the_french_one() -> None:
    compiled = gettext.translation("messages", LOCALES, ["fr"])
    for english, translated in french_catalogue().items():
        assert compiled.gettext(english) == translated, english
